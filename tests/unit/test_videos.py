"""Video inputs (qinsight_sdk.io.videos): every form a user or a framework passes, read to the frames the
judge sees; files streamed; each broken video that item's error, never the batch's."""

import io
import os
from fractions import Fraction

import numpy as np
import pytest
import torch
from PIL import Image
from samples import moving_frames, write_video

from qinsight_sdk.errors import ImageInputError
from qinsight_sdk.io import videos
from qinsight_sdk.io.video_sampling import frame_indices, frame_size, resize_frames
from qinsight_sdk.io.videos import Video, VideoClip, load_video, split_videos

FRAMES = moving_frames(48, seed=3)  # 48 frames of 48x64 at 24 fps: 4 frames of 280x392 are judged
WIDE = np.stack([np.full((2, 1000, 3), 60 * k, np.uint8) for k in range(3)])  # 3 frames, 500 times wider than tall


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    made = {
        "mp4": write_video(folder / "h264.mp4", FRAMES),
        "mpeg4": write_video(folder / "mpeg4.mp4", FRAMES, codec="mpeg4"),
        "webm": write_video(folder / "vp9.webm", FRAMES, codec="libvpx-vp9"),
        "mkv": write_video(folder / "ffv1.mkv", FRAMES, codec="ffv1", pix_fmt="yuv444p"),
    }
    images = [Image.fromarray(f) for f in FRAMES[:12]]
    for kind, name in (("gif", "anim.gif"), ("apng", "anim.png"), ("webp", "anim.webp")):
        images[0].save(folder / name, save_all=True, append_images=images[1:], duration=100, loop=0, lossless=True)
        made[kind] = folder / name
    return made


def expected_clip(frames, fps):
    """The reference: indices and size by the rules, then the resize, on the decoded frames."""
    from qinsight_sdk.io.video_sampling import frame_count

    indices = frame_indices(len(frames), frame_count(len(frames), fps))
    chosen = np.stack([frames[i] for i in indices])
    return resize_frames(chosen, frame_size(*chosen.shape[1:3])), indices


def decode_all(path):
    import av

    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


@pytest.mark.parametrize("kind", ["mp4", "mpeg4", "webm", "mkv"])
def test_a_file_gives_the_sampled_frames_of_its_decoded_video(files, kind):
    clip = load_video(files[kind])
    decoded = decode_all(files[kind])
    frames, indices = expected_clip(decoded, 24.0)
    assert (clip.total_frames, clip.fps, clip.indices) == (48, 24.0, (0, 16, 31, 47))
    assert list(clip.indices) == indices and clip.frames.dtype == np.uint8
    assert np.array_equal(clip.frames, frames)
    assert clip.frames.shape == (4, 280, 392, 3) and clip.tokens == 2 * 10 * 14


@pytest.mark.parametrize("kind", ["gif", "apng", "webp"])
def test_animations_are_read_with_their_frame_timing(files, kind):
    clip = load_video(files[kind])
    assert (clip.total_frames, clip.fps) == (12, 10.0)  # 100 ms per frame
    assert clip.indices == (0, 4, 7, 11)  # 1.2 s at 2 fps: 2.4 frames, 4 at least
    if kind != "gif":  # lossless: the frames themselves (a GIF's palette changes them)
        frames, _ = expected_clip(FRAMES[:12], 10.0)
        assert np.abs(clip.frames.astype(int) - frames).max() <= 1


def test_bytes_and_paths_give_the_same_clip(files):
    by_path = load_video(files["webm"])
    by_bytes = load_video(files["webm"].read_bytes())
    by_str = load_video(str(files["webm"]))
    assert np.array_equal(by_path.frames, by_bytes.frames) and np.array_equal(by_path.frames, by_str.frames)


