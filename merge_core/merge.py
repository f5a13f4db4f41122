"""The engine's front door: open a recipe's inputs, plan, and run the plan into a dict or a file.

Save options (SPEC §10) are per-key decisions too, so they are compiled into the plan: prune drops steps,
"reset CLIP ids" and "bake in VAE" replace steps, fp16 sets each output key's dtype.
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from . import calcmodes, precision
from .csvfile import write_csv
from .errors import MergeError
from .executor import Inputs, run_plan
from .hashing import legacy_hash, sha256
from .naming import merge_name
from .plan import (CLIP_POSITION_IDS, FROM_B, FROM_VAE, KEEP, RESET_IDS, ModelInfo, Plan, Step, adjust_plan,
                   build_plan, detect_family, uses_model_c)
from .recipe import Recipe
from .run import RunContext
from .sources import DictSource, open_model
from .writer import SafetensorsWriter

FLOATS = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
VAE_PREFIX = "first_stage_model."
PRUNE_KEEP = ("diffusion_model.", VAE_PREFIX)


@dataclass
class SaveOptions:
    fp16: bool = False  # SuperMerger's option; the same as precision "fp16"
    precision: str = ""  # "" keeps each tensor's dtype; else fp16, bf16 or fp32 for the model's float weights
    prune: bool = False
    metadata: bool = True
    reset_clip_ids: bool = False
    bake_vae: Optional[str] = None  # a VAE file whose weights replace first_stage_model.*
    overwrite: bool = False

    def __post_init__(self):
        if self.precision:
            self.precision = precision.canonical(self.precision)

    @property
    def dtype(self) -> Optional[torch.dtype]:
        """The dtype the model's floating-point weights are stored in (None: as they are)."""
        return torch.float16 if self.fp16 else (precision.dtype_of(self.precision) if self.precision else None)


@dataclass
class MergeResult:
    plan: Plan
    path: Optional[Path] = None
    tensors: Optional[dict] = None
    seconds: float = 0.0
    notes: list = field(default_factory=list)


def open_inputs(recipe: Recipe, base_dir: Optional[Path] = None, vae: Optional[str] = None) -> Inputs:
    """Open the files a recipe names (relative paths are taken from `base_dir`)."""
    def path(p):
        p = Path(p).expanduser()
        return p if p.is_absolute() or base_dir is None else Path(base_dir) / p

    opened = []
    try:
        def open_(p):
            opened.append(open_model(path(p)))
            return opened[-1]
        a = open_(recipe.model_a)
        b = open_(recipe.model_b)
        c = open_(recipe.model_c) if recipe.model_c and uses_model_c(recipe) else None
        v = open_(vae) if vae else None
        return Inputs(a, b, c, v)
    except BaseException:
        for src in opened:
            src.close()
        raise


def make_plan(recipe: Recipe, inputs: Inputs, options: Optional[SaveOptions] = None,
              presets: Optional[dict] = None) -> Plan:
    info = ModelInfo.of
    plan = build_plan(recipe, info(inputs.a), info(inputs.b), info(inputs.c) if inputs.c is not None else None,
                      presets)
    return with_save_options(plan, inputs, options or SaveOptions())


def with_save_options(plan: Plan, inputs: Inputs, options: SaveOptions) -> Plan:
    """The save options' per-key decisions (SPEC §10): bake in VAE, reset CLIP ids, SDXL's and prune's key
    filters."""
    steps = plan.steps
    if options.bake_vae:
        steps = _bake_vae(steps, inputs.vae)
    if options.reset_clip_ids:
        steps = [Step(s.key, RESET_IDS) if s.key == CLIP_POSITION_IDS else s for s in steps]
    plan = plan.replaced(steps)
    if plan.family.name == "sdxl":  # SDXL files carry no cond_stage_model (SPEC §10.2)
        plan = plan.filtered(lambda k: not k.startswith("cond_stage_model."))
    if options.prune:
        te = "conditioner." if plan.family.name == "sdxl" else "cond_stage_model."
        plan = plan.filtered(lambda k: any(p in k for p in PRUNE_KEEP + (te,)))
    return plan


def keep_vae(plan: Plan) -> Plan:
    """Model A's VAE unmerged (SuperMerger merges it with the BASE weight, like any other "model" key)."""
    return plan.replaced([Step(s.key, KEEP) if s.key.startswith(VAE_PREFIX) else s for s in plan.steps])


