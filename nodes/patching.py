"""ComfyUI glue: a merge plan carried out lazily through ComfyUI's own weight-patch mechanism.

The merge sees ComfyUI's models in checkpoint key space (`keyspace`: the names, shapes and fused tensors of
the checkpoint file, from ComfyUI's own conversions), so the plan and every merged tensor are those of a file
merge. Each ComfyUI weight the plan changes gets a `WeightAdapterBase` patch on a clone of model A. Nothing is
computed or copied when the node runs (except a calcmode's global pre-pass): ComfyUI calls the patch when it
loads the model for sampling; the patch reads A's, B's and C's effective weights (their own patches, e.g.
LoRAs, applied), has the engine's step evaluator compute the checkpoint tensor and hands back its share of it.
The loaded models themselves are never modified.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import torch

import comfy.lora
import comfy.model_management as mm
import comfy.model_patcher
from comfy.patcher_extension import CallbacksMP
from comfy.weight_adapter import WeightAdapterBase

from . import keyspace
from ._engine import merge_core
from .common import run_context, stops_on_interrupt

MergeError = merge_core.MergeError
F32 = torch.float32
UNET_PREFIX = "diffusion_model."


def effective_weight(key_patches: list, key: str, device=None) -> torch.Tensor:
    """A weight with its own patches applied, as float32 (how ComfyUI evaluates a nested model patch)."""
    weight, convert = key_patches[0]
    device = device if device is not None else weight.device
    if len(key_patches) == 1 and weight.dtype == F32 and weight.device == torch.device(device):
        return convert(weight, inplace=False).detach()  # read only: the loaded weight itself, no copy
    t = convert(mm.cast_to_device(weight, device, F32, copy=True), inplace=True)
    if len(key_patches) > 1:
        t = comfy.lora.calculate_weight(key_patches[1:], t, key, intermediate_dtype=F32)
    return t


def family_of(model) -> "merge_core.Family":
    """The family of a MODEL from the model config ComfyUI detected for it (never guessed from key names)."""
    config = model.model.model_config
    family = merge_core.families.for_comfy_config(c.__name__ for c in type(config).__mro__)
    if family is None:
        raise MergeError("model", f"{type(config).__name__} models are not supported (SD1.x, SD2.x, SDXL and Flux "
                                  "are)")
    return family


_LAYOUTS: OrderedDict = OrderedDict()  # the same kind of model is loaded again and again: derive its layout once


def _layout(config, part: str, patches: dict) -> keyspace.Layout:
    shapes = {k: tuple(v[0][0].shape) for k, v in patches.items()}
    cache_key = (type(config).__qualname__, part, hash(tuple(sorted(shapes.items()))))
    if cache_key in _LAYOUTS:
        _LAYOUTS.move_to_end(cache_key)
        return _LAYOUTS[cache_key]
    if part == "unet":
        prefix = next(iter(config.process_unet_state_dict_for_saving({"": None})))  # what saving puts in front

        def to_checkpoint(sd):
            return config.process_unet_state_dict_for_saving({k[len(UNET_PREFIX):]: v for k, v in sd.items()})

        def to_comfy(sd):
            inner = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
            return {UNET_PREFIX + k: v for k, v in config.process_unet_state_dict(inner).items()}
    else:
        to_checkpoint, to_comfy = config.process_clip_state_dict_for_saving, config.process_clip_state_dict
    layout = keyspace.derive(shapes, to_checkpoint, to_comfy)
    _LAYOUTS[cache_key] = layout
    while len(_LAYOUTS) > 8:
        _LAYOUTS.popitem(last=False)
    return layout


class ModelView(merge_core.DictSource):
    """A merge_core source over an in-graph MODEL (and CLIP) in checkpoint key space: effective float32
    weights (their patches applied), fused tensors put together from ComfyUI's parts."""

    def __init__(self, name: str, model, clip=None, family=None):
        super().__init__({}, name)
        self.family = family or family_of(model)
        config = model.model.model_config
        self._entries = {}  # checkpoint key → (key patches, Entry)
        self._constants = {}
        parts = [("unet", model.get_key_patches(UNET_PREFIX))]
        if clip is not None:
            parts.append(("clip", clip.get_key_patches()))
        for part, patches in parts:
            layout = _layout(config, part, patches)
            if part == "clip" and patches and not layout.entries:
                raise MergeError("clip", f"does not belong to a {self.family.label} model (none of its weights has "
                                         "a place in that model's checkpoint)")
            self._entries.update({k: (patches, e) for k, e in layout.entries.items()})
            self._constants.update(layout.constants)
        if clip is not None:
            self._constants.update(merge_core.families.checkpoint_constants(self.family, self._entries))
        self._keys = sorted(set(self._entries) | set(self._constants))  # the order of a saved checkpoint

    def keys(self):
        return list(self._keys)

    def __contains__(self, key):
        return key in self._entries or key in self._constants

    def slots(self, key) -> tuple:
        return self._entries[key][1].slots

    def comfy_keys(self, key) -> list:
        return [s.comfy_key for s in self.slots(key)] if key in self._entries else []

    def shape(self, key):
        return self._entries[key][1].shape if key in self._entries else tuple(self._constants[key].shape)

    def dtype(self, key):
        return F32 if key in self._entries else self._constants[key].dtype

    @torch.no_grad()
    def get(self, key, device=None):
        if key in self._constants:
            return self._constants[key]
        patches, entry = self._entries[key]
        if len(entry.slots) == 1 and entry.slots[0].whole:
            slot = entry.slots[0]
            return effective_weight(patches[slot.comfy_key], slot.comfy_key, device)
        whole = None
        for slot in entry.slots:
            part = effective_weight(patches[slot.comfy_key], slot.comfy_key, device)
            if whole is None:
                whole = torch.empty(entry.shape, dtype=F32, device=part.device)
            slot.put(whole, part)
        return whole


