"""The four merge modes of SPEC §1 as per-tensor formulas (calcmode `normal`).

Precision follows SuperMerger 0b1c491 exactly where its inputs share a dtype: weight sum and sum twice run
in f32, add difference and triple sum in the inputs' own dtype. Mixed dtypes (which crash SuperMerger's
native paths, SPEC §17 #2) run in f32. The executor casts every result back to model A's dtype.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .kernels import elementwise
from .recipe import MODES

F32 = torch.float32


def _common(*ts) -> torch.dtype:
    """SuperMerger's native-dtype paths need equal dtypes; mixed inputs (which crash it) run in f32."""
    return ts[0].dtype if all(t.dtype == ts[0].dtype for t in ts) else F32


def weight_sum(a: Tensor, b: Tensor, c, alpha: float, beta: float, old_calc: bool) -> Tensor:
    if alpha == 0:
        return a
    if alpha == 1:
        return b
    if old_calc:
        return (1 - alpha) * a + alpha * b
    return elementwise(lambda x, y: torch.lerp(x, y, alpha, out=x), a, b, work=F32, out=a.dtype,
                       whole=lambda x, y: torch.lerp(x, y, alpha))


def add_difference(a: Tensor, d: Tensor, c, alpha: float, beta: float, old_calc: bool) -> Tensor:
    # `d` is B − C (Stage 0). SuperMerger's lerp(A, A + α·D, 1.0) is exactly A + α·D, rounded after
    # each of the two operations in the inputs' dtype.
    def op(x, y):
        torch.mul(y, alpha, out=y)
        return torch.add(x, y, out=x)
    return elementwise(op, a, d, work=_common(a, d), out=a.dtype, whole=lambda x, y: x + y * alpha)


def triple_sum(a: Tensor, b: Tensor, c: Tensor, alpha: float, beta: float, old_calc: bool) -> Tensor:
    work = _common(a, b, c)
    if old_calc or alpha + beta == 0:
        a, b, c = a.to(work), b.to(work), c.to(work)
        return (1 - alpha - beta) * a + alpha * b + beta * c

    def op(x, y, z):
        torch.lerp(y, z, beta / (alpha + beta), out=y)
        return torch.lerp(x, y, alpha + beta, out=x)
    return elementwise(op, a, b, c, work=work, out=a.dtype,
                       whole=lambda x, y, z: torch.lerp(x, torch.lerp(y, z, beta / (alpha + beta)), alpha + beta))


def sum_twice(a: Tensor, b: Tensor, c: Tensor, alpha: float, beta: float, old_calc: bool) -> Tensor:
    if old_calc:
        x = (1 - alpha) * a + alpha * b
        return (1 - beta) * x + beta * c
    def op(x, y, z):
        torch.lerp(x, y, alpha, out=x)
        return torch.lerp(x, z, beta, out=x)

    def whole(x, y, z):
        t = torch.lerp(x, y, alpha)
        return torch.lerp(t, z, beta, out=t)
    return elementwise(op, a, b, c, work=F32, out=a.dtype, whole=whole)


FORMULAS = {"weight_sum": weight_sum, "add_difference": add_difference,
            "triple_sum": triple_sum, "sum_twice": sum_twice}
assert tuple(FORMULAS) == MODES

# Which models each mode reads, and whether C must hold a key for it to merge (SPEC §0 step 25).
USES_C = {"weight_sum": False, "add_difference": True, "triple_sum": True, "sum_twice": True}
USES_BETA = {"weight_sum": False, "add_difference": False, "triple_sum": True, "sum_twice": True}


def difference(b: Tensor, c) -> Tensor:
    """Stage 0 of add difference: (B − C) in f32, stored in B's dtype; zeros where C lacks the key. An
    inpainting B against a normal C keeps the channels they share."""
    if c is None:
        return torch.zeros_like(b)
    if b.shape != c.shape and b.dim() >= 2 and c.dim() >= 2:
        n = min(b.shape[1], c.shape[1])
        b, c = b[:, :n], c[:, :n]
    return elementwise(lambda x, y: torch.sub(x, y, out=x), b, c, work=F32, out=b.dtype, whole=torch.sub)


def stage0_applies(key: str) -> bool:
    """SuperMerger forms B − C only for B's model weights and biases; other keys keep B's values."""
    return "model" in key and ("weight" in key or "bias" in key)
