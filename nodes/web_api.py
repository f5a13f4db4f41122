"""What the editor's JSON routes answer, without ComfyUI or aiohttp: request checks, the history's pages,
one merge's full record, block-weight series for a chart, a listed model's family. `routes.py` only wires
these to ComfyUI's server.

Read-only, and nothing from a request becomes a path: a model is looked up by its name in ComfyUI's own
list of files, and the history file is the pack's own.
"""
from __future__ import annotations

import os
import threading
from typing import Callable, Mapping, Optional

from ._engine import merge_core

PAGE_DEFAULT = 25
PAGE_MAX = 100
CHART_MAX = 20  # merges in one block-weight chart
QUERY_MAX = 200  # characters of a search
NAME_MAX = 1024  # characters of a model name
ID_MAX = 10 ** 9
MODEL_FOLDERS = ("checkpoints", "diffusion_models")


class ApiError(Exception):
    """A request the route refuses: HTTP status and one sentence for the user."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _int(query: Mapping, name: str, default: int, lo: int, hi: int) -> int:
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(str(raw).strip())
    except ValueError:
        raise ApiError(400, f"{name} must be a whole number, not '{str(raw)[:40]}'") from None
    if not lo <= value <= hi:
        raise ApiError(400, f"{name} must be between {lo} and {hi}, not {value}")
    return value


def _bool(query: Mapping, name: str, default: bool) -> bool:
    raw = str(query.get(name, "")).strip().lower()
    if not raw:
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ApiError(400, f"{name} must be true or false, not '{raw[:40]}'")


def merge_id(raw, name: str = "id") -> int:
    """A merge ID from a request: a whole number, not 0 (negative IDs count back from the last merge)."""
    value = _int({name: raw}, name, 0, -ID_MAX, ID_MAX)
    if value == 0:
        raise ApiError(400, f"{name} is required: a merge ID (−1 = the last merge)")
    return value


class HistoryReader:
    """The history's entries, parsed again only when the file changed (a page request must not re-read a
    long history each time)."""

    def __init__(self, history_of: Callable[[], "merge_core.history.History"]):
        self._history_of = history_of
        self._lock = threading.Lock()
        self._stamp = None
        self._entries: list = []

    def entries(self) -> list:
        history = self._history_of()
        try:
            st = os.stat(history.path)
            stamp = (str(history.path), st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            return []
        with self._lock:
            if stamp != self._stamp:
                try:
                    self._entries = history.entries()
                except merge_core.MergeError as e:
                    raise ApiError(500, f"the merge history cannot be read: {e}") from None
                self._stamp = stamp
            return self._entries


def summary(entry) -> dict:
    """One row of the history browser."""
    r = entry.recipe
    models = {role: (entry.models.get(role) or {}).get("name") or getattr(r, f"model_{role}")
              for role in ("a", "b", "c") if getattr(r, f"model_{role}")}
    return {"id": entry.id, "time": entry.time, "name": entry.name, "origin": entry.origin,
            "family": entry.family, "models": models, "mode": r.mode, "calcmode": r.calcmode, "alpha": r.alpha,
            "beta": r.beta, "weights_alpha": r.weights_alpha, "weights_beta": r.weights_beta,
            "rerunnable": entry.origin != "in-graph"}


def history_page(entries: list, query: Mapping) -> dict:
    """GET /supermerger/history: `q` words, `match` and|or, `offset`, `limit` (1…PAGE_MAX), `files_only`."""
    words = str(query.get("q", ""))
    if len(words) > QUERY_MAX:
        raise ApiError(400, f"q is longer than {QUERY_MAX} characters")
    match = str(query.get("match", "and")).strip().lower() or "and"
    if match not in ("and", "or"):
        raise ApiError(400, f"match must be 'and' or 'or', not '{match[:40]}'")
    offset = _int(query, "offset", 0, 0, ID_MAX)
    limit = _int(query, "limit", PAGE_DEFAULT, 1, PAGE_MAX)
    found = merge_core.history.matching(entries, words, match)
    if _bool(query, "files_only", False):
        found = [e for e in found if e.origin != "in-graph"]
    return {"total": len(found), "offset": offset, "limit": limit, "all": len(entries),
            "entries": [summary(e) for e in found[offset:offset + limit]]}


def _find(entries: list, wanted: int):
    if not entries:
        raise ApiError(404, "the merge history is empty")
    if wanted < 0:
        if -wanted > len(entries):
            raise ApiError(404, f"{wanted} goes back further than the history's {len(entries)} merges")
        return entries[wanted]
    for e in entries:
        if e.id == wanted:
            return e
    raise ApiError(404, f"no merge with ID {wanted}")


def history_entry(entries: list, query: Mapping) -> dict:
    """GET /supermerger/history/entry?id=N: the full record (recipe, models with their hashes)."""
    entry = _find(entries, merge_id(query.get("id")))
    return {**entry.to_dict(), "summary": summary(entry)}


def parse_id_list(raw) -> list:
    """`ids=3,5,9`: distinct merge IDs, at most CHART_MAX."""
    text = str(raw or "")
    if len(text) > 20 * CHART_MAX:
        raise ApiError(400, "ids is too long")
    ids = []
    for part in (p.strip() for p in text.split(",")):
        if part:
            value = merge_id(part, "ids")
            if value not in ids:
                ids.append(value)
    if not ids:
        raise ApiError(400, "ids is required: merge IDs separated by commas")
    if len(ids) > CHART_MAX:
        raise ApiError(400, f"at most {CHART_MAX} merges fit one chart, not {len(ids)}")
    return ids


def block_weight_series(entries: list, query: Mapping) -> dict:
    """GET /supermerger/history/weights?ids=…: the α every block got in each chosen merge (presets, the SDXL
    conversion and dice rolls resolved as the merge resolved them), for the browser's chart."""
    chosen = [_find(entries, i) for i in parse_id_list(query.get("ids"))]
    try:
        labels, lists = merge_core.weight_analysis.block_series(chosen)
    except merge_core.MergeError as e:
        raise ApiError(400, str(e)) from None
    return {"labels": list(labels),
            "series": [{"id": e.id, "name": e.name, "values": v} for e, v in zip(chosen, lists)]}


def listed_name(query: Mapping, names_of: Callable[[str], list]) -> tuple:
    """(folder, name) of GET /supermerger/family?name=…[&folder=…], checked against ComfyUI's own list of that
    folder's files: a name not listed there is refused, so a request never names a path."""
    folder = str(query.get("folder", "checkpoints")).strip() or "checkpoints"
    if folder not in MODEL_FOLDERS:
        raise ApiError(400, f"folder must be one of {', '.join(MODEL_FOLDERS)}")
    name = query.get("name")
    if not name or not isinstance(name, str):
        raise ApiError(400, "name is required: a model name from ComfyUI's list")
    if len(name) > NAME_MAX:
        raise ApiError(400, f"name is longer than {NAME_MAX} characters")
    if name not in names_of(folder):
        raise ApiError(404, f"'{name[:200]}' is not in ComfyUI's {folder} list")
    return folder, name


def model_family(path: Optional[str], name: str) -> dict:
    """The family of a listed model from its file header; a file whose family cannot be read is not an
    error of the request: the answer says why, and the panel falls back to the list length or a choice."""
    if path is None:
        raise ApiError(404, f"'{name[:200]}' is listed but its file is gone")
    try:
        family = merge_core.editor.family_of_file(path)
    except merge_core.MergeError as e:
        return {"name": name, "family": None, "reason": e.reason}
    return {"name": name, "family": family, "label": merge_core.FAMILIES[family].label}