class MergePatch(WeightAdapterBase):
    """One ComfyUI weight of a merged key, evaluated when ComfyUI loads the model."""

    name = "supermerger"

    def __init__(self, job: "LazyMerge", step, slot):
        self.job, self.step, self.slot = job, step, slot
        self.loaded_keys = set()
        self.weights = []
        self._computed = False
        self._cached = None
        self.probe = False  # one patch per merge counts how often ComfyUI had the merged weights computed

    @torch.no_grad()  # ComfyUI loads under no_grad; a caller that does not (a script) must not make this fail
    def calculate_weight(self, weight, key, strength, strength_model, offset, function,
                         intermediate_dtype=F32, original_weight=None):
        if self._cached is not None:  # a costly calcmode asked for again: see below
            return self._cached.to(weight.device, weight.dtype)
        # ComfyUI does not look for Interrupt while it patches a model, and a costly calcmode can patch for
        # minutes; its loader undoes the weights patched so far when this raises (partially_load → detach).
        mm.throw_exception_if_processing_interrupted()
        job = self.job
        if self.probe:
            job.computations += 1
        if self.slot.whole:  # A's weight as ComfyUI hands it over (its own patches applied) is A's tensor
            out = job.evaluate(self.step, weight.device, a=weight)
        else:
            out = self.slot.take(job.whole(self.step, weight.device))
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
    views: dict  # role → ModelView ("a", "b", "c")
    stats: object = None
    computations: int = 0  # times ComfyUI had this merge's weights computed (one per load of the model)

    def __post_init__(self):
        self._wholes: OrderedDict = OrderedDict()  # fused tensors, shared by the ComfyUI weights they hold

    @property
    def costly(self) -> bool:
        return self.plan is not None and self.plan.calcmode.costly

    def names(self) -> dict:
        return {role: view.name for role, view in self.views.items()}

    def evaluate(self, step, device, a=None):
        """`a`: A's tensor as ComfyUI hands it to the patch, a scratch copy that the result may overwrite (a
        second read of A, to say which input holds NaN, goes to the model itself)."""
        handed = [a]

        def read(role, key):
            if role == "a" and handed[0] is not None:
                t, handed[0] = handed[0], None
                return t
            return self.views[role].get(key, device)
        return merge_core.steps.evaluate(self.plan, step, read, self.stats, self.names(), out=a)

    def whole(self, step, device):
        """The checkpoint tensor of a fused key, computed once for all its ComfyUI weights (which ComfyUI
        patches one after another)."""
        cache_key = (step.key, str(device))
        if cache_key not in self._wholes:
            self._wholes[cache_key] = self.evaluate(step, device)
            while len(self._wholes) > 2:
                self._wholes.popitem(last=False)
        return self._wholes[cache_key]


