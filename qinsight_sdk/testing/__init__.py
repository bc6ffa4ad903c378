"""Tools for testing code built on qinsight, offline: tiny checkpoints of each model family in their
released layouts, the tiny judges trained to answer, a scripted backend, and sample images.

    python -m qinsight_sdk.testing DIR [--sample-images IMAGE_DIR] [--trained [--video]] [--rali]

- :func:`build_tiny_checkpoint`: a random-weight Qwen2.5-VL checkpoint (:mod:`qinsight_sdk.backends.qwen2_5_vl.tiny`);
- :func:`build_tiny_judge`, :func:`cached_tiny_judge`: it trained to answer in Q-Insight's format about
  brightness (:mod:`qinsight_sdk.backends.qwen2_5_vl.tiny_judge`, with :func:`brightness_image`);
- :func:`build_tiny_video_judge`, :func:`cached_tiny_video_judge`: it trained to answer VQ-Insight's video
  tasks about synthetic videos (:mod:`qinsight_sdk.backends.qwen2_5_vl.tiny_video_judge`, with
  :func:`video_frames`);
- :func:`build_tiny_rali`: a tiny RALI (:mod:`qinsight_sdk.backends.rali.tiny`);
- :class:`ScriptedBackend`: answers you script, no model; :func:`write_sample_images`.
"""

from ..backends.qwen2_5_vl.tiny import CHAT_TEMPLATE, PREPROCESSOR_CONFIG, build_tiny_checkpoint, tiny_config
from ..backends.qwen2_5_vl.tiny_judge import brightness_image, build_tiny_judge, cached_tiny_judge, rating_of
from ..backends.qwen2_5_vl.tiny_video_judge import (
    build_tiny_video_judge,
    cached_tiny_video_judge,
    natural_score,
    video_frames,
)
from ..backends.rali.tiny import build_tiny_rali
from .samples import write_sample_images
from .scripted import ScriptedBackend

__all__ = [
    "CHAT_TEMPLATE",
    "PREPROCESSOR_CONFIG",
    "ScriptedBackend",
    "brightness_image",
    "build_tiny_checkpoint",
    "build_tiny_judge",
    "build_tiny_rali",
    "build_tiny_video_judge",
    "cached_tiny_judge",
    "cached_tiny_video_judge",
    "natural_score",
    "rating_of",
    "tiny_config",
    "video_frames",
    "write_sample_images",
]
