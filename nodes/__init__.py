"""ComfyUI nodes: thin adapters from ComfyUI types to ``qinsight_sdk`` calls (none registered yet)."""
