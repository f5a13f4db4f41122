"""SuperMerger for ComfyUI: the pack's entry point (ComfyUI's V3 extension API).

The node classes are imported only when ComfyUI asks for them, so the engine (`merge_core`) and the
ComfyUI-free parts of `nodes/` import and test without ComfyUI.
"""

WEB_DIRECTORY = "./web"


async def comfy_entrypoint():
    from .nodes.extension import SuperMergerExtension

    return SuperMergerExtension()
