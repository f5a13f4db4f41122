"""Merging LoRAs into one LoRA (SPEC §13.3, §13.3b, §13.4, §13.8).

- `merge_same_rank`: kohya's factor sum. Every `up`/`down` factor is scaled by `√(alpha_i/base_alpha)·r`
  (same to Strength: `√|r|`, the down factor takes the sign of r), so one LoRA's effect is `r²·ΔW`
  (`r·ΔW` with same to Strength), and several LoRAs add cross terms, as in kohya's script.
- `merge_redecompose`: the weighted sum of the LoRAs' products `Σ r·ΔW·alpha/rank` (linear in r;
  same to Strength: `√|r|·sign`), decomposed again by SVD to one rank, clamped at the 0.99 quantile.
- `merge_lycoris`: a single LyCORIS file with block weights: every factor tensor × `√|r|`.
- `merge_loras`: picks one of them as SuperMerger does for a rank choice `no`, `auto` or a number.

`r` is the entry's ratio for the module's block (names.block_index).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch

from ..atomic import refuse_existing
from ..errors import MergeError, MergeInterrupted
from ..families import FAMILIES
from . import names
from .decompose import CLAMP_QUANTILE, factored_svd_factors, svd_factors
from .files import LoraFile, detect_family

SKIPPED_PARTS = ("alpha", "dora_scale", "reshape")  # never scaled; DoRA scales are dropped by a merge


@dataclass
class Merged:
    tensors: dict
    family: str
    rank: Optional[int] = None  # the rank of a re-decomposed merge
    notes: list = field(default_factory=list)


def _ratio(weights, module: str, family: str) -> float:
    return float(weights[names.block_index(module, family)])


def _signed_sqrt(r: float):
    """same to Strength: (√|r|, sign of r), with r = 0 → (0, −1) as SuperMerger has it."""
    return (math.sqrt(r), 1.0) if r > 0 else (math.sqrt(abs(r)), -1.0)


def _check(cancel):
    if cancel is not None and cancel():
        raise MergeInterrupted()


def _lora_modules(lora: LoraFile, where: str) -> list:
    other = sorted({m.kind for m in lora.modules.values()} - {"lora"})
    if other:
        raise MergeError(where, f"{lora.name} has {'/'.join(other)} modules (LyCORIS); LyCORIS files can "
                                "only be merged alone (one entry), not with other LoRAs")
    return sorted(lora.modules)


def merge_same_rank(inputs: list, family: str, same_to_strength: bool = False, dtype=torch.float32,
                    device="cpu", cancel=None, where: str = "loras") -> Merged:
    """SPEC §13.3: `inputs` = [(LoraFile, 26/61 block ratios)], in order."""
    merged, base_alphas, base_ranks = {}, {}, {}
    for lora, weights in inputs:
        for module in _lora_modules(lora, where):
            _check(cancel)
            if "mid" in lora.modules[module].keys:
                raise MergeError(where, f"{lora.name}: module {module} is a LoCon with CP decomposition "
                                        "(lora_mid); merge it with a rank (auto or a number)")
            rank = lora.rank(module)
            first_rank = base_ranks.setdefault(module, rank)
            if rank != first_rank:
                raise MergeError(where, f"{lora.name}: module {module} has rank {rank}, an earlier LoRA has rank "
                                        f"{first_rank}; LoRAs of different ranks need a rank choice (auto or a "
                                        "number)")
            alpha = lora.alpha(module)
            alpha = float(rank) if alpha is None else alpha
            base = base_alphas.setdefault(module, alpha)
            r = _ratio(weights, module, family)
            sign = 1.0
            if same_to_strength:
                r, sign = _signed_sqrt(r)
            scale = math.sqrt(alpha / base) * r
            for part, factor in (("up", scale), ("down", scale * sign)):
                key = lora.modules[module].keys[part]
                t = lora.tensor(module, part, dtype, device) * factor
                if key in merged:
                    if merged[key].shape != t.shape:
                        raise MergeError(where, f"{lora.name}: module {module} has shape {list(t.shape)}, an "
                                                f"earlier LoRA {list(merged[key].shape)}; the LoRAs are for "
                                                "different models")
                    merged[key] += t
                else:
                    merged[key] = t
    for module, alpha in base_alphas.items():
        merged[module + ".alpha"] = torch.tensor(alpha)
    return Merged(merged, family)


def _product_factors(lora: LoraFile, module: str, dtype, device):
    """ΔW of a LoRA module as (a, b, shape) with ΔW = (a @ b).reshape(shape), alpha/rank included; for a
    CP (lora_mid) module `b` is None and `a` is the dense ΔW."""
    up = lora.tensor(module, "up", dtype, device)
    down = lora.tensor(module, "down", dtype, device)
    rank = down.shape[0]
    alpha = lora.alpha(module)
    scale = (alpha / rank) if alpha is not None else 1.0
    shape = (up.shape[0],) + tuple(down.shape[1:])
    mid = lora.tensor(module, "mid", dtype, device)
    if mid is not None:
        dense = torch.einsum("m n ..., i m, n j -> i j ...", mid, up.reshape(up.shape[0], -1),
                             down.reshape(rank, -1))
        return dense.reshape(shape[0], -1) * scale, None, tuple(dense.shape)
    return up.reshape(up.shape[0], -1) * scale, down.reshape(rank, -1), shape


def merge_redecompose(inputs: list, family: str, rank: int, same_to_strength: bool = False, dtype=torch.float32,
                      device="cpu", clamp: Optional[float] = CLAMP_QUANTILE, progress: Optional[Callable] = None,
                      cancel=None, where: str = "loras") -> Merged:
    """SPEC §13.3b: Σ r·ΔW per module, re-decomposed to `rank` (alpha = rank). A module whose smaller
    dimension is below `rank` gets that smaller rank (SuperMerger writes an invalid file there)."""
    modules = sorted(set().union(*(_lora_modules(lora, where) for lora, _ in inputs)))
    out, notes, clamped = {}, [], []
    for i, module in enumerate(modules):
        _check(cancel)
        a_parts, b_parts, dense, shape = [], [], None, None
        for lora, weights in inputs:
            if module not in lora.modules:
                continue
            a, b, s = _product_factors(lora, module, torch.float32, device)
            if shape is not None and s != shape:
                raise MergeError(where, f"{lora.name}: module {module} has shape {list(s)}, an earlier LoRA "
                                        f"{list(shape)}; the LoRAs are for different models")
            shape = s
            r = _ratio(weights, module, family)
            if same_to_strength:
                root, sign = _signed_sqrt(r)
                r = root * sign
            if b is None:
                dense = a * r if dense is None else dense + a * r
            else:
                a_parts.append(a * r)
                b_parts.append(b)
        if a_parts and dense is not None:
            dense = dense + torch.cat(a_parts, 1) @ torch.cat(b_parts, 0)
            a_parts = []
        out_dim, in_dim = shape[0], math.prod(shape[1:])
        r_mod = min(rank, out_dim, in_dim)
        if r_mod < rank:
            clamped.append(module)
        if dense is not None:
            up, down = svd_factors(dense, r_mod, clamp)
        else:
            up, down = factored_svd_factors(torch.cat(a_parts, 1), torch.cat(b_parts, 0), r_mod, clamp)
        if len(shape) == 4:
            up = up.reshape(out_dim, r_mod, 1, 1)
            down = down.reshape(r_mod, *shape[1:])
        out[module + ".lora_up.weight"] = up.to(dtype).contiguous()
        out[module + ".lora_down.weight"] = down.to(dtype).contiguous()
        out[module + ".alpha"] = torch.tensor(float(r_mod))
        if progress is not None:
            progress(i + 1, len(modules), "re-decompose")
    if clamped:
        notes.append(f"{len(clamped)} modules are smaller than rank {rank} and got their largest possible rank "
                     f"(e.g. {clamped[0]})")
    return Merged(out, family, rank, notes)


# The factors that carry r's sign (and, with same to Strength, r itself): one factor of a product (the
# first of these present), or every part of a full/norm module (weight and bias are separate products).
_ONE_FACTOR = {"lora": ("down",), "loha": ("w1a",), "lokr": ("w1", "w1a")}
_EVERY_PART = {"full": ("diff", "diff_b"), "norm": ("w_norm", "b_norm")}


def _carriers(mod) -> set:
    if mod.kind in _EVERY_PART:
        return {p for p in _EVERY_PART[mod.kind] if p in mod.keys}
    return {next(p for p in _ONE_FACTOR[mod.kind] if p in mod.keys)}


def merge_lycoris(lora: LoraFile, weights, family: str, same_to_strength: bool = False, dtype=torch.float32,
                  device="cpu", cancel=None) -> Merged:
    """SPEC §13.4: one LyCORIS file with block weights. Every factor tensor is scaled by `√|r|` (LoHa's
    four factors give `r²`, so only ratios 0 and 1 are exact) and a negative ratio flips one factor per
    product. With same to Strength the effect is exactly `r·ΔW`: one factor per product is scaled by r."""
    out = {}
    for module, mod in sorted(lora.modules.items()):
        _check(cancel)
        if mod.kind == "oft":
            raise MergeError(f"LoRA {lora.name}", f"module {module} is OFT, which block weights cannot scale")
        r = _ratio(weights, module, family)
        carriers = _carriers(mod)
        for part, key in mod.keys.items():
            if part in SKIPPED_PARTS:
                out[key] = lora.tensor(module, part, None, device)
                continue
            if same_to_strength:
                factor = r if part in carriers else 1.0
            else:
                factor = math.sqrt(abs(r)) * (-1.0 if r < 0 and part in carriers else 1.0)
            out[key] = lora.tensor(module, part, dtype, device) * factor
    return Merged(out, family)


def family_of(loras: list, where: str = "loras") -> str:
    """The one model family of all LoRAs (SD1 and SD2 share their block layout)."""
    found = [(lora.name, detect_family(lora)) for lora in loras]
    first = found[0]
    for name, fam in found[1:]:
        if FAMILIES[fam].lora_kind != FAMILIES[first[1]].lora_kind:
            raise MergeError(where, f"{first[0]} is a {first[1].upper()} LoRA and {name} a {fam.upper()} LoRA; "
                                    "they cannot be merged")
    return first[1]


def parse_rank(value, where: str = "rank"):
    """'no', 'auto' or a positive whole number (SPEC §13.1's 'remake dimension')."""
    text = str(value).strip().lower()
    if text in ("no", "auto"):
        return text
    try:
        rank = int(text)
    except ValueError:
        raise MergeError(where, f"'{value}' is not no, auto or a whole number") from None
    if rank <= 0:
        raise MergeError(where, f"{rank}: a rank is a positive whole number (or no / auto)")
    return rank


def merge_loras(inputs: list, rank="no", same_to_strength: bool = False, dtype=torch.float32, device="cpu",
                clamp: Optional[float] = CLAMP_QUANTILE, progress=None, cancel=None, where: str = "loras") -> Merged:
    """SPEC §13.3's choice: `inputs` = [(LoraFile, LoraEntry)].

    A LyCORIS file merges alone (§13.4). A rank number re-decomposes to it; `auto` re-decomposes to the
    largest rank when the LoRAs' ranks differ (or a module is a CP LoCon), else merges plainly; `no`
    merges plainly (equal ranks needed).
    """
    rank = parse_rank(rank)
    loras = [lora.require_modules(where) for lora, _ in inputs]
    family = family_of(loras, where)
    weighted = [(lora, entry.weights_for(family, where)) for lora, entry in inputs]
    if any(lora.kinds - {"lora"} for lora in loras):
        if len(inputs) != 1:
            bad = next(lora.name for lora in loras if lora.kinds - {"lora"})
            raise MergeError(where, f"{bad} is a LyCORIS file (LoHa/LoKr/…); LyCORIS files can only be merged "
                                    "alone (one entry), as in SuperMerger")
        return merge_lycoris(loras[0], weighted[0][1], family, same_to_strength, dtype, device, cancel)
    if rank == "auto":
        ranks = {lora.rank(m) for lora in loras for m in lora.modules}
        per_file = [{lora.rank(m) for m in lora.modules} for lora in loras]
        cp = any("mid" in m.keys for lora in loras for m in lora.modules.values())
        if cp or any(r != per_file[0] for r in per_file[1:]):
            rank = max(ranks)
        else:
            rank = "no"
    if rank == "no":
        return merge_same_rank(weighted, family, same_to_strength, dtype, device, cancel, where)
    return merge_redecompose(weighted, family, rank, same_to_strength, dtype, device, clamp, progress, cancel, where)


def default_name(list_text: str) -> str:
    """SuperMerger's automatic name: the list text with ',' → '+' and ':' → '_' (new lines count as ',')."""
    text = ",".join(t.strip() for t in list_text.replace("\n", ",").split(",") if t.strip())
    return text.replace(",", "+").replace(":", "_").replace("/", "_").replace("\\", "_").replace(" ", "")


def merge_to_file(inputs: list, out_path, rank="no", same_to_strength: bool = False,
                  metadata_mode: str = "create new", precision: str = "fp16", overwrite: bool = False,
                  calc_dtype=torch.float32, device="cpu", clamp: Optional[float] = CLAMP_QUANTILE, progress=None,
                  cancel=None, where: str = "loras"):
    """Merge `inputs` [(LoraFile, LoraEntry)] and write the LoRA with its metadata. Returns (path, Merged)."""
    from pathlib import Path

    from . import metadata as meta
    from .files import for_saving, precision_dtype, save_lora

    out_path = Path(out_path)
    dtype = precision_dtype(precision, "save precision")
    if metadata_mode not in meta.MODES:
        raise MergeError("metadata", f"'{metadata_mode}' is not one of: {', '.join(meta.MODES)}")
    refuse_existing(out_path, overwrite)  # checked again when writing; failing early saves the work
    merged = merge_loras(inputs, rank, same_to_strength, calc_dtype, device, clamp, progress, cancel, where)
    tensors = for_saving(merged.tensors, dtype)
    module = "networks.lora" if all(lora.kinds <= {"lora"} for lora, _ in inputs) else "lycoris.kohya"
    recorded = [meta.input_metadata(lora.metadata(), entry) for lora, entry in inputs]
    metadata = meta.merged_metadata(recorded, metadata_mode, out_path.stem, precision, merged.family, module,
                                    merged.rank)
    save_lora(tensors, out_path, meta.with_hashes(metadata, tensors), overwrite)
    return out_path, merged
