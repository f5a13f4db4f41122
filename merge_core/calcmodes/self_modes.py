import hashlib

import torch

from . import KEEP, register

SELF_SKIPS = ("to_out", "proj_out", "norm")


def _skips(key: str) -> bool:
    return any(s in key for s in SELF_SKIPS)


@register("self", modes=("weight_sum",), skip_key=_skips)
def self_scale(a, b, c, p):
    """A·α (B only decides which keys take part, SPEC §2.8)."""
    return KEEP if p.alpha == 0 else a * p.alpha  # SuperMerger skips the key, Adjust included


def key_generator(seed: int, key: str) -> torch.Generator:
    """One generator per key, so a key's noise does not depend on order, threads or other keys."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little"))


@register("plus random", modes=("weight_sum",), skip_key=_skips, needs_seed=True)
def plus_random(a, b, c, p):
    """A + α·N(0, 1) noise, seeded from the recipe's seed (SuperMerger's is unseeded, SPEC §2.9)."""
    if p.alpha == 0:
        return KEEP
    noise = torch.randn(a.shape, generator=key_generator(p.seed, p.key), dtype=torch.float32).to(a.device)
    return torch.add(noise.mul_(p.alpha), a, out=noise)  # A + noise·α, in the noise's own buffer
