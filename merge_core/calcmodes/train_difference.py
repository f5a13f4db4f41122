import torch

from . import KEEP, register


@register("trainDifference", modes=("add_difference",), reads_c=True, forced_mode="add_difference")
def train_difference(a, b, c, p):
    """A + 1.8·α·(B − C)·|B − A| / (|B − C| + |B − A|), in f32 (SPEC §2.3), in SuperMerger's op order."""
    b32, c32 = b.float(), c.float()
    if torch.equal(b32, c32):
        return KEEP
    diff = b32 - c32
    d0 = torch.abs(diff)
    d1 = torch.abs(b32 - a.float())
    total = d0 + d1
    scale = torch.where(total != 0, d1 / total, torch.tensor(0.0))
    scale = torch.sign(diff) * torch.abs(scale)
    return a + (scale * d0) * (p.alpha * 1.8)
