"""ComfyUI nodes: ``v3`` holds the node classes (imported only inside ComfyUI); ``adapters`` the
conversions they share, which need no ComfyUI; ``memory`` the judge's place in ComfyUI's model management;
``sdk`` which ``qinsight_sdk`` they all import (one per process, bound here before any of them loads)."""

from .sdk import bind_sdk

bind_sdk()
