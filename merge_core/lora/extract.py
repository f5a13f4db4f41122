"""Extract a LoRA from two models (SPEC §13.9; from two LoRAs, §13.6, see extract_two.py).

From two models: for every layer kohya's extraction targets (`names.is_target`), `ΔW = α·W_A − β·W_B`
(model A the tuned one, model B the original) is factorised to rank `r = min(rank, out, in)`:
`up = U·S`, `down = Vh` (lowrank.low_rank: the truncated SVD without computing all of it), both clamped at
the 0.99 quantile of their values, 1×1 convs as (out, r, 1, 1)/(r, in, 1, 1), alpha = r (scale 1). With a
conv rank, the 3×3 convs of ResBlocks, Downsample and Upsample are extracted too at that rank (kohya's
LoCon `conv_dim`). The text encoder is left out when no module of it changed by more than 0.1 anywhere.

Inputs are any merge_core sources: memory-mapped files (`open_model`), dicts, or the in-graph models of
`nodes/patching.PatcherSource`. Weights are read one layer at a time; layers are factorised side by side by
the run context's workers (run.py) and written in order, straight into an atomic safetensors file (nothing is
left on error or interrupt, nothing overwritten without `overwrite`).
"""
from __future__ import annotations

import dataclasses
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch

from ..atomic import refuse_existing
from ..errors import MergeError
from ..families import Family
from ..plan import ModelInfo, detect_family
from ..run import RunContext
from . import names
from .decompose import CLAMP_QUANTILE, clamp_factors
from .lowrank import low_rank
from .metadata import HASH_PLACEHOLDERS, STABILITY, AddnetHasher, standard_metadata, with_hashes

DEFAULT_RANK = 128  # SuperMerger's dimension for "no" / "auto"
TEXT_ENCODER_SAME = 0.1  # kohya's MIN_DIFF: a text encoder whose every |ΔW| is at most this is left out
UNET = "model.diffusion_model."
# Kohya loads SD2's OpenCLIP without its last layer (SD2 reads the penultimate one), so it has no modules.
_SD2_UNUSED_TE_LAYER = re.compile(r"^lora_te_text_model_encoder_layers_23_")
_STYLES = ("auto", "kohya", "ldm")


@dataclass(frozen=True)
class ExtractOptions:
    rank: int = DEFAULT_RANK
    conv_rank: int = 0  # 0: transformer linears and 1×1 convs only (kohya's default); N: also 3×3 convs at rank N
    alpha: float = 1.0
    beta: float = 1.0
    save_dtype: torch.dtype = torch.float16
    clamp: Optional[float] = CLAMP_QUANTILE  # kohya clamps both factors at this quantile; None: no clamp
    v_prediction: Optional[bool] = None  # SD2 only: 768-v (True) or 512 epsilon (False); None: not recorded
    style: str = "auto"  # U-Net module names: kohya (diffusers paths for SD1/SD2), ldm, or auto

    def check(self) -> None:
        for name, value in (("rank", self.rank), ("conv_rank", self.conv_rank)):
            if not isinstance(value, int) or value < (1 if name == "rank" else 0):
                raise MergeError(name, f"{value!r}: a rank is a whole number of at least {int(name == 'rank')}")
        if self.style not in _STYLES:
            raise MergeError("style", f"'{self.style}' is not one of {', '.join(_STYLES)}")


