"""Best rank-r factors of a matrix, fast (SPEC §13.9's SVD step without the full decomposition; the
clamp that follows it is `decompose.clamp_factors`).

Kohya's extraction (and ComfyUI's `LoraSave`) computes a complete `torch.linalg.svd` of every weight
difference and then keeps r singular triplets. For r much smaller than the matrix, almost all of that
work is thrown away. Here a randomized range finder with power iterations (Halko, Martinsson & Tropp
2011) finds the dominant r-dimensional subspace from a handful of matrix products; the small projected
matrix is then decomposed exactly.

The number of power iterations adapts per matrix. After each one, the energy the best r directions of
the current subspace capture, Σ s̃ᵢ² (i ≤ r), is compared with the previous iteration's: it grows towards
the optimum Σ σᵢ² at a roughly geometric rate, which two successive gains estimate (from the second
iteration on: the first one's gain is dominated by the fast directions), and so estimate the gain still
to come. Iterations stop when that is below `TOLERANCE` of the energy the factors miss (‖M‖² − Σ s̃ᵢ²),
i.e. when more iterations could not lower the Frobenius error by more than ~0.15 %. The error then stays
within 1.01 × the full SVD's (≤ 1.003 × on every spectrum tried): tests check it against
`torch.linalg.svd` on flat, power-law, exponential and gapped spectra and Gaussian matrices, and the
benchmark on every layer of real-layout models.

Small matrices, and ranks that are a large share of the smaller side, go to the exact thin SVD, which is
then cheaper than the iterations. Long, narrow matrices go to the exact SVD through the eigenvectors of
their small Gram matrix, which a cost model (`_gram_is_cheaper`) finds cheaper than the iterations there.
Every route returns S in the up factor, as kohya does: the 0.99-quantile clamp that follows looks at both.
"""
from __future__ import annotations

from typing import Optional

import torch

MIN_OVERSAMPLE = 16  # extra directions beyond the rank (at least this, or half the rank): the subspace then
# converges in far fewer iterations, which costs less than the wider sketch
MAX_ITERATIONS = 12
TOLERANCE = 3e-3  # stop when the gain still to come is below this share of the missing energy
EXACT_BELOW = 192  # smaller side at most this: the exact thin SVD is as fast
EXACT_SHARE = 0.4  # rank + oversampling above this share of the smaller side: exact thin SVD
RANDOMIZED_PASSES = 10  # products with the matrix the randomized route typically makes (sketch, iterations)
GRAM_FLOAT64 = 2.0  # a float64 matrix product's cost in float32 ones
EIGH_COST = 4.0  # an s × s symmetric eigendecomposition's cost in s³ float32 multiply-adds


def _energy(bt: torch.Tensor, rank: int) -> float:
    """Σ of the `rank` largest squared singular values of `bt` (n × k): the top eigenvalues of its k × k Gram
    matrix, much cheaper than an SVD of bt."""
    b = bt.double()  # the gains compared are small differences of large sums
    return float(torch.linalg.eigvalsh(b.T @ b)[-rank:].sum())


def _converged(gain: float, previous_gain: Optional[float], missing: float) -> bool:
    """Whether the energy still to gain is a negligible share of the energy the factors miss.

    The captured energy converges geometrically; the ratio of two successive gains estimates the rate ρ,
    and the gain still to come is about gain·ρ/(1 − ρ) (Aitken). Stop when that is below `TOLERANCE` of
    the missing energy, i.e. the error is within √(1 + TOLERANCE) of what more iterations would reach."""
    if missing <= 0 or gain <= 1e-4 * missing:
        return True  # all energy captured, or (next to) no progress left
    if previous_gain is None or gain >= previous_gain:
        return False
    rate = gain / previous_gain
    return gain * rate / (1 - rate) <= TOLERANCE * missing


def _orthonormal(x: torch.Tensor) -> torch.Tensor:
    return torch.linalg.qr(x, mode="reduced").Q


def exact_factors(mat: torch.Tensor, rank: int) -> tuple:
    u, s, vh = torch.linalg.svd(mat, full_matrices=False)
    return u[:, :rank] * s[:rank], vh[:rank]