def _bake_vae(steps: list, vae) -> list:
    if vae is None:
        raise MergeError("bake_vae", "no VAE file was opened")
    available = {k.removeprefix(VAE_PREFIX): k for k in vae.keys()}
    out = []
    for s in steps:
        inner = s.key.removeprefix(VAE_PREFIX)
        if s.key.startswith(VAE_PREFIX) and inner in available:
            out.append(Step(s.key, FROM_VAE, source_key=available[inner]))
        else:
            out.append(s)
    return out


def output_spec(plan: Plan, inputs: Inputs, target: Optional[torch.dtype] = None) -> list:
    """(key, dtype, shape) of every output tensor, in plan order, known before any tensor is computed."""
    spec = []
    for s in plan.steps:
        if s.action == FROM_B:
            src, key = inputs.b, s.key
        elif s.action == FROM_VAE:
            src, key = inputs.vae, s.source_key
        else:
            src, key = inputs.a, s.key
        dtype, shape = src.dtype(key), tuple(src.shape(key))
        if s.action == RESET_IDS:
            dtype, shape = torch.int64, (1, 77)
        if s.action == FROM_VAE and shape != tuple(inputs.a.shape(s.key)):
            raise MergeError(f"bake_vae ({inputs.vae.name})", f"key {key} has shape {list(shape)} but the "
                                                              f"model's VAE has {list(inputs.a.shape(s.key))}")
        if target is not None and "model" in s.key and dtype in FLOATS:
            dtype = target
        spec.append((s.key, dtype, shape))
    return spec


def _listing(weights) -> Optional[str]:
    return ",".join(str(x) for x in weights.as_list()) if weights is not None else None


def display_name(plan: Plan) -> str:
    """SuperMerger's merge name, from the weights the plan really used."""
    recipe, wa, wb = plan.recipe, plan.weights_alpha, plan.weights_beta
    return merge_name(plan.mode, recipe.calcmode, recipe.model_a, recipe.model_b, recipe.model_c or recipe.model_a,
                      wa.base if wa else recipe.alpha, wb.base if wb else recipe.beta, _listing(wa),
                      _listing(wb) if wa else None)


def name_tag(recipe: Recipe) -> str:
    """8 hex digits for what SuperMerger's merge name does not show (elemental rules, Include/Exclude, Adjust,
    the dice and its seed, old calc), so merges that differ only there get different automatic file names;
    "" when the recipe uses none of it."""
    hidden = {"elemental": recipe.elemental, "include_exclude": recipe.include_exclude
              if recipe.include_exclude.get("mode", "off") != "off" else None, "adjust": recipe.adjust,
              "dice": recipe.dice, "use_old_calc": recipe.use_old_calc}
    hidden = {k: v for k, v in hidden.items() if v}
    if not hidden:
        return ""
    hidden["seed"] = recipe.seed
    return hashlib.sha256(json.dumps(hidden, sort_keys=True).encode()).hexdigest()[:8]


def build_metadata(plan: Plan, inputs: Inputs) -> dict:
    """safetensors metadata: our full recipe (reproduces the merge) plus SuperMerger's own fields."""
    recipe = plan.recipe
    models = {}
    hashes = {}
    for role, src in (("a", inputs.a), ("b", inputs.b), ("c", inputs.c if inputs.c is not None else inputs.a)):
        if getattr(src, "path", None) is not None:
            digest = sha256(src.path)
            hashes[role] = digest
            models[digest] = {"name": src.name, "legacy_hash": legacy_hash(src.path)}
    wa, wb = plan.weights_alpha, plan.weights_beta
    inex = recipe.include_exclude
    sm_recipe = {
        "type": "sd-webui-supermerger",
        "weights_alpha": list(wa.values) if wa else None,
        "weights_beta": list(wb.values) if wb else None,
        "weights_alpha_orig": _listing(wa),
        "weights_beta_orig": _listing(wb),
        "model_a": hashes.get("a"), "model_b": hashes.get("b"), "model_c": hashes.get("c"),
        "base_alpha": wa.base if wa else recipe.alpha,
        "base_beta": wb.base if wb else recipe.beta,
        "mode": plan.mode, "mbw": wa is not None,
        "elemental_merge": recipe.elemental, "calcmode": recipe.calcmode,
        inex["mode"].capitalize(): inex["blocks"] + inex["elements"],
    }
    return {"format": "pt", "sd_merge_recipe": json.dumps(sm_recipe), "sd_merge_models": json.dumps(models),
            "supermerger_recipe": recipe.to_json(indent=None), "supermerger_name": display_name(plan)}


