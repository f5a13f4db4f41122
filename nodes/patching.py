"""ComfyUI glue: a merge plan carried out lazily through ComfyUI's own weight-patch mechanism.

Every merged key becomes a `WeightAdapterBase` patch on a clone of model A. Nothing is computed or copied
when the node runs (except a calcmode's global pre-pass): ComfyUI calls the patch when it loads the model
for sampling, handing it A's weight (with A's own patches, e.g. LoRAs, already applied); the patch reads B's
and C's weights the same way, with their patches, and calls the engine's per-key function. The loaded
models themselves are never modified.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

import comfy.lora
import comfy.model_management as mm
import comfy.model_patcher
from comfy.patcher_extension import CallbacksMP
from comfy.weight_adapter import WeightAdapterBase

from . import keymap
from ._engine import merge_core
from .common import interrupted, progress, stops_on_interrupt

MergeError = merge_core.MergeError
F32 = torch.float32


def effective_weight(key_patches: list, key: str, device=None) -> torch.Tensor:
    """A weight with its own patches applied, as float32 (how ComfyUI evaluates a nested model patch)."""
    weight, convert = key_patches[0]
    device = device if device is not None else weight.device
    if len(key_patches) == 1 and weight.dtype == F32 and weight.device == torch.device(device):
        return convert(weight, inplace=False)  # read only: the loaded weight itself, no copy
    t = convert(mm.cast_to_device(weight, device, F32, copy=True), inplace=True)
    if len(key_patches) > 1:
        t = comfy.lora.calculate_weight(key_patches[1:], t, key, intermediate_dtype=F32)
    return t


@dataclass
class Part:
    """One patcher's share of a model: its key patches and ComfyUI key → checkpoint key."""
    patches: dict
    names: dict


class PatcherSource(merge_core.DictSource):
    """A merge_core source over in-graph models: checkpoint-named keys → effective float32 weights."""

    def __init__(self, name: str, parts: list, family=None):
        super().__init__({}, name)
        self.family = family
        self._where = {}
        for part in parts:
            for comfy_key, ckpt_key in part.names.items():
                self._where[ckpt_key] = (part.patches, comfy_key)
        self._keys = sorted(self._where)  # the order of a saved checkpoint

    def keys(self):
        return list(self._keys)

    def __contains__(self, key):
        return key in self._where

    def comfy_key(self, key):
        return self._where[key][1]

    def key_patches(self, key):
        patches, comfy_key = self._where[key]
        return patches[comfy_key]

    def shape(self, key):
        return tuple(self.key_patches(key)[0][0].shape)

    def dtype(self, key):
        return F32

    def get(self, key):
        return effective_weight(self.key_patches(key), self.comfy_key(key))


def source(name: str, model, clip=None, family=None) -> PatcherSource:
    """Wrap a MODEL (and optionally its CLIP) as one model for the planner. The family is detected from the
    U-Net keys unless given (CLIP key names depend on it)."""
    unet = Part(model.get_key_patches("diffusion_model."), {})
    unet.names = {k: keymap.unet_name(k) for k in unet.patches}
    if family is None:
        info = merge_core.ModelInfo.of(PatcherSource(name, [unet]))
        family = merge_core.families.detect(set(info.keys), name, merge_core.plan.context_dim(info))
    parts = [unet]
    if clip is not None:
        te = clip.get_key_patches()
        parts.append(Part(te, {k: n for k in te if (n := keymap.clip_name(k, family.name)) is not None}))
    return PatcherSource(name, parts, family)


class MergePatch(WeightAdapterBase):
    """One merged key, evaluated when ComfyUI loads the model."""

    name = "supermerger"

    def __init__(self, job: "LazyMerge", step):
        self.job, self.step = job, step
        self.loaded_keys = set()
        self.weights = []
        self._computed = False
        self._cached = None

    def calculate_weight(self, weight, key, strength, strength_model, offset, function,
                         intermediate_dtype=F32, original_weight=None):
        if self._cached is not None:  # a costly calcmode asked for again: see below
            return self._cached.to(weight.device, weight.dtype)
        # ComfyUI does not look for Interrupt while it patches a model, and a costly calcmode can patch for
        # minutes; its loader undoes the weights patched so far when this raises (partially_load → detach).
        mm.throw_exception_if_processing_interrupted()
        step, job = self.step, self.job
        if step.action != "merge":  # a kept key that only Adjust changes
            return merge_core.executor.kept(step, weight)
        b = job.b.key_patches(step.key)
        c = job.c.key_patches(step.key) if step.reads_c else None
        out = merge_core.executor.merge_key(
            job.plan, step, weight, effective_weight(b, key, weight.device),
            effective_weight(c, key, weight.device) if c is not None else None, job.stats)
        if out is None:
            return weight
        if not torch.isfinite(out).all():
            raise MergeError(f"{job.node}: key {step.key}", "the merge produced NaN or infinite values "
                                                            f"(alpha {step.alpha}, beta {step.beta})")
        if job.costly:
            # A model loaded whole asks once: keeping a copy would double its memory. Asked again, ComfyUI is
            # patching on every step (low-VRAM mode) or reloading: from then on the result is kept.
            if self._computed:
                self._cached = out.to("cpu", copy=True)
            self._computed = True
        return out


@dataclass
class LazyMerge:
    node: str
    plan: object
    a: PatcherSource
    b: PatcherSource
    c: Optional[PatcherSource]
    stats: object = None

    @property
    def costly(self) -> bool:
        return self.plan.calcmode.name.startswith("smoothAdd")


