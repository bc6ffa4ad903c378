"""ComfyUI entry point of the qinsight node pack (V3 schema).

ComfyUI imports this file when the repository sits in ``custom_nodes/``. It stays cheap to import: the
nodes, and with them torch and transformers, load only when ComfyUI asks for the extension.
"""


async def comfy_entrypoint():
    from .nodes.v3 import QInsightExtension

    return QInsightExtension()
