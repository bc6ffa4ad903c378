"""Rows saved with images: the PNG chunk beside ComfyUI's, sidecars, keys after a move, and every refusal."""

import io
import json
import math
import os
import stat
import struct
import zlib

import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from samples import noise_image

from qinsight_sdk.errors import QInsightError
from qinsight_sdk.io.image_metadata import METADATA_KEY, MetadataError, embed, read_rows, sidecar_path, write_sidecar
from qinsight_sdk.io.records import key_of, make_row, row_text

SETTINGS = {"model": "m", "mode": "reason"}


def saved_rows(image):
    """The rows a judge would save for ``image``: a score and a degradation."""
    return [
        make_row("score", [image], SETTINGS, {"score": 3.91, "reasoning": "清晰, sharp", "error": None}),
        make_row("degradation", [image], SETTINGS, {"distortion": "noise", "severity": "slight", "error": None}),
    ]


def save_png(path, rows, **chunks):
    info = PngInfo()
    for name, text in chunks.items():
        info.add_text(name, text)
    if rows is not None:
        embed(info, rows)
    noise_image(1, 40, 30).save(path, pnginfo=info)


def test_rows_round_trip_in_a_png_beside_comfyuis_chunks(tmp_path):
    path = tmp_path / "a_00001_.png"
    rows = saved_rows(str(path))
    save_png(path, rows, prompt='{"3": {"class_type": "KSampler"}}', workflow='{"nodes": []}')
    with Image.open(path) as image:
        text = image.text
    assert text["prompt"] == '{"3": {"class_type": "KSampler"}}' and text["workflow"] == '{"nodes": []}'
    assert json.loads(text[METADATA_KEY]) == rows and "清晰" in text[METADATA_KEY]  # UTF-8, not escaped
    assert read_rows(path) == rows
    assert read_rows(str(path), "degradation") == rows[1:]
    assert read_rows(path, task="score") == rows[:1]


def test_the_chunk_is_written_as_the_record_store_writes_rows(tmp_path):
    path = tmp_path / "a.png"
    rows = saved_rows(str(path))
    save_png(path, rows)
    with Image.open(path) as image:
        assert image.text[METADATA_KEY] == "[" + ", ".join(map(row_text, rows)) + "]"


def test_keys_follow_the_file_when_it_moves(tmp_path, monkeypatch):
    written = tmp_path / "out" / "a.png"
    written.parent.mkdir()
    save_png(written, saved_rows(str(written)))
    moved = tmp_path / "kept" / "best.png"
    moved.parent.mkdir()
    os.rename(written, moved)
    monkeypatch.chdir(tmp_path)
    (row,) = read_rows("kept/best.png", "score")
    assert row["image"] == "kept/best.png" and row["key"] == key_of(moved) == str(moved.resolve())
    assert list(row)[:4] == ["task", "key", "image", "settings"] and row["score"] == 3.91


@pytest.mark.parametrize("name, save", [("a.jpg", {"format": "JPEG"}), ("b.png", {})])
def test_images_without_a_chunk_are_read_from_their_sidecar(tmp_path, name, save):
    path = tmp_path / name
    noise_image(2).save(path, **save)
    rows = saved_rows(str(tmp_path / "elsewhere.png"))
    written = write_sidecar(path, rows)
    assert written == sidecar_path(path) == tmp_path / f"{name}.json"
    assert json.loads(written.read_text(encoding="utf-8")) == {"qinsight": rows}
    assert sorted(f.name for f in tmp_path.iterdir()) == sorted([name, f"{name}.json"])  # no temporary file left
    found = read_rows(path, "score")
    assert found == [{**rows[0], "key": key_of(path), "image": str(path)}]


def test_a_sidecar_is_replaced_whole(tmp_path):
    path = tmp_path / "a.jpg"
    noise_image(2).save(path)
    write_sidecar(path, saved_rows(str(path)))
    write_sidecar(path, saved_rows(str(path))[:1])
    assert [row["task"] for row in read_rows(path)] == ["score"]
    assert sorted(f.name for f in tmp_path.iterdir()) == ["a.jpg", "a.jpg.json"]


def test_a_sidecar_is_readable_as_any_new_file_and_a_missing_folder_is_named(tmp_path):
    path = tmp_path / "a.jpg"
    plain = tmp_path / "plain.json"
    plain.write_text("{}")
    mode = stat.S_IMODE(write_sidecar(path, []).stat().st_mode)
    assert mode == stat.S_IMODE(plain.stat().st_mode) and mode & 0o044 == 0o044  # not tempfile's 0600
    with pytest.raises(MetadataError, match=f"^cannot write {tmp_path / 'gone' / 'a.jpg.json'}: No such file"):
        write_sidecar(tmp_path / "gone" / "a.jpg", [])


