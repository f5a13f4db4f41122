"""smoothAdd / smoothAdd MT (SPEC §2.4, §2.5): A + α·gaussian(median(B − C)), scipy's n-dimensional filters.

The median filter is nearly all of the cost (a 3×3 conv weight has an 81-value window: ~0.9 µs an element,
minutes for a whole SD1.5 U-Net, against ~0.02 µs for the gaussian). scipy runs it on one core but releases
the GIL, so large tensors are cut along their first axis into parts filtered side by side, on as many threads
as the run's policy leaves this key (run.thread_share: all of them when keys run one at a time, one each when
every core already computes a key of its own). Each part carries
one neighbouring slice on each side, so every kept element's window holds exactly the values, in the same
order, it holds in the whole tensor: the result is scipy's, bit for bit (a test holds it to that, ties of
±0 and NaN included)."""
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from . import register
from ..run import thread_share

PART = 1 << 20  # elements per part: small enough to share out, large enough that the halo slices are noise


def _parts(x: np.ndarray) -> list:
    """[(first, end)] slices of the first axis, about `PART` elements each."""
    rows = x.shape[0]
    count = min(rows, max(1, x.size // PART))
    bounds = np.linspace(0, rows, count + 1).round().astype(int)
    return [(int(i), int(j)) for i, j in zip(bounds[:-1], bounds[1:]) if j > i]


def median3(x: np.ndarray) -> np.ndarray:
    """`scipy.ndimage.median_filter(x, size=3)` (reflect at the edges), on the calling worker's share of
    the threads."""
    # 1-D input goes to scipy's running-median path, whose result on ties of 0.0 and -0.0 (and on NaN)
    # depends on the elements before the window; the n-D path looks at each window alone. Biases are small.
    import scipy.ndimage  # a quarter of a second that every other merge would pay at start-up

    parts = _parts(x) if x.ndim >= 2 else []
    workers = min(thread_share(), len(parts))
    if workers < 2:
        return scipy.ndimage.median_filter(x, size=3)
    out = np.empty_like(x)

    def run(part):
        i, j = part
        lo, hi = max(i - 1, 0), min(j + 1, x.shape[0])  # the halo: the slices next to the part
        out[i:j] = scipy.ndimage.median_filter(x[lo:hi], size=3)[i - lo:j - lo]

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(run, parts))
    return out


def smoothed(d: torch.Tensor) -> torch.Tensor:
    """median (3 in every axis) then gaussian (σ = 1) filter of a difference, as scipy does it."""
    import scipy.ndimage

    x = d.to(torch.float32).cpu().numpy()
    x = scipy.ndimage.gaussian_filter(median3(x), sigma=1)
    return torch.from_numpy(np.ascontiguousarray(x)).to(d.device)


def smooth_add(a, b, c, p):
    # Under add difference `b` is B − C; under weight sum it is B itself (SPEC §1: not enforced).
    return a + p.alpha * smoothed(b)


register("smoothAdd", modes=("add_difference",), costly=True)(smooth_add)
# The same calcmode under SuperMerger's other name: the executor runs keys side by side for every calcmode.
register("smoothAdd MT", modes=("add_difference",), costly=True)(smooth_add)
