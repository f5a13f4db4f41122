"""ComfyUI glue for merging checkpoint files: inputs streamed from memory-mapped files, the merged state dict
handed to ComfyUI's own checkpoint loader, a bounded cache of inputs for repeated merges, and the history.

Memory: the executor writes each merged tensor in model A's dtype into one dict (unchanged keys are views of
A's file, not copies), and ComfyUI's loader moves the U-Net weights out of that dict as it builds the model.
So a merge peaks near one ordinary checkpoint load, whatever the number of inputs.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from pathlib import Path

import comfy.model_management as mm
import comfy.sd
import comfy.utils
import folder_paths

from ._engine import merge_core

MergeError = merge_core.MergeError
ROLES = ("a", "b", "c")


def checkpoint_path(name: str, where: str) -> Path:
    path = folder_paths.get_full_path("checkpoints", name) if name else None
    if path is None:
        raise MergeError(where, f"'{name}' is not in ComfyUI's checkpoints folder" if name else "is required")
    return Path(path)


def resolve_checkpoint(ref: str, where: str) -> str:
    """A checkpoint name from the list, or the name of the checkpoint whose sha256 starts with `ref` (history
    imported from SuperMerger names models by their short hash)."""
    names = folder_paths.get_filename_list("checkpoints")
    if ref in names:
        return ref
    ref_l = ref.lower()
    if 8 <= len(ref_l) <= 64 and all(c in "0123456789abcdef" for c in ref_l):
        for name in names:
            path = folder_paths.get_full_path("checkpoints", name)
            if path and merge_core.hashing.sha256(path).startswith(ref_l):
                return name
    raise MergeError(where, f"'{ref}' is neither a checkpoint in ComfyUI's checkpoints folder nor the hash of one")


class InputCache:
    """SuperMerger's model cache (SPEC §12): up to `n` input checkpoints kept in RAM (n ≥ 1 keeps A, ≥ 2 also B,
    3 also C), so XYZ cells and dice rolls do not read them again. A file is admitted only when RAM stays
    ample for the merge itself (the merged dict and the model ComfyUI builds from it); otherwise it is read
    from its memory map each time, which the OS page cache makes cheap."""

    def __init__(self):
        self._items: OrderedDict = OrderedDict()  # (path, size, mtime) → DictSource held in RAM
        self._lock = threading.Lock()

    @staticmethod
    def _key(path: Path):
        st = path.stat()
        return (str(path), st.st_size, st.st_mtime_ns)

    def names(self) -> list:
        return [Path(k[0]).name for k in self._items]

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def open(self, path: Path, role: str, n: int, cancel):
        """A source for `path`: the cached copy, a new cached copy, or the memory-mapped file."""
        key = self._key(path)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key], False
        src = merge_core.open_model(path, path.name)
        if ROLES.index(role) >= n or not self._room_for(path.stat().st_size):
            return src, True
        try:
            held = {}
            for k in src.keys():
                if cancel():
                    raise merge_core.MergeInterrupted()
                held[k] = src.get(k).clone()
                src.release(k)
        finally:
            metadata = src.metadata()
            src.close()
        cached = merge_core.DictSource(held, path.name, metadata)
        cached.path = path
        with self._lock:
            self._items[key] = cached
            while len(self._items) > max(n, 0):
                self._items.popitem(last=False)
        return cached, False

    def trim(self, n: int, keep: set) -> None:
        with self._lock:
            for key in [k for k in self._items if k[0] not in keep][: max(0, len(self._items) - n)]:
                del self._items[key]

    @staticmethod
    def _room_for(size: int) -> bool:
        import psutil  # a ComfyUI dependency

        return psutil.virtual_memory().available > 4 * size


CACHE = InputCache()


def history() -> "merge_core.history.History":
    return merge_core.history.History(Path(folder_paths.get_user_directory()) / "supermerger" /
                                      merge_core.history.FILE_NAME)


def history_stamp() -> int:
    """Changes whenever a merge is recorded: nodes that read the history (ID −1 moves) run again then."""
    path = history().path
    return path.stat().st_mtime_ns if path.exists() else 0


def _cancel():
    return mm.processing_interrupted()


def merge(node: str, recipe, merge_vae: bool, cache_models: int):
    """Merge the checkpoints `recipe` names; returns (model, clip, vae, plan, history entry)."""
    paths = {"a": checkpoint_path(recipe.model_a, f"{node}: model_a"),
             "b": checkpoint_path(recipe.model_b, f"{node}: model_b")}
    if recipe.model_c and merge_core.plan.uses_model_c(recipe):
        paths["c"] = checkpoint_path(recipe.model_c, f"{node}: model_c")
    if cache_models <= 0:
        CACHE.clear()
    opened = {}
    bar = comfy.utils.ProgressBar(1)
    progress = lambda done, total, _phase: bar.update_absolute(done, total)  # noqa: E731
    try:
        for role, path in paths.items():
            opened[role] = CACHE.open(path, role, cache_models, _cancel)
        inputs = merge_core.Inputs(*(opened[r][0] if r in opened else None for r in ROLES))
        try:
            plan = merge_core.make_plan(recipe, inputs)
        except MergeError as e:
            raise e.at(f"{node}:") from None
        if not merge_vae:
            plan = merge_core.merge.keep_vae(plan)
        result = merge_core.merge_to_dict(recipe, inputs, plan=plan, progress=progress, cancel=_cancel)
        sd = result.tensors
        del result
        embeddings = folder_paths.get_folder_paths("embeddings")
        out = comfy.sd.load_state_dict_guess_config(sd, output_vae=True, output_clip=True,
                                                    embedding_directory=embeddings)
        del sd
        if out is None or out[0] is None:
            raise MergeError(node, "ComfyUI could not build a model from the merged weights")
        entry = merge_core.history.record(history(), plan, inputs, merge_core.merge.display_name(plan), "node",
                                          absolute_paths=False)
        return out[0], out[1], out[2], plan, entry
    except merge_core.MergeInterrupted:
        mm.throw_exception_if_processing_interrupted()
        raise
    finally:
        for src, owned in opened.values():
            if owned:
                src.close()
        CACHE.trim(cache_models, {str(p) for p in paths.values()})
