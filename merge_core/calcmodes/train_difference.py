import torch

from . import KEEP, register
from ..kernels import elementwise

F32 = torch.float32


def _change(a, b, c, alpha: float):
    """1.8·α·(B−C)·|B−A|/(|B−C|+|B−A|) from f32 tensors, overwriting `b`: SuperMerger's op order with two steps
    folded away without changing a bit (scale = d1/(d0+d1) is never negative, so |scale| is scale, and
    sign(B−C)·scale·|B−C| is scale·(B−C): IEEE multiplication is exact in its sign)."""
    diff = b - c
    total = diff.abs()
    scale = b.sub_(a).abs_()
    total.add_(scale)
    scale.div_(total).masked_fill_(total == 0, 0.0)
    return scale.mul_(diff).mul_(alpha * 1.8)


@register("trainDifference", modes=("add_difference",), reads_c=True, forced_mode="add_difference")
def train_difference(a, b, c, p):
    """A + 1.8·α·(B − C)·|B − A| / (|B − C| + |B − A|), in f32 (SPEC §2.3), in SuperMerger's op order."""
    if torch.equal(b, c) if b.dtype == c.dtype else torch.equal(b.float(), c.float()):
        return KEEP
    out = torch.promote_types(a.dtype, F32)
    if out != F32:  # a float64 A: its own precision in the last add, as SuperMerger's `A + new` has it
        return a + _change(a.float(), b.to(F32, copy=True), c.float(), p.alpha)
    # Nine elementwise passes; chunked, so that their buffers stay in cache instead of streaming the key's
    # full size through memory nine times.
    return elementwise(lambda x, y, z: x.add_(_change(x, y, z, p.alpha)), a, b, c, work=F32, out=F32)
