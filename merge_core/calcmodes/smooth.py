import numpy as np
import scipy.ndimage
import torch

from . import register


def smoothed(d: torch.Tensor) -> torch.Tensor:
    """median (3 in every axis) then gaussian (σ = 1) filter of a difference, as scipy does it."""
    x = d.to(torch.float32).cpu().numpy()
    x = scipy.ndimage.gaussian_filter(scipy.ndimage.median_filter(x, size=3), sigma=1)
    return torch.from_numpy(np.ascontiguousarray(x)).to(d.device)


def smooth_add(a, b, c, p):
    # Under add difference `b` is B − C; under weight sum it is B itself (SPEC §1: not enforced).
    return a + p.alpha * smoothed(b)


register("smoothAdd", modes=("add_difference",))(smooth_add)
# Same result; the executor runs keys side by side because scipy's filters use one core each.
register("smoothAdd MT", modes=("add_difference",), parallel=True)(smooth_add)
