"""ComfyUI entry point of the qinsight node pack.

ComfyUI imports this file when the repository sits in ``custom_nodes/``. It must stay cheap to import:
the SDK (torch, transformers) loads only when a node runs. The nodes themselves live in ``nodes/``.
"""

NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}