def test_the_chunk_wins_over_a_sidecar(tmp_path):
    path = tmp_path / "a.png"
    save_png(path, saved_rows(str(path)))
    write_sidecar(path, saved_rows(str(path))[1:])
    assert [row["task"] for row in read_rows(path)] == ["score", "degradation"]


def test_a_chunk_after_the_pixels_is_found_too(tmp_path):
    """PNG allows text chunks after the image data (Pillow writes none there, other tools do)."""
    path = tmp_path / "a.png"
    data = png_bytes()
    text = METADATA_KEY.encode() + b"\0\0\0\0\0" + json.dumps(saved_rows(str(path)), ensure_ascii=False).encode()
    chunk = struct.pack(">I", len(text)) + b"iTXt" + text + struct.pack(">I", zlib.crc32(b"iTXt" + text))
    end = data.rindex(b"IEND") - 4  # the IEND chunk starts with its length
    path.write_bytes(data[:end] + chunk + data[end:])
    with Image.open(path) as image:
        assert METADATA_KEY not in image.info  # not seen before the pixels are read
    assert [row["task"] for row in read_rows(path)] == ["score", "degradation"]


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_number_that_is_not_finite_is_refused(tmp_path, value):
    rows = saved_rows("a.png")
    rows[0]["score"] = value
    with pytest.raises(
        MetadataError,
        match=r"the rows to embed: a row holds a number that is not finite \(NaN or "
        r"infinity\), which strict JSON cannot carry",
    ):
        embed(PngInfo(), rows)
    with pytest.raises(MetadataError, match="a.jpg.json: a row holds a number that is not finite"):
        write_sidecar(tmp_path / "a.jpg", rows)
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("rows", [{"task": "score"}, [{"score": 3}], ["score"], [{"task": 1}]])
def test_what_is_not_a_list_of_rows_is_not_embedded(rows):
    with pytest.raises(MetadataError, match=r"the rows to embed: the qinsight metadata is not a list of rows"):
        embed(PngInfo(), rows)


def png_bytes():
    buffer = io.BytesIO()
    noise_image(1, 200, 200).save(buffer, format="PNG")
    return buffer.getvalue()


def write_chunk(path, text):
    info = PngInfo()
    info.add_itxt(METADATA_KEY, text)
    noise_image(1).save(path, pnginfo=info)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.write_bytes(b"not an image"), "{p}: not a recognised image file"),
        (lambda p: None, "{p}: file not found"),
        (lambda p: p.mkdir(), "{p}: not a regular file (a folder, FIFO or device), not an image file"),
        (lambda p: os.mkfifo(p), "{p}: not a regular file (a folder, FIFO or device), not an image file"),
        (lambda p: p.write_bytes(png_bytes()[:200]), "{p}: cannot be read (image file is truncated"),
        (
            lambda p: noise_image(1).save(p),
            "{p}: no qinsight metadata (no 'qinsight' text chunk, and no sidecar a.png.json)",
        ),
        (
            lambda p: write_chunk(p, '[{"task": "score"'),
            "{p} (its qinsight text chunk): the qinsight metadata is not valid JSON (Expecting",
        ),
        (
            lambda p: write_chunk(p, '[{"task": "score", "score": NaN}]'),
            "{p} (its qinsight text chunk): the qinsight metadata is not valid JSON (NaN is not strict",
        ),
        (
            lambda p: write_chunk(p, '{"task": "score"}'),
            '{p} (its qinsight text chunk): the qinsight metadata is not a list of rows (objects with a "task")',
        ),
        (
            lambda p: write_chunk(p, '[{"score": 3}]'),
            "{p} (its qinsight text chunk): the qinsight metadata is not a list of rows",
        ),
    ],
)
def test_each_unreadable_case_names_the_file_and_why(tmp_path, make, message):
    path = tmp_path / "a.png"
    make(path)
    with pytest.raises(MetadataError) as raised:
        read_rows(path)
    assert str(raised.value).startswith(message.format(p=path)), str(raised.value)
    assert isinstance(raised.value, QInsightError)


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "{s}: the qinsight metadata is not valid JSON ("),
        (
            '{"GeoData": {}}',
            "{p}: no qinsight metadata (no 'qinsight' text chunk, and its sidecar a.jpg.json has no 'qinsight' entry)",
        ),
        (
            '[{"task": "score"}]',
            "{p}: no qinsight metadata (no 'qinsight' text chunk, and its sidecar a.jpg.json has no 'qinsight' entry)",
        ),
        ('{"qinsight": {"task": "score"}}', "{s}: the qinsight metadata is not a list of rows"),
        (b"\xff\xfe", "{s}: cannot be read ("),
    ],
)
def test_a_sidecar_that_is_not_ours_or_broken_is_refused_with_its_name(tmp_path, content, message):
    path = tmp_path / "a.jpg"
    noise_image(1).save(path)
    sidecar = sidecar_path(path)
    sidecar.write_bytes(content if isinstance(content, bytes) else content.encode())
    with pytest.raises(MetadataError) as raised:
        read_rows(path)
    assert str(raised.value).startswith(message.format(p=path, s=sidecar)), str(raised.value)