@dataclass(frozen=True)
class Target:
    """One LoRA module: the checkpoint key it patches (a row third of it for OpenCLIP's fused q/k/v)."""

    module: str
    key: str
    part: Optional[int] = None

    @property
    def text_encoder(self) -> bool:
        return not self.key.startswith(UNET)

    def weight(self, source) -> torch.Tensor:
        w = source.get(self.key)
        if self.part is not None:
            third = w.shape[0] // 3
            w = w[self.part * third:(self.part + 1) * third]
        return w

    def shape(self, source) -> tuple:
        shape = tuple(source.shape(self.key))
        return shape if self.part is None else (shape[0] // 3,) + shape[1:]


@dataclass
class Extraction:
    family: Family
    targets: list  # the modules written
    text_encoder: bool  # whether the text encoder's modules are in the LoRA
    text_encoder_change: float  # the largest |ΔW| seen while checking it (0 without a text encoder)
    metadata: dict
    seconds: float = 0.0
    path: Optional[Path] = None
    tensors: Optional[dict] = None  # when no output file was asked for
    notes: list = field(default_factory=list)


def default_name(model_a: str, model_b: str) -> str:
    """SuperMerger's file name: `lora_<A>-<B>` (model names without folders and suffixes)."""
    stem = lambda n: Path(str(n)).stem  # noqa: E731
    return f"lora_{stem(model_a)}-{stem(model_b)}"


def released_layout(keys) -> bool:
    """Whether an SD1/SD2 U-Net has the released block layout (two ResBlocks per level, downsamplers at
    input blocks 3, 6, 9), the one kohya's diffusers-style module names assume."""
    keys = set(keys)
    return (all(f"{UNET}input_blocks.{i}.0.op.weight" in keys for i in (3, 6, 9))
            and f"{UNET}input_blocks.12.0.in_layers.0.weight" not in keys)


def _style(family: Family, keys, options: ExtractOptions, notes: list) -> str:
    if options.style != "auto":
        return options.style
    if family.name in ("sd1", "sd2") and not released_layout(keys):
        notes.append("the U-Net's block layout differs from the released SD1/SD2 one, so its modules are named "
                     "by their checkpoint (LDM) paths, which ComfyUI reads for any layout")
        return "ldm"
    return "kohya"


def plan_targets(a, b, family: Family, options: ExtractOptions, module_of: Optional[Callable] = None,
                 notes: Optional[list] = None) -> list:
    """The modules to extract, in model A's key order. `module_of(key)` names a checkpoint key's module
    when the caller knows better (ComfyUI's own text-encoder key map, see nodes/lora_extract.py); it
    returns None to fall back on `names`."""
    notes = notes if notes is not None else []
    keys = a.keys()
    style = _style(family, keys, options, notes)
    targets, missing_te = [], []
    for key in keys:
        module = module_of(key) if module_of is not None else None
        if module is None:
            if not names.is_target(key, family, options.conv_rank > 0):
                continue
            fused = names.fused_modules(key, family)
            modules = list(enumerate(fused)) if fused else [(None, names.module_name(key, family, style))]
        else:
            modules = [(None, module)]
        for part, module in modules:
            if family.name == "sd2" and _SD2_UNUSED_TE_LAYER.match(module):
                continue
            t = Target(module, key, part)
            if key not in b:
                if t.text_encoder:
                    missing_te.append(key)
                    continue
                raise MergeError(f"model B ({b.name})", f"has no {key}, which model A has: the two models must "
                                                        "have the same layers")
            if tuple(b.shape(key)) != tuple(a.shape(key)):
                raise MergeError(f"model B ({b.name})", f"{key} has shape {list(b.shape(key))} but model A's is "
                                                        f"{list(a.shape(key))}: the models are not of one kind")
            targets.append(t)
    if missing_te:
        targets = [t for t in targets if not t.text_encoder]
        notes.append(f"model B has no text encoder (e.g. no {missing_te[0]}): the LoRA covers the U-Net only")
    if not any(not t.text_encoder for t in targets):
        raise MergeError("models", "no layer LoRA extraction applies to (transformer linears and 1×1 convs) was "
                                   f"found in model A ({a.name}); is it a {family.label} checkpoint?")
    return targets


def _delta(target: Target, a, b, options: ExtractOptions) -> torch.Tensor:
    return options.alpha * target.weight(a).float() - options.beta * target.weight(b).float()


@torch.no_grad()
def text_encoder_change(targets: list, a, b, options: ExtractOptions, run: Optional[RunContext] = None) -> float:
    """The largest |ΔW| over the text encoder's modules, stopping at the first above the threshold."""
    largest = 0.0
    for t in (run or RunContext()).each(targets, "text encoder check"):
        largest = max(largest, float(_delta(t, a, b, options).abs().max()))
        if largest > TEXT_ENCODER_SAME:
            break
    return largest


def rank_of(target: Target, shape: tuple, options: ExtractOptions) -> int:
    conv3x3 = len(shape) == 4 and tuple(shape[2:]) != (1, 1)
    return min(options.conv_rank if conv3x3 else options.rank, shape[0], shape[1])


def factors(delta: torch.Tensor, rank: int, clamp: Optional[float] = CLAMP_QUANTILE) -> tuple:
    """(up, down) of one ΔW (linear or conv) at rank `rank` ≤ min(out, in), clamped, in the LoRA layout."""
    out_dim, in_dim = delta.shape[:2]
    up, down = low_rank(delta.reshape(out_dim, -1), rank)  # 1×1 and 3×3 convs: out × (in·kh·kw)
    if clamp is not None:
        up, down = clamp_factors(up, down, clamp)
    if delta.ndim == 4:
        up = up.reshape(out_dim, rank, 1, 1)
        down = down.reshape(rank, in_dim, *delta.shape[2:])
    return up, down


def _factorised(targets: list, a, b, options: ExtractOptions, run: RunContext) -> "iter":
    """(target, (up, down)) for every target, in order, factorised side by side by the run's workers (each
    layer's own seeded sketch, so the file is the same whatever the thread count)."""
    @torch.no_grad()  # in-graph weights are parameters that require grad; no graph is wanted (per thread)
    def one(t: Target):
        shape = t.shape(a)
        up, down = factors(_delta(t, a, b, options), rank_of(t, shape, options), options.clamp)
        a.release(t.key)
        b.release(t.key)
        return up.to(options.save_dtype).contiguous(), down.to(options.save_dtype).contiguous()

    return run.ordered(one, targets, "extract")


def extraction_metadata(family: Family, options: ExtractOptions, title: str, source: dict) -> dict:
    """kohya's extraction fields (ss_*, modelspec.*) plus what was extracted from what; the file's hashes
    are added when it is written."""
    meta = standard_metadata(family.name, title, dim=options.rank, alpha=options.rank,
                             v_prediction=options.v_prediction,
                             implementation=STABILITY if options.style == "ldm" else None)
    conv = {"conv_dim": options.conv_rank, "conv_alpha": options.conv_rank} if options.conv_rank else {}
    meta["ss_network_args"] = json.dumps(conv)
    meta["supermerger_lora_extract"] = json.dumps(source, ensure_ascii=False)
    return meta


def _entries(targets: list, a, options: ExtractOptions) -> list:
    out = []
    for t in targets:
        shape = t.shape(a)
        r = rank_of(t, shape, options)
        up = (shape[0], r, 1, 1) if len(shape) == 4 else (shape[0], r)
        down = (r,) + tuple(shape[1:])
        dtype = options.save_dtype
        out += [(t.module + ".alpha", dtype, ()), (t.module + ".lora_down.weight", dtype, down),
                (t.module + ".lora_up.weight", dtype, up)]
    return out


def extract_lora(a, b, options: ExtractOptions = ExtractOptions(), out=None, overwrite: bool = False,
                 title: Optional[str] = None, family: Optional[Family] = None, module_of: Optional[Callable] = None,
                 run: Optional[RunContext] = None) -> Extraction:
    """The LoRA α·A − β·B of two sources (SPEC §13.9), written to `out` (a .safetensors path) or, without
    `out`, returned as tensors. `run`: progress, cancel (MergeInterrupted) and threads."""
    from ..writer import SafetensorsWriter, tensor_bytes

    options.check()
    run = run or RunContext()
    t0 = time.perf_counter()
    if out is not None:
        out = Path(out)
        refuse_existing(out, overwrite)  # the writer checks again; failing now saves the work
    if family is None:
        family = detect_family({"a": ModelInfo.of(a), "b": ModelInfo.of(b)})
    notes: list = []
    options = dataclasses.replace(options, style=_style(family, a.keys(), options, notes))  # names decided once
    targets = plan_targets(a, b, family, options, module_of, notes)
    te = [t for t in targets if t.text_encoder]
    change = 0.0
    if te:
        change = text_encoder_change(te, a, b, options, run)
        if change <= TEXT_ENCODER_SAME:
            targets = [t for t in targets if not t.text_encoder]
            notes.append(f"the text encoder did not change (largest |ΔW| {change:.4g} ≤ {TEXT_ENCODER_SAME}): "
                         "the LoRA covers the U-Net only")
    title = title or (out.stem if out is not None else default_name(a.name, b.name))
    source = {"model_a": a.name, "model_b": b.name, "alpha": options.alpha, "beta": options.beta,
              "rank": options.rank, "conv_rank": options.conv_rank}
    metadata = extraction_metadata(family, options, title, source)
    result = Extraction(family, targets, any(t.text_encoder for t in targets), change, metadata, notes=notes)
    alphas = {t.module: torch.tensor(float(rank_of(t, t.shape(a), options)), dtype=options.save_dtype)
              for t in targets}

    def emit(write):
        for t, (up, down) in _factorised(targets, a, b, options, run):
            write(t.module + ".alpha", alphas[t.module])
            write(t.module + ".lora_down.weight", down)
            write(t.module + ".lora_up.weight", up)

    if out is None:
        tensors = {}
        emit(tensors.__setitem__)
        result.tensors = tensors
        result.metadata = with_hashes(metadata, tensors)  # as the file of these tensors would carry them
    else:
        # kohya's writer adds the hashes of the data it writes; the header goes first here, so it holds
        # placeholders of the hashes' length until the last tensor is written
        entries = _entries(targets, a, options)
        hasher = AddnetHasher(entries, metadata)
        with SafetensorsWriter(out, entries, {**metadata, **HASH_PLACEHOLDERS}, overwrite) as w:
            def write(key, tensor):
                w.write(key, tensor)
                hasher.update(tensor_bytes(tensor))

            emit(write)
            result.metadata = {**metadata, **hasher.hashes()}
            w.replace_metadata(result.metadata)
        result.path = out
    result.seconds = time.perf_counter() - t0
    return result
