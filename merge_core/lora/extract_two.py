"""A LoRA from two LoRAs (SPEC §13.6, SuperMerger's "Extract from two LoRAs").

Each LoRA is first merged alone with its ratio and block weights (§13.3, so a ratio r acts as r², or as r
with same to Strength). Then every up and down factor of the first (`a`) is combined with the same factor
of the second (`b`, rescaled to a's alpha: × √(alpha_b/alpha_a)) by the extract calcmode without a base
(§2.6): `lerp(a, b, α)·lerp(d, 1 − d, β)` with `d = ((cos(a, b) + 1)/2)^γ`, the cosine taken row by row
along the last axis. α = 0 keeps a's factors, α = 1 takes b's; β = 0 keeps the features the two share,
β = 1 those they do not; γ sharpens the choice. The result has the first LoRA's alphas.

SuperMerger asserts 0 ≤ α, β ≤ 1 and γ ≥ 0 and fails deep inside on LoRAs whose modules or ranks differ;
here each is a clear error before any work.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import torch

from ..calcmodes import KeyArgs
from ..calcmodes.extract import extract as extract_calcmode
from ..atomic import refuse_existing
from ..errors import MergeError
from ..run import RunContext
from . import metadata as meta
from .files import for_saving, precision_dtype, save_lora
from .merge import Merged, family_of, merge_same_rank


def check_parameters(alpha: float, beta: float, gamma: float) -> None:
    if not 0 <= alpha <= 1:
        raise MergeError("alpha", f"{alpha}: alpha is between 0 (the first LoRA's factors) and 1 (the second's)")
    if not 0 <= beta <= 1:
        raise MergeError("beta", f"{beta}: beta is between 0 (keep what the LoRAs share) and 1 (keep what they "
                                 "do not)")
    if gamma < 0:
        raise MergeError("gamma", f"{gamma}: gamma (smoothness) is 0 or more")


def _module(key: str) -> str:
    return key[:key.rfind(".lora_")]


def _check_same_layout(a: Merged, b: Merged, names: tuple, where: str) -> None:
    ka = {k for k in a.tensors if not k.endswith(".alpha")}
    kb = {k for k in b.tensors if not k.endswith(".alpha")}
    if ka != kb:
        only_a, only_b = sorted(ka - kb), sorted(kb - ka)
        example = (f"{names[0]} has {_module(only_a[0])}, {names[1]} does not" if only_a
                   else f"{names[1]} has {_module(only_b[0])}, {names[0]} does not")
        raise MergeError(where, f"the two LoRAs must patch the same modules ({example}; {len(only_a)} + "
                                f"{len(only_b)} modules differ)")
    for k in sorted(ka):
        if a.tensors[k].shape != b.tensors[k].shape:
            raise MergeError(where, f"module {_module(k)} has shape {list(a.tensors[k].shape)} in {names[0]} and "
                                    f"{list(b.tensors[k].shape)} in {names[1]}: the two LoRAs must have the same "
                                    "ranks")


def combine(a: Merged, b: Merged, alpha: float, beta: float, gamma: float, names: tuple = ("LoRA 1", "LoRA 2"),
            run: Optional[RunContext] = None, where: str = "loras") -> dict:
    """The §13.6 combination of two merged LoRAs (tensors in float32)."""
    check_parameters(alpha, beta, gamma)
    _check_same_layout(a, b, names, where)
    out = {}
    for key, ta in (run or RunContext()).each(a.tensors.items(), "combine"):
        if key.endswith(".alpha"):
            out[key] = ta.clone()
            continue
        module = _module(key)
        alpha_a, alpha_b = float(a.tensors[module + ".alpha"]), float(b.tensors[module + ".alpha"])
        if alpha_a == 0 or alpha_b / alpha_a < 0:
            raise MergeError(where, f"module {module}: alphas {alpha_a:g} ({names[0]}) and {alpha_b:g} "
                                    f"({names[1]}) cannot be matched (zero, or of opposite signs)")
        scaled_b = b.tensors[key].float() * math.sqrt(alpha_b / alpha_a)
        args = KeyArgs(key=key, alpha=alpha, beta=beta, gamma=gamma, mode="add_difference")
        ta = ta.float()
        out[key] = extract_calcmode(torch.zeros_like(ta), ta, scaled_b, args)
    return out


def extract_two(inputs: list, alpha: float, beta: float, gamma: float, same_to_strength: bool = False,
                run: Optional[RunContext] = None, where: str = "loras") -> Merged:
    """`inputs` = two (LoraFile, LoraEntry): each merged alone (§13.3), then combined (§13.6)."""
    if len(inputs) != 2:
        raise MergeError(where, f"give exactly two LoRAs (name:ratio entries), not {len(inputs)}")
    check_parameters(alpha, beta, gamma)
    loras = [lora.require_modules(where) for lora, _ in inputs]
    family = family_of(loras, where)
    merged = [merge_same_rank([(lora, entry.weights_for(family, where))], family, same_to_strength,
                              run=run, where=where) for lora, entry in inputs]
    tensors = combine(merged[0], merged[1], alpha, beta, gamma, tuple(lora.name for lora in loras), run, where)
    return Merged(tensors, family)


def extract_two_to_file(inputs: list, out_path, alpha: float, beta: float, gamma: float,
                        same_to_strength: bool = False, metadata_mode: str = "create new", precision: str = "fp16",
                        overwrite: bool = False, run: Optional[RunContext] = None, where: str = "loras"):
    """Write the §13.6 LoRA of two (LoraFile, LoraEntry) with the §13.10 metadata. Returns (path, Merged)."""
    check_parameters(alpha, beta, gamma)
    out_path = Path(out_path)
    dtype = precision_dtype(precision, "save precision")
    if metadata_mode not in meta.MODES:
        raise MergeError("metadata", f"'{metadata_mode}' is not one of: {', '.join(meta.MODES)}")
    refuse_existing(out_path, overwrite)  # SuperMerger overwrites here; a user's file is kept unless asked
    merged = extract_two(inputs, alpha, beta, gamma, same_to_strength, run, where)
    tensors = for_saving(merged.tensors, dtype)
    recorded = [meta.input_metadata(lora.metadata(), entry) for lora, entry in inputs]
    metadata = meta.merged_metadata(recorded, metadata_mode, out_path.stem, precision, merged.family)
    save_lora(tensors, out_path, meta.with_hashes(metadata, tensors), overwrite)
    return out_path, merged
