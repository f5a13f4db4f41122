"""ComfyUI glue for merging checkpoint files: inputs streamed from memory-mapped files into a model built by
ComfyUI's own checkpoint loader, a bounded cache of inputs for repeated merges, and the history.

Memory: ComfyUI's own loader builds model A from A's memory-mapped file (no second copy of A), then each
merged tensor, computed in A's dtype as SuperMerger does, is copied into that model's weights key by key. So
a merge needs the memory of one loaded model plus a few tensors, whatever the number of inputs.
"""
from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from pathlib import Path

import comfy.sd
import folder_paths
import torch

from ._engine import merge_core
from .common import interrupted, progress, stops_on_interrupt

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

    def open(self, path: Path, role: str, n: int, cancel):
        """(source, owned by the caller, where it came from): the cached copy, a new cached copy, or the
        memory-mapped file (which the caller closes)."""
        key = self._key(path)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key], False, "from the cache"
        src = merge_core.open_model(path, path.name)
        if ROLES.index(role) >= n or not self._room_for(path.stat().st_size):
            return src, True, "from its file"
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
        self.trim(n)
        return cached, False, "from its file (now cached)"

    def trim(self, n: int) -> None:
        """Keep the `n` most recently used inputs."""
        with self._lock:
            while len(self._items) > max(n, 0):
                self._items.popitem(last=False)

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


def _load(node: str, a):
    """Model A as ComfyUI's own loader builds it, fed from A's source (memory-mapped file pages or the cache),
    so A is never read into a second copy."""
    sd = {k: a.get(k) for k in a.keys()}
    out = comfy.sd.load_state_dict_guess_config(sd, output_vae=True, output_clip=True,
                                                embedding_directory=folder_paths.get_folder_paths("embeddings"),
                                                metadata=a.metadata() or None)
    del sd
    for k in a.keys():
        a.release(k)  # the model holds its own copy now; A's file pages go back to the page cache
    if out is None or out[0] is None:
        raise MergeError("model_a", "ComfyUI does not recognise this checkpoint")
    return out[0], out[1], out[2]


class _Into:
    """Writes merged tensors into the freshly loaded model A, which no one else holds: U-Net and VAE weights
    are copied into their parameters key by key (so no merged copy of the model ever exists); text-encoder
    weights, whose names ComfyUI converts, go through ComfyUI's own CLIP conversion once at the end."""

    UNET, VAE = "model.diffusion_model.", "first_stage_model."

    def __init__(self, model, clip, vae):
        self.model, self.clip, self.vae = model, clip, vae
        self.params = {self.UNET + n: p for n, p in model.model.diffusion_model.state_dict(keep_vars=True).items()}
        if vae is not None:
            self.params.update({self.VAE + n: p for n, p in vae.first_stage_model.state_dict(keep_vars=True).items()})
        self.unet_rest, self.vae_rest, self.text = {}, {}, {}

    def write(self, step, tensor):
        key = step.key
        target = self.params.get(key)
        if target is not None and tuple(target.shape) == tuple(tensor.shape):
            with torch.no_grad():
                target.copy_(tensor)
        elif key.startswith(self.UNET):
            self.unet_rest[key[len(self.UNET):]] = tensor  # a name ComfyUI converts for this model type
        elif key.startswith(self.VAE):
            self.vae_rest[key[len(self.VAE):]] = tensor
        else:
            self.text[key] = tensor

    def finish(self):
        mc = self.model.model.model_config
        if self.unet_rest:
            unet = self.model.model.diffusion_model
            unet.load_state_dict(mc.process_unet_state_dict(self.unet_rest), strict=False)
        if self.vae_rest and self.vae is not None:
            self.vae.first_stage_model.load_state_dict(mc.process_vae_state_dict(self.vae_rest), strict=False)
        if self.text and self.clip is not None:
            self.clip.load_sd(mc.process_clip_state_dict(self.text), full_model=True)


def merge(node: str, recipe, merge_vae: bool, cache_models: int):
    """Merge the checkpoints `recipe` names; returns (model, clip, vae, plan, history entry)."""
    paths = {"a": checkpoint_path(recipe.model_a, "model_a"),
             "b": checkpoint_path(recipe.model_b, "model_b")}
    if recipe.model_c and merge_core.plan.uses_model_c(recipe):
        paths["c"] = checkpoint_path(recipe.model_c, "model_c")
    if cache_models <= 0:
        CACHE.trim(0)
    opened = {}
    try:
        with stops_on_interrupt():
            for role, path in paths.items():
                opened[role] = CACHE.open(path, role, cache_models, interrupted)
                logging.info("SuperMerger: model %s %s %s", role.upper(), path.name, opened[role][2])
            inputs = merge_core.Inputs(*(opened[r][0] if r in opened else None for r in ROLES))
            plan = merge_core.make_plan(recipe, inputs)
            if not merge_vae:
                plan = merge_core.merge.keep_vae(plan)
            model, clip, vae = _load(node, inputs.a)
            into = _Into(model, clip, vae)
            stats = merge_core.executor.run_prepass(plan, inputs, interrupted, progress())  # over every key
            changes = plan.replaced([s for s in plan.steps if s.action != merge_core.plan.KEEP or s.adjust is not None])
            merge_core.run_plan(changes, inputs, into.write, progress=progress(), cancel=interrupted, stats=stats)
            into.finish()
            entry = merge_core.history.record(history(), plan, inputs, merge_core.merge.display_name(plan), "node",
                                              absolute_paths=False)
            return model, clip, vae, plan, entry
    finally:
        for src, owned, _origin in opened.values():
            if owned:
                src.close()
        CACHE.trim(cache_models)