def test_a_task_the_image_was_not_judged_for_is_an_error(tmp_path):
    path = tmp_path / "a.png"
    save_png(path, saved_rows(str(path))[1:])
    with pytest.raises(
        MetadataError,
        match=f"^{path}: its qinsight metadata holds no score row "
        r"\(only degradation\)$",
    ):
        read_rows(path, "score")
    save_png(path, [])
    assert read_rows(path) == []
    with pytest.raises(MetadataError, match=r"holds no score row \(no rows at all\)$"):
        read_rows(path, "score")


def test_a_file_that_cannot_be_read_says_why_in_words(tmp_path, monkeypatch):
    from pathlib import Path

    from qinsight_sdk.io import image_metadata

    image = tmp_path / "a.png"
    save_png(image, saved_rows(str(image)))
    denied = PermissionError(13, "Permission denied")
    monkeypatch.setattr(image_metadata.Image, "open", lambda *a, **k: (_ for _ in ()).throw(denied))
    with pytest.raises(MetadataError, match=r"a\.png: cannot be read \(Permission denied\)$"):
        read_rows(image)
    jpeg = tmp_path / "b.jpg"
    jpeg.write_bytes(b"")
    monkeypatch.setattr(image_metadata, "_chunk", lambda path: None)
    sidecar_path(jpeg).write_text("{}")
    monkeypatch.setattr(Path, "read_text", lambda *a, **k: (_ for _ in ()).throw(denied))
    with pytest.raises(MetadataError, match=r"b\.jpg\.json: cannot be read \(Permission denied\)$"):
        read_rows(jpeg)


def test_asking_for_a_task_the_file_lacks_names_the_tasks_it_holds(tmp_path):
    image = tmp_path / "a.png"
    save_png(image, saved_rows(str(image)))
    with pytest.raises(MetadataError, match=r"holds no comparison row \(only degradation, score\)$"):
        read_rows(image, "comparison")


def test_an_image_too_large_to_open_says_so(tmp_path, monkeypatch):
    from qinsight_sdk.io import image_metadata

    image = tmp_path / "a.png"
    save_png(image, saved_rows(str(image)))
    bomb = image_metadata.Image.DecompressionBombError("Image size (2000000000 pixels) exceeds limit")
    monkeypatch.setattr(image_metadata.Image, "open", lambda *a, **k: (_ for _ in ()).throw(bomb))
    with pytest.raises(MetadataError, match=r"a\.png: cannot be read \(Image size \(2000000000 pixels\)"):
        read_rows(image)


def test_rows_tagged_in_a_video_container_are_read_back(tmp_path):
    """Save Video with Quality's MP4 (tags written as ComfyUI's save_to writes them: each value as JSON,
    with movflags=use_metadata_tags) and a WebM; a file named like a video that is none is an error."""
    import av
    from samples import moving_frames, write_video

    from qinsight_sdk.io.image_metadata import video_tags

    rows = [make_row("score", ["clip.mp4"], {"model": "m"}, {"score": 61.5, "reasoning": "étoile"})]
    tags = video_tags(rows)
    assert tags == {METADATA_KEY: json.loads(json.dumps(tags[METADATA_KEY]))}  # plain objects
    for name, codec, options in (
        ("clip.mp4", "libx264", {"movflags": "use_metadata_tags"}),
        ("clip.webm", "libvpx-vp9", {}),
    ):
        path = write_video(tmp_path / name, moving_frames(4, 32, 32), codec=codec, options=options)
        with av.open(str(path)) as source, av.open(str(tmp_path / f"tagged-{name}"), "w", options=options) as out:
            out.metadata.update({key: json.dumps(value) for key, value in tags.items()})
            streams = {s: out.add_stream_from_template(template=s, opaque=True) for s in source.streams.video}
            for packet in source.demux():
                if packet.dts is not None:
                    packet.stream = streams[packet.stream]
                    out.mux(packet)
        (row,) = read_rows(tmp_path / f"tagged-{name}", "score")
        assert row["score"] == 61.5 and row["reasoning"] == "étoile" and row["image"].endswith(f"tagged-{name}")
        with pytest.raises(MetadataError, match="no qinsight metadata"):
            read_rows(path)  # a video without the tag (and no sidecar)
    (tmp_path / "fake.mp4").write_bytes(b"not a video at all")
    with pytest.raises(MetadataError, match="fake.mp4: not a recognised image or video file"):
        read_rows(tmp_path / "fake.mp4")
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(MetadataError, match=r"notes.txt: not a recognised image file$"):
        read_rows(tmp_path / "notes.txt")
    with pytest.raises(MetadataError, match="not finite"):
        video_tags([make_row("score", ["clip.mp4"], None, {"score": float("nan")})])