def gram_factors(mat: torch.Tensor, rank: int) -> tuple:
    """The exact truncated SVD through the eigenvectors of the s × s Gram matrix of the smaller side s
    (in float64, so squaring the singular values loses nothing that float32 factors could keep)."""
    m, n = mat.shape
    a = (mat if m <= n else mat.T).double()  # s × t, s ≤ t
    u = torch.linalg.eigh(a @ a.T).eigenvectors[:, a.shape[0] - rank:].flip(1)  # largest first ([-0:] is all)
    b = u.T @ a  # = diag(S)·Vh: rows orthogonal, their norms the singular values
    if m > n:  # mat = aᵀ ≈ bᵀ·uᵀ, and bᵀ = Vhᵀ·diag(S) is U·diag(S) of mat
        return b.T.to(mat.dtype), u.T.to(mat.dtype).contiguous()
    s = torch.linalg.vector_norm(b, dim=1)
    vh = b / s.clamp_min(torch.finfo(torch.float64).tiny)[:, None]
    return (u * s).to(mat.dtype), vh.to(mat.dtype)


def _gram_is_cheaper(m: int, n: int, k: int, rank: int) -> bool:
    """Cost model (in float32 multiply-adds, constants measured on a 2-core CPU): the Gram route costs a
    float64 product of the matrix with itself (`GRAM_FLOAT64`× a float32 one), the projection onto the
    r vectors and an s × s eigendecomposition; the randomized one about `RANDOMIZED_PASSES` products of the
    matrix with k columns. Long, narrow matrices (3×3 convs, feed-forward layers of narrow models) favour
    the Gram route; square ones the randomized."""
    s = min(m, n)
    gram = m * n * (GRAM_FLOAT64 * s + rank) + EIGH_COST * s ** 3
    return gram < RANDOMIZED_PASSES * m * n * k


def _sketch_width(m: int, n: int, rank: int) -> int:
    return min(rank + max(MIN_OVERSAMPLE, rank // 2), m, n)


def route(m: int, n: int, rank: int) -> str:
    """How an m × n matrix is factorised at `rank` (≤ min(m, n)): 'exact', 'gram' or 'randomized'."""
    k = _sketch_width(m, n, rank)
    if min(m, n) <= EXACT_BELOW or k > EXACT_SHARE * min(m, n):
        return "exact"
    return "gram" if _gram_is_cheaper(m, n, k, rank) else "randomized"


def low_rank(mat: torch.Tensor, rank: int, generator: Optional[torch.Generator] = None) -> tuple:
    """(up, down) with up = U·diag(S) (m × r) and down = Vh (r × n), the rank-r truncated SVD of the 2-D
    float matrix `mat` (r = min(rank, m, n)). `mat` is not modified."""
    m, n = mat.shape
    rank = min(rank, m, n)
    way = route(m, n, rank)
    if way == "exact":
        return exact_factors(mat, rank)
    if way == "gram":
        return gram_factors(mat, rank)
    k = _sketch_width(m, n, rank)
    # Work on the orientation whose sketch is the smaller matrix product.
    transposed = m < n
    a = mat.T if transposed else mat  # rows ≥ columns
    if generator is None:
        generator = torch.Generator(device=a.device).manual_seed(0)  # the same file every run
    omega = torch.randn(a.shape[1], k, generator=generator, device=a.device, dtype=a.dtype)
    q = _orthonormal(a @ omega)
    total = float(torch.linalg.vector_norm(a, dtype=torch.float64)) ** 2
    bt = a.T @ q  # (n × k) = (qᵀ a)ᵀ, the projection onto the current subspace
    captured = _energy(bt, rank)
    previous_gain = None
    for iteration in range(1, MAX_ITERATIONS + 1):
        q = _orthonormal(a @ _orthonormal(bt))
        bt = a.T @ q
        now = _energy(bt, rank)
        gain, captured = now - captured, now
        if _converged(gain, previous_gain, total - captured):
            break
        # The first iteration's gain mixes the fast directions in: the rate is read from later ones only.
        previous_gain = gain if iteration >= 2 else None
    # a ≈ q·qᵀa = q·btᵀ; decompose the small (k × n) btᵀ exactly.
    ub, s, vh = torch.linalg.svd(bt.T, full_matrices=False)
    u = q @ ub[:, :rank]
    s, vh = s[:rank], vh[:rank]
    if transposed:  # mat = aᵀ ≈ vhᵀ·s·uᵀ
        return vh.T * s, u.T.contiguous()
    return u * s, vh

