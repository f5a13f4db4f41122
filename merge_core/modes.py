"""The four merge modes of SPEC §1 as per-tensor formulas (calcmode `normal`).

Precision follows SuperMerger 0b1c491 exactly where its inputs share a dtype: weight sum and sum twice run
in f32, add difference and triple sum in the inputs' own dtype. Mixed dtypes (which crash SuperMerger's
native paths, SPEC §17 #2) run in f32. The executor casts every result back to model A's dtype.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .recipe import MODES

F32 = torch.float32


def weight_sum(a: Tensor, b: Tensor, c, alpha: float, beta: float, old_calc: bool) -> Tensor:
    if alpha == 0:
        return a
    if alpha == 1:
        return b
    if old_calc:
        return (1 - alpha) * a + alpha * b
    return torch.lerp(a.to(F32), b.to(F32), alpha)


def add_difference(a: Tensor, d: Tensor, c, alpha: float, beta: float, old_calc: bool) -> Tensor:
    # `d` is B − C (Stage 0). SuperMerger's lerp(A, A + α·D, 1.0) is exactly A + α·D.
    if a.dtype != d.dtype:
        return a.to(F32) + alpha * d.to(F32)
    return a + alpha * d


def triple_sum(a: Tensor, b: Tensor, c: Tensor, alpha: float, beta: float, old_calc: bool) -> Tensor:
    if not (a.dtype == b.dtype == c.dtype):
        a, b, c = a.to(F32), b.to(F32), c.to(F32)
    if old_calc or alpha + beta == 0:
        return (1 - alpha - beta) * a + alpha * b + beta * c
    return torch.lerp(a, torch.lerp(b, c, beta / (alpha + beta)), alpha + beta)


def sum_twice(a: Tensor, b: Tensor, c: Tensor, alpha: float, beta: float, old_calc: bool) -> Tensor:
    if old_calc:
        x = (1 - alpha) * a + alpha * b
        return (1 - beta) * x + beta * c
    return torch.lerp(torch.lerp(a.to(F32), b.to(F32), alpha), c.to(F32), beta)


FORMULAS = {"weight_sum": weight_sum, "add_difference": add_difference,
            "triple_sum": triple_sum, "sum_twice": sum_twice}
assert tuple(FORMULAS) == MODES

# Which models each mode reads, and whether C must hold a key for it to merge (SPEC §0 step 25).
USES_C = {"weight_sum": False, "add_difference": True, "triple_sum": True, "sum_twice": True}
USES_BETA = {"weight_sum": False, "add_difference": False, "triple_sum": True, "sum_twice": True}


def difference(b: Tensor, c) -> Tensor:
    """Stage 0 of add difference: (B − C) in f32, stored in B's dtype; zeros where C lacks the key."""
    if c is None:
        return torch.zeros_like(b)
    return (b.to(F32) - c.to(F32)).to(b.dtype)
