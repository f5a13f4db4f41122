from . import register


def _bounds(n: int, alpha: float, beta: float):
    """Slice ends by Python int() truncation, as SuperMerger computes them (SPEC §2.7)."""
    if alpha + beta <= 1:
        return int(n * beta), int(n * (alpha + beta)), False
    return int(n * (alpha + beta - 1)), int(n * beta), True


def _swap_slice(a, b, axis, n, p):
    start, end, inverted = _bounds(n, p.alpha, p.beta)
    index = (slice(None),) * axis + (slice(start, end),)
    if inverted:  # B, with the slice taken from A
        out = b.clone()
        out[index] = a[index].to(out.dtype)
    else:  # A, with the slice taken from B
        out = a.clone()
        out[index] = b[index].to(out.dtype)
    return out


@register("tensor", modes=("weight_sum",), uses_beta=True, min_dim=1)
def tensor(a, b, c, p):
    return _swap_slice(a, b, 0, a.shape[0], p)


@register("tensor2", modes=("weight_sum",), uses_beta=True, min_dim=1)
def tensor2(a, b, c, p):
    if a.dim() == 1:
        return _swap_slice(a, b, 0, a.shape[0], p)
    # Indices count along dim 1 only when it is wide; otherwise they come from dim 0 yet still cut dim 1.
    n = a.shape[1] if a.shape[1] > 100 else a.shape[0]
    return _swap_slice(a, b, 1, n, p)