def test_every_in_memory_form_gives_the_same_frames():
    """A list of PIL frames, of arrays, THWC uint8, TCHW float in 0..1 (tensor and array), and Video with
    the rate: the same clip for the same frames."""
    expected, _ = expected_clip(FRAMES, 24.0)
    as_float = torch.from_numpy(FRAMES).permute(0, 3, 1, 2).float() / 255
    forms = [
        Video([Image.fromarray(f) for f in FRAMES], fps=24),
        Video(list(FRAMES), fps=24),
        Video(FRAMES, fps=24),
        Video(torch.from_numpy(FRAMES), fps=24),
        Video(as_float, fps=24.0),
        Video(as_float.numpy().transpose(0, 2, 3, 1), fps=24),
        Video(list(as_float), fps=Fraction(24, 1)),
    ]
    for form in forms:
        clip = load_video(form)
        assert np.array_equal(clip.frames, expected), type(form.frames)
        assert clip.indices == (0, 16, 31, 47) and clip.total_frames == 48


def test_frames_without_a_rate_count_as_sampled_at_two_per_second():
    clip = load_video(FRAMES[:10])
    assert (clip.fps, clip.indices) == (2.0, tuple(range(10)))
    assert load_video(list(FRAMES[:40])).indices == tuple(frame_indices(40, 16))


def test_split_videos_tells_one_video_from_many(files):
    assert split_videos(files["mp4"]) == ([files["mp4"]], True)
    one, single = split_videos([Image.fromarray(f) for f in FRAMES[:4]])
    assert single and len(one) == 1 and len(one[0]) == 4
    many, single = split_videos([files["mp4"], files["webm"]])
    assert not single and many == [files["mp4"], files["webm"]]
    batch = torch.zeros(3, 4, 3, 28, 28)  # (B, T, C, H, W), as Flow-GRPO passes videos
    parts, single = split_videos(batch)
    assert not single and len(parts) == 3 and parts[0].shape == (4, 3, 28, 28)
    assert split_videos(FRAMES) == ([FRAMES], True)
    assert split_videos(Video(FRAMES))[1]


def test_a_clip_s_key_follows_its_frames():
    a, b = load_video(FRAMES[:8]), load_video(FRAMES[:8].copy())
    assert a.key == b.key and len(a.key) == 64
    assert load_video(FRAMES[1:9]).key != a.key


def test_memory_does_not_hold_the_whole_video(files, monkeypatch):
    """Only the sampled frames are converted to RGB arrays: the decoder's frames are dropped as it goes."""
    converted = []
    original = videos._decoded_frames

    def counting(container, stream, indices, total, name):
        import av

        real = av.VideoFrame.to_ndarray
        monkeypatch.setattr(av.VideoFrame, "to_ndarray", lambda self, **kw: converted.append(1) or real(self, **kw))
        return original(container, stream, indices, total, name)

    monkeypatch.setattr(videos, "_decoded_frames", counting)
    load_video(files["mp4"])
    assert len(converted) == 4


# -- broken videos: each is its own error, with a message saying what is wrong -----------------------------------


