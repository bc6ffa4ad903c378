"""ComfyUI nodes: ``v3`` holds the node classes (imported only inside ComfyUI); ``adapters`` the
conversions they share, which need no ComfyUI; ``memory`` the judge's place in ComfyUI's model management."""
