"""Images the tests generate themselves."""

import numpy as np
from PIL import Image


def noise_image(seed: int, width: int = 64, height: int = 48) -> Image.Image:
    """Seeded RGB noise: different seeds give different images, so model answers differ too."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


def grey(value: int, size: tuple[int, int] = (56, 56)) -> Image.Image:
    """A flat grey image: its brightness is what scripted judges read."""
    return Image.new("RGB", size, (value, value, value))


def write_video(path, frames, fps=24, codec="libx264", pix_fmt="yuv420p", pts=None, options=None):
    """Encode uint8 frames (T, H, W, 3) with PyAV, as ComfyUI's own tests write videos. ``pts``: each
    frame's timestamp in milliseconds, for a variable frame rate; ``options``: the muxer's."""
    from fractions import Fraction

    import av

    with av.open(str(path), "w", options=options or {}) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        if pts is not None:
            stream.time_base = Fraction(1, 1000)
        for k, pixels in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")
            if pts is not None:
                frame.pts, frame.time_base = pts[k], Fraction(1, 1000)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def moving_frames(count, height=48, width=64, seed=0):
    """Frames that differ from each other (a textured gradient drifting), so frame choice shows."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 200, (height, width, 3), dtype=np.int16)
    return np.stack([np.clip(base + 2 * k, 0, 255).astype(np.uint8) for k in range(count)])