def _broken(folder, files):
    """At least 12 kinds of broken video, each with a part of the message it must give."""
    made = {}
    made["missing file"] = (folder / "gone.mp4", "file not found")
    made["directory"] = (folder, "is a directory")
    (folder / "empty.mp4").write_bytes(b"")
    made["empty file"] = (folder / "empty.mp4", "not a readable video")
    (folder / "text.mp4").write_bytes(b"this is not a video at all" * 10)
    made["not a video"] = (folder / "text.mp4", "not a readable video")
    made["empty bytes"] = (b"", "empty bytes hold no video")
    data = files["mp4"].read_bytes()
    (folder / "half.mp4").write_bytes(data[: len(data) // 2])  # the index (moov) is at the end: cut off
    made["truncated mp4"] = (folder / "half.mp4", "not a readable video")
    whole = write_video(folder / "faststart.mp4", FRAMES, options={"movflags": "+faststart"}).read_bytes()
    (folder / "cut.mp4").write_bytes(whole[: len(whole) * 3 // 5])  # the index first, the frames cut off
    made["truncated mp4, index first"] = (folder / "cut.mp4", "not a readable video")
    webm = files["webm"].read_bytes()
    (folder / "half.webm").write_bytes(webm[: len(webm) // 3])
    made["truncated webm"] = (folder / "half.webm", "has 0 frame(s)")
    made["audio only"] = (_audio_only(folder / "audio.m4a"), "has no video stream")
    made["one frame"] = (write_video(folder / "one.mp4", FRAMES[:1]), "1 frame(s): a video needs at least 2")
    Image.fromarray(FRAMES[0]).save(folder / "still.png")
    made["a still image file"] = (folder / "still.png", "1 frame(s): a video needs at least 2")
    made["NaN frames"] = (torch.full((8, 32, 32, 3), float("nan")), "NaN or infinite")
    made["frames out of range"] = (np.full((8, 32, 32, 3), 7.5, dtype=np.float32), "expected 0..1")
    made["one image"] = (np.zeros((32, 32, 3), dtype=np.uint8), "is one image, not a video")
    made["frames of different sizes"] = (
        [FRAMES[0], FRAMES[1][:, :40]],
        "its frames differ in size ((48, 40, 3), (48, 64, 3))",
    )
    made["PIL frames of different sizes"] = (
        [Image.new("RGB", (64, 48)), Image.new("RGB", (66, 48))],
        "its frames differ in size ((48, 64), (48, 66))",  # (height, width), as arrays give them
    )
    made["not a frame in the list"] = (["x", FRAMES[0]], "frame 0 of the list of 2 frames is not a frame")
    made["Video of something else"] = (Video(object(), fps=8), "a video's frames are a list or a (T, H, W, C)")
    made["NaN frames with a rate"] = (Video(np.full((8, 8, 8, 3), np.nan), fps=4), "frame 0 of the Video's frames")
    made["one frame with a rate"] = (Video(FRAMES[:1], fps=4), "the Video's frames has 1 frame(s)")
    made["a frame 500 times wider than tall"] = (Video(np.zeros((4, 2, 1000, 3), np.uint8)), "aspect ratio")
    made["one frame in a GIF"] = (_gif(folder / "one.gif", FRAMES[:1], 100), "1 frame(s): a video needs at least 2")
    made["a video 500 times wider than tall"] = (
        write_video(folder / "thin.mkv", np.repeat(WIDE, 4, axis=0), codec="ffv1", pix_fmt="yuv444p"),
        "aspect ratio",
    )
    made["a GIF 500 times wider than tall"] = (_gif(folder / "wide.gif", WIDE, 100), "aspect ratio")
    made["an empty array"] = (np.zeros((0, 32, 32, 3), dtype=np.uint8), "is empty")
    made["a number"] = (42, "unsupported video input of type int")
    wide = np.zeros((2, 16, 8200, 3), dtype=np.uint8)
    made["a frame wider than 8192"] = (
        write_video(folder / "wide.mkv", wide, codec="ffv1", pix_fmt="yuv444p"),
        "has frames of 8200x16, larger than 8192 pixels on a side",
    )
    if hasattr(os, "mkfifo"):
        os.mkfifo(folder / "pipe.mp4")
        made["a FIFO"] = (folder / "pipe.mp4", "not a regular file")
    return made


def _gif(path, frames, duration):
    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=duration, loop=0)
    return path


def _audio_only(path):
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        samples = np.zeros((1, 1024), dtype=np.float32)
        for _ in range(4):
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate = 16000
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def test_each_broken_video_is_its_own_error(tmp_path, files):
    broken = _broken(tmp_path, files)
    assert len(broken) >= 12
    for kind, (source, message) in broken.items():
        with pytest.raises(ImageInputError) as raised:
            load_video(source)
        assert message in str(raised.value), (kind, str(raised.value))
        named = videos.described(source) in str(raised.value) or kind in ("empty bytes", "a number")
        assert named and "None" not in str(raised.value), (kind, str(raised.value))  # names its input


def test_a_header_announcing_too_many_frames_is_refused_before_decoding(files, monkeypatch):
    """The limit (36,000 frames, far below a 100,000-frame header) read from the header (mp4) and from
    counting packets (webm, whose header has no count): shown here with the limit lowered to 40."""
    assert videos.MAX_FRAMES < 100_000
    monkeypatch.setattr(videos, "MAX_FRAMES", 40)
    monkeypatch.setattr(videos, "_decoded_frames", lambda *a: pytest.fail("decoded a refused video"))
    with pytest.raises(ImageInputError, match="announces 48 frames, more than the 40 a video may have"):
        load_video(files["mp4"])
    with pytest.raises(ImageInputError, match="has more than 40 frames"):
        load_video(files["webm"])


def test_a_variable_frame_rate_video_is_judged_at_its_average_rate(tmp_path):
    """Phones record at a variable rate: frames are chosen by index at the average rate, as the family's
    decoder (decord) chooses them."""
    stamps = [0, 30, 90, 100, 180, 250, 260, 400, 410, 500, 560, 700]
    path = write_video(tmp_path / "vfr.mkv", FRAMES[:12], codec="ffv1", pix_fmt="yuv444p", pts=stamps)
    clip = load_video(path)
    assert clip.total_frames == 12 and len(clip.frames) >= 2
    assert 10 < clip.fps < 30


def test_a_truncated_file_names_how_far_it_decodes(files, tmp_path, monkeypatch):
    """A header promising more frames than decode: the frames it was asked for are missing."""
    monkeypatch.setattr(videos.sampling, "frame_indices", lambda total, count: [0, 10, 60])
    with pytest.raises(ImageInputError, match=r"is truncated or corrupt: only 48 of its 48 frames decode \(frame 60 "):
        load_video(files["mkv"])


def test_without_pyav_a_file_says_which_extra_to_install(files, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_av(name, *args, **kwargs):
        if name == "av":
            raise ImportError("No module named 'av'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_av)
    with pytest.raises(
        ImportError,
        match=r"^reading video files needs PyAV: pip install 'qinsight\[video\]' \(or pass decoded frames\)$",
    ):
        load_video(files["mp4"])


def test_any_other_failure_is_this_input_s_error(monkeypatch, files):
    monkeypatch.setattr(videos, "_from_container", lambda source, name: 1 / 0)
    with pytest.raises(ImageInputError, match=r"h264.mp4 cannot be read as a video \(ZeroDivisionError"):
        load_video(files["mp4"])


def test_inputs_are_named_in_errors():
    assert videos.described("a.mp4") == "a.mp4"
    assert videos.described(b"abc") == "the video bytes (3 bytes)"
    assert videos.described(Video([])) == "the Video's frames"
    assert videos.described([1, 2]) == "the list of 2 frames"
    assert videos.described(np.zeros((2, 3))) == "the array of shape (2, 3)"
    assert videos.described(torch.zeros(1, 2)) == "the tensor of shape (1, 2)"
    assert videos.described(io.BytesIO()) == "the BytesIO"


def test_clip_geometry():
    clip = VideoClip(np.zeros((6, 56, 84, 3), dtype=np.uint8), 2.0, 6, (0, 1, 2, 3, 4, 5))
    assert (clip.height, clip.width, clip.tokens) == (56, 84, 3 * 2 * 3)


def _with_audio(path, frames, fps=24):
    """An MKV of FFV1 frames with an AAC track muxed between them, so that demuxing or decoding every
    stream would see audio packets and frames too."""
    import av

    with av.open(str(path), "w") as container:
        video = container.add_stream("ffv1", rate=fps)
        video.width, video.height, video.pix_fmt = frames.shape[2], frames.shape[1], "yuv444p"
        audio = container.add_stream("aac", rate=16000)
        silence = np.zeros((1, 1024), dtype=np.float32)
        for pixels in frames:
            for packet in video.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")):
                container.mux(packet)
            sound = av.AudioFrame.from_ndarray(silence, format="fltp", layout="mono")
            sound.sample_rate = 16000
            for packet in audio.encode(sound):
                container.mux(packet)
        for stream in (video, audio):
            for packet in stream.encode():
                container.mux(packet)
    return path


def test_only_the_video_stream_is_counted_and_decoded_beside_an_audio_track(tmp_path):
    path = _with_audio(tmp_path / "with-audio.mkv", FRAMES[:24])
    clip = load_video(path)
    frames, indices = expected_clip(decode_all(path), 24.0)
    assert (clip.total_frames, clip.fps, list(clip.indices)) == (24, 24.0, indices)
    assert np.array_equal(clip.frames, frames)


def test_packets_give_the_count_and_span_where_the_header_gives_no_rate(tmp_path, monkeypatch):
    """Without a rate in the header, the frames per second are the count over the span of the packets'
    timestamps (first to last, plus the last frame's share)."""
    import av

    stamps = [0, 30, 90, 100, 180, 250, 260, 400, 410, 500, 560, 700]
    path = write_video(tmp_path / "vfr.mkv", FRAMES[:12], codec="ffv1", pix_fmt="yuv444p", pts=stamps)
    with av.open(str(path)) as container:
        times = [float(p.pts * p.time_base) for p in container.demux(video=0) if p.size]
    span = (max(times) - min(times)) * 12 / 11
    with av.open(str(path)) as container:
        assert videos._count_packets(container, container.streams.video[0], "vfr.mkv") == (12, pytest.approx(span))
    monkeypatch.setattr(videos, "_rate", lambda rate: None)
    clip = load_video(path)
    assert clip.fps == pytest.approx(12 / span) and clip.total_frames == 12 and span < 1.0
    with av.open(str(_with_audio(tmp_path / "a.mkv", FRAMES[:6]))) as container:
        assert videos._count_packets(container, container.streams.video[0], "a.mkv")[0] == 6
    write_video(tmp_path / "two.mkv", FRAMES[:2], codec="ffv1", pix_fmt="yuv444p", pts=[0, 500])
    assert load_video(tmp_path / "two.mkv").fps == pytest.approx(2.0)  # 2 frames over 0.5 s, plus one share
    write_video(tmp_path / "one.mkv", FRAMES[:1], codec="ffv1", pix_fmt="yuv444p", pts=[0])
    with pytest.raises(ImageInputError, match=r"^\S+one.mkv: neither its header nor its timestamps give a frame rate$"):
        load_video(tmp_path / "one.mkv")


def test_a_rate_is_a_positive_finite_number_or_none():
    assert videos._rate(Fraction(1, 2)) == 0.5 and videos._rate(Fraction(24, 1)) == 24.0
    assert videos._rate(None) is None and videos._rate(Fraction(0, 1)) is None
    assert videos._rate(-1.0) is None and videos._rate(float("inf")) is None and videos._rate(float("nan")) is None


def test_limits_are_inclusive_and_counting_stops_past_them(files, monkeypatch):
    monkeypatch.setattr(videos, "MAX_FRAMES", 48)  # exactly the files' 48 frames: allowed
    monkeypatch.setattr(videos, "MAX_SIDE", 64)  # exactly their width: allowed
    assert load_video(files["mp4"]).total_frames == load_video(files["webm"]).total_frames == 48
    assert videos.check_video_header(files["mp4"], "h264.mp4")


def test_animation_frame_durations_give_their_rate(tmp_path):
    clip = load_video(_gif(tmp_path / "slow.gif", FRAMES[:12], 250))  # 4 frames per second
    assert (clip.total_frames, clip.fps, clip.indices) == (12, 4.0, (0, 2, 4, 7, 9, 11))
    images = [Image.fromarray(f) for f in FRAMES[:8]]
    images[0].save(tmp_path / "fast.png", save_all=True, append_images=images[1:], duration=1)  # 1 ms a frame
    assert load_video(tmp_path / "fast.png").fps == pytest.approx(1000.0)
    images[0].save(tmp_path / "none.png", save_all=True, append_images=images[1:], duration=0)  # browsers: 100 ms
    assert load_video(tmp_path / "none.png").fps == pytest.approx(10.0)


def test_an_avi_is_a_container_not_an_animation_though_it_is_riff(tmp_path):
    path = write_video(tmp_path / "clip.avi", FRAMES[:24], codec="mpeg4")
    assert path.read_bytes()[:4] == b"RIFF"
    assert load_video(path).total_frames == 24


def test_frames_may_be_grey_two_dimensional_arrays():
    grey = [f[..., 0] for f in FRAMES[:8]]
    clip = load_video(Video(grey, fps=4))
    assert clip.frames.shape[0] == 4 and np.array_equal(clip.frames[0, ..., 0], clip.frames[0, ..., 2])


def test_what_counts_as_one_frame():
    assert videos.is_frame(Image.new("RGB", (4, 4))) and videos.is_frame(np.zeros((4, 4, 3)))
    assert videos.is_frame(torch.zeros(3, 4, 4))
    assert (
        not videos.is_frame(np.zeros((2, 4, 4, 3)))
        and not videos.is_frame(Video(FRAMES))
        and not videos.is_frame("a.mp4")
    )
    clip = load_video(FRAMES[:4])
    assert videos.described(clip) == "the video clip" and load_video(clip) is clip


def test_the_door_reads_headers_only_of_videos(files, tmp_path):
    assert videos.check_video_header(files["mp4"].read_bytes(), "bytes") is True
    assert videos.check_video_header(files["webm"], "path") is True  # a path, as the service's allowed folder gives
    assert videos.check_video_header(b"garbage, no container", "junk") is False
    assert videos.check_video_header(_audio_only(tmp_path / "a.m4a").read_bytes(), "audio") is False


def test_paths_that_are_no_file_say_why(tmp_path):
    with pytest.raises(ImageInputError, match="^an empty path names no video file$"):
        load_video("")
    with pytest.raises(
        ImageInputError, match=r"^https://x/a.mp4: file not found \(URLs are not downloaded: save the video first\)$"
    ):
        load_video("https://x/a.mp4")
    with pytest.raises(ImageInputError, match=r"^\S+/gone.mp4: file not found$"):
        load_video(tmp_path / "gone.mp4")
    with pytest.raises(ImageInputError, match=r"^\S+: cannot be read \(File name too long\)$"):
        load_video(tmp_path / ("x" * 300 + ".mp4"))
    with pytest.raises(ImageInputError, match=r"^the video bytes \(5 bytes\): not a readable video"):
        load_video(b"hello")
    unsupported = (
        "unsupported video input of type dict; pass a path, video file bytes, a list of frames, a (T, H, W, C) or "
        "(T, C, H, W) array or tensor, or qinsight_sdk.Video(frames, fps)"
    )
    with pytest.raises(ImageInputError) as raised:
        load_video({})
    assert str(raised.value) == unsupported


def test_tags_that_are_not_utf8_do_not_stop_a_video(tmp_path, files):
    """A container whose title tag holds bytes that are not UTF-8 (cameras and old muxers write them) is read."""
    import av

    with av.open(str(files["mkv"])) as source, av.open(str(tmp_path / "tagged.mkv"), "w") as out:
        out.metadata["title"] = "QQQQQQQQ"
        streams = {s: out.add_stream_from_template(template=s, opaque=True) for s in source.streams.video}
        for packet in source.demux():
            if packet.dts is not None:
                packet.stream = streams[packet.stream]
                out.mux(packet)
    data = (tmp_path / "tagged.mkv").read_bytes()
    assert data.count(b"QQQQQQQQ") == 1
    (tmp_path / "latin.mkv").write_bytes(data.replace(b"QQQQQQQQ", bytes(range(0xF8, 0x100))[::-1]))
    assert load_video(tmp_path / "latin.mkv").total_frames == 48
    assert videos.check_video_header((tmp_path / "latin.mkv").read_bytes(), "latin.mkv")


def test_a_frame_that_changes_size_mid_stream_is_named(files, monkeypatch):
    import av

    real, seen = av.VideoFrame.to_ndarray, []

    def shrinking(self, **options):
        seen.append(1)
        pixels = real(self, **options)
        return pixels[:, :-2] if len(seen) == 2 else pixels

    monkeypatch.setattr(av.VideoFrame, "to_ndarray", shrinking)
    with pytest.raises(ImageInputError, match=r"^\S+ffv1.mkv: frame 16 changes size to 62x48$"):
        load_video(files["mkv"])
