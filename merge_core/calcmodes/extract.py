import torch
from torch.nn.functional import cosine_similarity

from . import register
from ..kernels import by_rows, serial


def _check(alpha, beta, gamma):
    if not 0 <= alpha <= 1:
        return f"extract needs 0 ≤ alpha ≤ 1 (alpha chooses between B−A at 0 and C−A at 1), got {alpha}"
    if not 0 <= beta <= 1:
        return f"extract needs 0 ≤ beta ≤ 1 (0 keeps similar features, 1 dissimilar ones), got {beta}"
    if gamma < 0:
        return f"extract needs gamma ≥ 0, got {gamma}"
    return None


def _extract(a, b, c, alpha, beta, gamma):
    base = a.float()
    da = b.float() - base
    db = c.float() - base
    cos = cosine_similarity(da, db, -1).clamp(-1, 1).unsqueeze(-1)
    d = serial(lambda x: x ** gamma, (cos + 1) / 2)
    out = torch.lerp(da, db, alpha, out=da).mul_(torch.lerp(d, 1 - d, beta))  # in place: no more buffers
    return torch.add(base, out, out=out)


@register("extract", modes=("add_difference",), reads_c=True, forced_mode="add_difference",
          uses_beta=True, uses_gamma=True, check=_check, min_dim=1)
def extract(a, b, c, p):
    """A + lerp(B−A, C−A, α) · lerp(d, 1−d, β), d = ((cos + 1)/2)^γ row-wise on the last axis (SPEC §2.6)."""
    # A row's result depends on that row alone: in blocks of rows its dozen temporaries stay in cache (a conv
    # weight's rows are 3 wide, and allocating and streaming full-size temporaries cost more than the maths).
    return by_rows(lambda x, y, z: _extract(x, y, z, p.alpha, p.beta, p.gamma), a, b, c, out=p.out)
