"""The editor's JSON routes on ComfyUI's server (GET only, read-only): the panel's block tables and presets,
a listed model's family, and the merge-history browser. Registered once when ComfyUI loads the pack; the
answers themselves come from `web_api`, which needs no server."""
from __future__ import annotations

import asyncio
import logging

from . import web_api
from ._engine import merge_core

PREFIX = "/supermerger"
_registered = False


def _json(data, status: int = 200):
    from aiohttp import web

    return web.json_response(data, status=status)


def _handler(answer):
    """A route answering `answer(query)` off the event loop; refusals become {"error": …} with their status."""
    async def handle(request):
        query = dict(request.rel_url.query)
        try:
            return _json(await asyncio.to_thread(answer, query))
        except web_api.ApiError as e:
            return _json({"error": e.message}, e.status)
        except Exception:  # noqa: BLE001 — the browser gets one line, the log the traceback
            logging.exception("SuperMerger: %s failed", request.path)
            return _json({"error": "internal error (see the ComfyUI log)"}, 500)

    return handle


def register() -> None:
    """Add the routes to ComfyUI's server (before it starts serving; a second call does nothing)."""
    global _registered
    if _registered:
        return
    import folder_paths
    from server import PromptServer

    from . import checkpoints

    reader = web_api.HistoryReader(checkpoints.history)

    def family(query):
        folder, name = web_api.listed_name(query, folder_paths.get_filename_list)
        return web_api.model_family(folder_paths.get_full_path(folder, name), name)

    answers = {
        "/editor": lambda query: merge_core.editor.editor_data(),
        "/family": family,
        "/history": lambda query: web_api.history_page(reader.entries(), query),
        "/history/entry": lambda query: web_api.history_entry(reader.entries(), query),
        "/history/weights": lambda query: web_api.block_weight_series(reader.entries(), query),
    }
    routes = PromptServer.instance.routes
    for path, answer in answers.items():
        routes.get(PREFIX + path)(_handler(answer))
    _registered = True
