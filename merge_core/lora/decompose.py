"""Low-rank factors of a weight difference by SVD, clamped as kohya does (SPEC §13.3b, §13.9).

`up = U[:, :r]·diag(S[:r])`, `down = Vh[:r]`; both are clamped to ±(the 0.99 quantile of their
concatenated values). A difference given as a sum of low-rank products (`factors`) is decomposed through
QR of the stacked factors, so the SVD runs on a small square core instead of the whole matrix: the same
singular values and vectors (up to each vector pair's sign), at a fraction of the cost.
"""
from __future__ import annotations

from typing import Optional

import torch

CLAMP_QUANTILE = 0.99


def quantile(values: torch.Tensor, q: float) -> torch.Tensor:
    """`torch.quantile(values, q)` (linear interpolation) for any size (torch.quantile stops at 2**24)."""
    flat = values.reshape(-1)
    n = flat.numel()
    pos = q * (n - 1)
    lo = int(pos)
    low = torch.kthvalue(flat, lo + 1).values
    if lo + 1 >= n or pos == lo:
        return low
    high = torch.kthvalue(flat, lo + 2).values
    return low + (high - low) * (pos - lo)


def clamp_factors(up: torch.Tensor, down: torch.Tensor, q: Optional[float] = CLAMP_QUANTILE):
    if q is None:
        return up, down
    hi = quantile(torch.cat([up.reshape(-1), down.reshape(-1)]), q)
    return up.clamp(-hi, hi), down.clamp(-hi, hi)


def svd_factors(matrix: torch.Tensor, rank: int, clamp: Optional[float] = CLAMP_QUANTILE):
    """(up, down) of rank `rank` for a 2-D matrix (out × in); `rank` ≤ min(out, in)."""
    u, s, vh = torch.linalg.svd(matrix, full_matrices=False)
    return clamp_factors(u[:, :rank] * s[:rank], vh[:rank], clamp)


def factored_svd_factors(a: torch.Tensor, b: torch.Tensor, rank: int, clamp: Optional[float] = CLAMP_QUANTILE):
    """(up, down) of rank `rank` for the matrix `a @ b` (a: out × k, b: k × in), without forming it when
    that is cheaper. Falls back to the full SVD when `rank` exceeds k or k is not small."""
    k = a.shape[1]
    if rank > k or k >= min(a.shape[0], b.shape[1]):
        return svd_factors(a @ b, rank, clamp)
    qa, ra = torch.linalg.qr(a)
    qb, rb = torch.linalg.qr(b.T)
    u, s, vh = torch.linalg.svd(ra @ rb.T)
    return clamp_factors((qa @ u[:, :rank]) * s[:rank], vh[:rank] @ qb.T, clamp)