def merge_models(node: str, recipe, model_a, model_b, model_c=None, clip_a=None, clip_b=None, clip_c=None):
    """Clones of model A (and CLIP A) patched to become the merge. Returns (model, clip, plan)."""
    if (clip_a is None) != (clip_b is None) or (clip_c is not None and clip_a is None):
        raise MergeError("clip inputs", "connect clip_a and clip_b together (and clip_c only with them), "
                                                 "or none of them")
    uses_c = merge_core.plan.uses_model_c(recipe)
    if clip_c is None and model_c is not None and uses_c and clip_a is not None:
        raise MergeError("clip_c", "is needed with clip_a and clip_b when model C takes part")
    views = {"a": ModelView("model A", model_a, clip_a)}
    views["b"] = ModelView("model B", model_b, clip_b)
    if model_c is not None and uses_c:
        views["c"] = ModelView("model C", model_c, clip_c)
    same_family(views)
    info = merge_core.ModelInfo.of
    plan = merge_core.build_plan(recipe, info(views["a"]), info(views["b"]),
                                 info(views["c"]) if "c" in views else None, family=views["a"].family)
    views.setdefault("c", views["a"])  # SuperMerger: an empty model C is model A
    job = LazyMerge(node, plan, views)
    with stops_on_interrupt():
        job.stats = merge_core.executor.run_prepass(plan, merge_core.Inputs(views["a"], views["b"], views["c"]),
                                                    run_context())
    model = model_a.clone()
    clip = clip_a.clone() if clip_a is not None else None
    _patch(node, job, views["a"], model, clip)
    return model, clip, plan


def merge_job(model):
    """The LazyMerge behind a merged MODEL (None when it has no merge patches)."""
    for patches in model.patches.values():
        for patch in patches:
            if isinstance(patch[1], MergePatch):
                return patch[1].job
    return None


def same_family(views: dict) -> None:
    if len({v.family.name for v in views.values()}) > 1:
        listing = ", ".join(f"model_{role} is {v.family.label}" for role, v in views.items())
        raise MergeError("models", f"cannot merge models of different families: {listing}")


def _patch(node: str, job: LazyMerge, view: ModelView, model, clip=None) -> None:
    """Add a MergePatch for every ComfyUI weight of every step that changes its key."""
    unet_patches, clip_patches = {}, {}
    for step in job.plan.steps:
        if step.action is merge_core.plan.Action.MERGE or (step.action is merge_core.plan.Action.KEEP
                                                           and step.adjust is not None):
            for slot in view.slots(step.key):
                target = unet_patches if slot.comfy_key.startswith(UNET_PREFIX) else clip_patches
                target[slot.comfy_key] = MergePatch(job, step, slot)
    if unet_patches:
        next(iter(unet_patches.values())).probe = True
    added = set(model.add_patches(unet_patches, 1.0, 1.0))
    if clip is not None and clip_patches:
        added |= set(clip.add_patches(clip_patches, 1.0, 1.0))
    missing = (set(unet_patches) | set(clip_patches if clip is not None else ())) - added
    if missing:
        raise MergeError(node, f"{len(missing)} keys could not be patched (e.g. {sorted(missing)[0]})")
    _undo_low_vram_on_detach(model)
    if clip is not None:
        _undo_low_vram_on_detach(clip.patcher)


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
    view = ModelView("model", model)
    steps = [s for s in merge_core.plan.adjust_plan(view.family, view.keys(), adjust) if s.adjust]
    plan = merge_core.merge.copy_plan(merge_core.Recipe(model_a="model", model_b="model", adjust=adjust),
                                      view.family, steps)
    out = model.clone()
    _patch(node, LazyMerge(node, plan, {"a": view}), view, out)
    return out


def analyze(node: str, model_a, model_b, mode: str, method: str, clip_a=None, clip_b=None):
    """Similarity of two in-graph models (their effective weights, patches applied)."""
    a = ModelView("model A", model_a, clip_a if clip_b is not None else None)
    b = ModelView("model B", model_b, clip_b if clip_a is not None else None)
    same_family({"a": a, "b": b})
    family = a.family
    analysis = merge_core.analysis
    with stops_on_interrupt():
        if mode == "asimilarity":
            result = analysis.asimilarity(a, b, family, run_context())
        else:
            result = analysis.cosine(a, b, family, mode, method, ("te", "unet"), run_context())
    return result, family


def elements(node: str, ckpt_name, model=None, clip=None, contains: str = ""):
    """Key listing of a checkpoint file (read lazily, not loaded) or of a loaded model."""
    if ckpt_name:
        import folder_paths

        path = folder_paths.get_full_path("checkpoints", ckpt_name)
        if path is None:
            raise MergeError("ckpt_name", f"'{ckpt_name}' is not in the checkpoints folder")
        with merge_core.open_model(path) as src:
            info = merge_core.ModelInfo.of(src)
            family = merge_core.plan.detect_family({"a": info})
            return merge_core.analysis.elements(src, family, contains or None)
    if model is None:
        raise MergeError("model", "connect a model or choose a checkpoint")
    view = ModelView("model", model, clip)
    return merge_core.analysis.elements(view, view.family, contains or None)