def merge_models(node: str, recipe, model_a, model_b, model_c=None, clip_a=None, clip_b=None, clip_c=None):
    """Clones of model A (and CLIP A) patched to become the merge. Returns (model, clip, plan)."""
    if (clip_a is None) != (clip_b is None) or (clip_c is not None and clip_a is None):
        raise MergeError(f"{node}: clip inputs", "connect clip_a and clip_b together (and clip_c only with them), "
                                                 "or none of them")
    a = source("model A", model_a, clip_a)
    b = source("model B", model_b, clip_b)
    uses_c = merge_core.plan.uses_model_c(recipe)
    c = source("model C", model_c, clip_c) if (model_c is not None and uses_c) else None
    if clip_c is None and c is not None and clip_a is not None:
        raise MergeError(f"{node}: clip_c", "is needed with clip_a and clip_b when model C takes part")
    info = merge_core.ModelInfo.of
    try:
        plan = merge_core.build_plan(recipe, info(a), info(b), info(c) if c is not None else None)
    except MergeError as e:
        raise e.at(f"{node}:") from None
    job = LazyMerge(node, plan, a, b, c if c is not None else a)
    with stops_on_interrupt():
        job.stats = merge_core.executor.run_prepass(plan, merge_core.Inputs(a, b, job.c), interrupted, progress())

    model = model_a.clone()
    clip = clip_a.clone() if clip_a is not None else None
    unet_patches, clip_patches = {}, {}
    for step in plan.steps:
        if step.action == "merge" or (step.action == "keep" and step.adjust is not None):
            key = a.comfy_key(step.key)
            target = unet_patches if step.key.startswith(keymap.UNET[1]) else clip_patches
            target[key] = MergePatch(job, step)
    added = set(model.add_patches(unet_patches, 1.0, 1.0))
    if clip is not None and clip_patches:
        added |= set(clip.add_patches(clip_patches, 1.0, 1.0))
    missing = (set(unet_patches) | set(clip_patches if clip is not None else ())) - added
    if missing:
        raise MergeError(node, f"{len(missing)} keys could not be patched (e.g. {sorted(missing)[0]})")
    _undo_low_vram_on_detach(model)
    if clip is not None:
        _undo_low_vram_on_detach(clip.patcher)
    return model, clip, plan


def _wipe_low_vram_functions(patcher, unpatch_all: bool) -> None:
    if unpatch_all and not patcher.model.model_lowvram:
        for module in patcher.model.modules():
            comfy.model_patcher.wipe_lowvram_weight(module)


def _undo_low_vram_on_detach(patcher) -> None:
    """A merged key may raise while ComfyUI loads the model (Interrupt, or a NaN error). In a low-VRAM load,
    ComfyUI has by then set the patch functions of the modules it keeps off the device, but it records that
    it did so only at the end of the load; the detach that follows the error then leaves those functions on
    the modules, which model A shares, and A would render partly merged. So on detach, stale ones go."""
    callbacks = patcher.callbacks.get(CallbacksMP.ON_DETACH, {})
    if "supermerger" not in callbacks:  # a clone of a merge (a chained merge) has it already
        patcher.add_callback_with_key(CallbacksMP.ON_DETACH, "supermerger", _wipe_low_vram_functions)


def adjust_model(node: str, model, adjust: str):
    """A clone of `model` with Adjust applied lazily to its six Adjust keys."""
    src = source("model", model)
    steps = [s for s in merge_core.plan.adjust_plan(src.family, src.keys(), adjust) if s.adjust]
    job = LazyMerge(node, None, None, None, None)
    out = model.clone()
    out.add_patches({src.comfy_key(s.key): MergePatch(job, s) for s in steps}, 1.0, 1.0)
    _undo_low_vram_on_detach(out)
    return out


def analyze(node: str, model_a, model_b, mode: str, method: str, clip_a=None, clip_b=None):
    """Similarity of two in-graph models (their effective weights, patches applied)."""
    a = source("model A", model_a, clip_a if clip_b is not None else None)
    b = source("model B", model_b, clip_b if clip_a is not None else None)
    family = merge_core.plan.detect_family({"a": merge_core.ModelInfo.of(a), "b": merge_core.ModelInfo.of(b)})
    analysis = merge_core.analysis
    with stops_on_interrupt():
        if mode == "asimilarity":
            result = analysis.asimilarity(a, b, family, interrupted, progress())
        else:
            result = analysis.cosine(a, b, family, mode, method, ("te", "unet"), interrupted, progress())
    return result, family


def elements(node: str, ckpt_name, model=None, clip=None, contains: str = ""):
    """Key listing of a checkpoint file (read lazily, not loaded) or of a loaded model."""
    if ckpt_name:
        import folder_paths

        path = folder_paths.get_full_path("checkpoints", ckpt_name)
        if path is None:
            raise MergeError(f"{node}: ckpt_name", f"'{ckpt_name}' is not in the checkpoints folder")
        with merge_core.open_model(path) as src:
            info = merge_core.ModelInfo.of(src)
            family = merge_core.plan.detect_family({"a": info})
            return merge_core.analysis.elements(src, family, contains or None)
    if model is None:
        raise MergeError(f"{node}: model", "connect a model or choose a checkpoint")
    src = source("model", model, clip)
    return merge_core.analysis.elements(src, src.family, contains or None)