def write_elist(plan: Plan, path) -> Path:
    """The per-key α/β list (SuperMerger's E-list, SPEC §8.6) as CSV rows `key,alpha,beta`."""
    return write_csv(path, plan.elist())


def merge_to_dict(recipe: Recipe, inputs: Inputs, *, plan: Optional[Plan] = None, run: Optional[RunContext] = None,
                  device: str = "cpu") -> MergeResult:
    """Run the merge into a new dict. Unchanged keys hold model A's tensors (views, never copies)."""
    plan = plan or make_plan(recipe, inputs)
    out = {}
    t0 = time.perf_counter()
    run_plan(plan, inputs, lambda step, t: out.__setitem__(step.key, t), run=run, device=device)
    return MergeResult(plan, tensors=out, seconds=time.perf_counter() - t0, notes=list(plan.notes))


def merge_to_file(recipe: Recipe, inputs: Inputs, out_path, options: Optional[SaveOptions] = None, *,
                  plan: Optional[Plan] = None, run: Optional[RunContext] = None, device: str = "cpu") -> MergeResult:
    """Stream the merge into a safetensors file (atomically; never over an existing file without
    `options.overwrite`). `plan`, if given, must come from `make_plan` with the same options."""
    options = options or SaveOptions()
    plan = plan or make_plan(recipe, inputs, options)
    metadata = build_metadata(plan, inputs) if options.metadata else {"format": "pt"}
    return _stream_to_file(plan, inputs, out_path, options, metadata, run, device)


def _stream_to_file(plan: Plan, inputs: Inputs, out_path, options: SaveOptions, metadata: dict,
                    run: Optional[RunContext] = None, device: str = "cpu") -> MergeResult:
    spec = output_spec(plan, inputs, options.dtype)
    dtypes = {k: d for k, d, _ in spec}
    t0 = time.perf_counter()
    with SafetensorsWriter(out_path, spec, metadata, overwrite=options.overwrite) as writer:
        run_plan(plan, inputs, lambda step, t: writer.write(step.key, t.to(dtypes[step.key])),
                 run=run, device=device)
    return MergeResult(plan, path=Path(out_path), seconds=time.perf_counter() - t0, notes=list(plan.notes))


def copy_plan(recipe: Recipe, family, steps: list) -> Plan:
    """A plan that writes one model's keys as they are (or with `steps`' Adjust)."""
    return Plan(recipe=recipe, family=family, mode="weight_sum", calcmode=calcmodes.get("normal"), steps=steps)


def adjust_to_file(model, adjust: str, out_path, options: Optional[SaveOptions] = None, *,
                   run: Optional[RunContext] = None) -> MergeResult:
    """Adjust (SPEC §6) one model on its own: the six Adjust keys changed, everything else copied."""
    options = options or SaveOptions()
    src = open_model(model)
    try:
        info = ModelInfo.of(src)
        family = detect_family({"a": info})
        recipe = Recipe(model_a=str(model), model_b=str(model), adjust=adjust)
        plan = copy_plan(recipe, family, adjust_plan(family, info.keys, adjust))
        metadata = dict(src.metadata(), supermerger_adjust=adjust) if options.metadata else {"format": "pt"}
        return _stream_to_file(plan, Inputs(src, src), out_path, options, metadata, run)
    finally:
        src.close()


def save_state_dict(tensors: dict, out_path, options: Optional[SaveOptions] = None, metadata: Optional[dict] = None,
                    *, run: Optional[RunContext] = None) -> MergeResult:
    """Write a checkpoint-format state dict with the save options (see `save_source`)."""
    return save_source(DictSource(tensors, "model"), out_path, options, metadata, run=run)


def save_source(src, out_path, options: Optional[SaveOptions] = None, metadata: Optional[dict] = None, *,
                family=None, run: Optional[RunContext] = None) -> MergeResult:
    """Write a model in checkpoint key space (a source: e.g. a model ComfyUI holds, its weights computed key by
    key) with the save options: precision, prune, reset CLIP ids; atomically, never over an existing file without
    `options.overwrite`. `family` is detected from the keys unless given."""
    options = options or SaveOptions()
    if options.bake_vae:
        raise MergeError("bake_vae", "connect the VAE to bake in instead")
    info = ModelInfo.of(src)
    plan = copy_plan(Recipe(model_a="model", model_b="model"), family or detect_family({"a": info}),
                     [Step(k, KEEP) for k in info.keys])
    plan = with_save_options(plan, Inputs(src, src), options)
    return _stream_to_file(plan, Inputs(src, src), out_path, options, metadata or {"format": "pt"}, run)
