import torch

from . import KEEP, register


@register("trainDifference", modes=("add_difference",), reads_c=True, forced_mode="add_difference")
def train_difference(a, b, c, p):
    """A + 1.8·α·(B − C)·|B − A| / (|B − C| + |B − A|), in f32 (SPEC §2.3), in SuperMerger's op order."""
    b32, c32 = b.float(), c.float()
    if torch.equal(b32, c32):
        return KEEP
    # The same operations, in the same order, as d0 = |B−C|, d1 = |B−A|, scale = where(d0+d1 ≠ 0, d1/(d0+d1), 0),
    # sign(B−C)·|scale|·d0·(1.8α), A + that; computed in place: five full-size buffers instead of fourteen.
    diff = b32 - c32
    d0 = diff.abs()
    scale = torch.sub(b32, a.float()).abs_()
    total = d0 + scale
    scale.div_(total).masked_fill_(total == 0, 0.0)
    scale.abs_().mul_(diff.sign_())
    scale.mul_(d0).mul_(p.alpha * 1.8)
    return torch.add(a, scale, out=scale) if a.dtype == scale.dtype else a + scale
