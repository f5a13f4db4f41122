"""SuperMerger for ComfyUI: the pack's entry point (ComfyUI's V3 extension API).

The node classes are imported only when ComfyUI asks for them, so the engine (`merge_core`) and the
ComfyUI-free parts of `nodes/` import and test without ComfyUI.
"""

WEB_DIRECTORY = "./web"


async def comfy_entrypoint():
    from .nodes.extension import SuperMergerExtension

    _register_routes()
    return SuperMergerExtension()


def _register_routes():
    """The editor's JSON routes; without them the nodes still work (the panel then stays off)."""
    import logging

    try:
        from .nodes import routes

        routes.register()
    except Exception:  # noqa: BLE001 — a server without routes must not cost the user the nodes
        logging.exception("SuperMerger: the editor's routes could not be registered")
