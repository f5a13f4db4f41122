"""cosineA / cosineB (SPEC §2.2): per column, keep A where A and B agree more than the model does on
average. A global pre-pass finds the range of similarities (1st–99th percentile) that k is scaled to."""
import threading
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.nn.functional import cosine_similarity, normalize

from . import Prepass, register
from ..run import one_intra_thread

F32 = torch.float32


@dataclass(frozen=True)
class SimilarityRange:
    low: float
    high: float
    # each key's combined similarity (one value per column), kept from the pre-pass so the merge of a key
    # does not compute it again; the same operations on the same tensors, so the same values
    combined: dict = field(default_factory=dict, compare=False, repr=False)


def prepass_key(key: str) -> bool:
    """Keys the pre-pass reads: all of A's 'model' keys present in B, except the VAE's."""
    return "model" in key and "first_stage_model" not in key


def _magnitude(a, b):
    # The whole-tensor cosine; a zero tensor gives 0 here where SuperMerger divides 0 by 0 (NaN).
    denom = torch.norm(a) * torch.norm(b)
    return torch.dot(a.reshape(-1), b.reshape(-1)) / denom.clamp_min(1e-8)


_local = threading.local()


def _scratch(t: torch.Tensor, slot: int) -> torch.Tensor:
    """A reused float32 buffer shaped like `t`: whole-model passes allocate fresh gigabytes otherwise, and
    the OS zeroing new pages costs more than the arithmetic."""
    bufs = getattr(_local, "bufs", None)
    if bufs is None:
        bufs = _local.bufs = {}
    buf = bufs.get((slot, t.device))
    if buf is None or buf.numel() < t.numel():
        buf = bufs[(slot, t.device)] = torch.empty(t.numel(), dtype=F32, device=t.device)
    return buf[: t.numel()].view(t.shape)


def release_scratch() -> None:
    _local.bufs = None


# Why the pre-pass does not simply call normalize() and cosine_similarity(): ATen computes a norm along dim 0
# one output column at a time through a generic scalar loop, and cosineA takes four such norms of the whole
# model (two in normalize, two inside cosine_similarity), each with a full-size temporary after it. That was
# most of the pre-pass's time. The arithmetic of those norms is a plain float32 running sum of squares down
# each column, then a correctly rounded square root; numpy's add.reduce along axis 0 of a C-contiguous array
# adds the rows in exactly that order, vectorised across columns. So below, the same operations give the same
# bits (tests/test_cosine_speed_equivalence.py holds them to a frozen copy of the plain-torch code): rows go
# through in cache-sized blocks, each block divided, squared and summed while it is in cache, the running sum
# carried in as the block's first row. What stays with torch is what depends on its own order of summation:
# the whole-tensor norms and dot product of the magnitude term and the column sum of cosine_similarity.

_BLOCK = 1 << 16  # float32 values per block of rows: 256 KB, stays in the L2 cache


class _ColumnSquares:
    """Σ x² down each column of row blocks fed in order: float32, the order ATen's vector_norm(dim=0) adds."""

    def __init__(self, step: int, cols: int):
        self.block = np.empty((step + 1, cols), np.float32)
        self.acc = None

    def add(self, rows: np.ndarray) -> None:
        k = len(rows)
        if self.acc is None:  # ATen starts from 0, and 0 + x² is x² exactly
            np.multiply(rows, rows, out=self.block[:k])
            self.acc = np.add.reduce(self.block[:k], axis=0)
        else:
            self.block[0] = self.acc
            np.multiply(rows, rows, out=self.block[1:k + 1])
            np.add.reduce(self.block[:k + 1], axis=0, out=self.acc)

    def norms(self, eps: float) -> np.ndarray:
        """The column norms clamped to `eps` (torch's clamp_min_, so NaN behaves as it does there)."""
        np.sqrt(self.acc, out=self.acc)
        torch.from_numpy(self.acc).clamp_min_(eps)
        return self.acc


def _row_blocks(x: np.ndarray):
    step = max(8, _BLOCK // x.shape[1])
    return step, [(i, min(i + step, len(x))) for i in range(0, len(x), step)]


def _column_norms(x: np.ndarray, eps: float) -> np.ndarray:
    """`torch.linalg.vector_norm(x, 2, dim=0).clamp_min_(eps)` of a 2-D float32 array, bit for bit."""
    step, blocks = _row_blocks(x)
    squares = _ColumnSquares(step, x.shape[1])
    for i, j in blocks:
        squares.add(x[i:j])
    return squares.norms(eps)


def _normalise(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """`normalize(x, p=2, dim=0)` written into `out`; returns the column norms of the result, clamped as
    cosine_similarity clamps them, taken from each block while it is still in cache."""
    norms = _column_norms(x, 1e-12)
    step, blocks = _row_blocks(x)
    squares = _ColumnSquares(step, x.shape[1])
    for i, j in blocks:
        np.divide(x[i:j], norms, out=out[i:j])
        squares.add(out[i:j])
    return squares.norms(1e-8)


def _column_products(a, b, na, nb, out) -> None:
    """(a / na) · (b / nb) into `out` (which may be `a`): the full-size product cosine_similarity sums."""
    step, blocks = _row_blocks(a)
    quotient = np.empty((step, a.shape[1]), np.float32)
    for i, j in blocks:
        np.divide(a[i:j], na, out=out[i:j])
        np.divide(b[i:j], nb, out=quotient[:j - i])
        np.multiply(out[i:j], quotient[:j - i], out=out[i:j])


def _blockwise(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Whether the numpy path reproduces torch for these tensors: float32 on the CPU, contiguous, at least
    two columns (a single column, e.g. a 1-D bias, is reduced by a differently ordered vectorised loop)."""
    return (a.device.type == "cpu" and b.device.type == "cpu" and a.dim() >= 2 and a.shape == b.shape
            and a.numel() >= 2 * a.shape[0] > 0 and a.is_contiguous() and b.is_contiguous())


def _similarities(a, b, normalised: bool):
    """(column similarity, combined similarity) of one key, as SuperMerger computes them (see above), with
    torch on one intra-op thread: the whole-tensor dot product's sum order depends on the thread count, and
    every door (command line, Checkpoint Merge, the graph) must find the same similarities."""
    with one_intra_thread():
        return _similarities_f32(a.to(F32), b.to(F32), normalised)


def _similarities_f32(a, b, normalised: bool):
    if not _blockwise(a, b):
        if normalised:
            a, b = normalize(a, p=2, dim=0), normalize(b, p=2, dim=0)
        s = cosine_similarity(a, b, dim=0)
        return s, (s + _magnitude(a, b)) / 2.0
    with np.errstate(all="ignore"):  # inf and NaN pass through silently, as in torch
        return _similarities_blockwise(a, b, normalised)


def _similarities_blockwise(a, b, normalised: bool):
    rows = (a.shape[0], a.numel() // a.shape[0])
    a2, b2 = a.detach().reshape(rows).numpy(), b.detach().reshape(rows).numpy()
    out_a, out_b = _scratch(a, 0), _scratch(b, 1)
    if normalised:  # a, b = normalize(a), normalize(b), into our own buffers
        na, nb = _normalise(a2, out_a.view(rows).numpy()), _normalise(b2, out_b.view(rows).numpy())
        a, b = out_a, out_b
        a2, b2 = a.view(rows).numpy(), b.view(rows).numpy()
    else:
        na, nb = _column_norms(a2, 1e-8), _column_norms(b2, 1e-8)
    m = _magnitude(a, b)  # before the product may overwrite a
    _column_products(a2, b2, na, nb, out_a.view(rows).numpy())
    s = out_a.sum(0)
    return s, (s + m) / 2.0


def _trimmed_range(values: np.ndarray) -> SimilarityRange:
    values = values[~np.isnan(values)]
    if values.size == 0:
        return SimilarityRange(0.0, 1.0)
    values = values[values >= np.percentile(values, 1, method="midpoint")]
    values = values[values <= np.percentile(values, 99, method="midpoint")]
    return SimilarityRange(float(values.min()), float(values.max()))


def _prepass(normalised: bool) -> Prepass:
    def per_key(key, a, b):  # 0-dim tensors too (logit_scale, model_ema.decay): SuperMerger counts them
        s, comb = _similarities(a, b, normalised)
        # cosineA's range uses the column similarity, cosineB's the combined one (SPEC §2.2)
        return (s if normalised else comb).reshape(-1).double().cpu().numpy(), comb.cpu()

    def combine(results):
        release_scratch()  # the calling thread's; a worker's go with the worker
        parts = [part for _key, (part, _comb) in results]
        r = _trimmed_range(np.concatenate(parts) if parts else np.zeros(0))
        return SimilarityRange(r.low, r.high, {key: comb for key, (_part, comb) in results})
    return Prepass(per_key, combine)


def _cosine(normalised: bool):
    def merge(a, b, c, p):
        r = p.stats
        comb = r.combined.get(p.key)
        comb = _similarities(a, b, normalised)[1] if comb is None else comb.to(a.device)
        span = r.high - r.low
        k = (comb - r.low) / span if span else torch.zeros_like(comb)
        k = (k - (abs(p.alpha) if normalised else p.alpha)).clip(min=0, max=1.0)
        if p.old_calc:
            return b * (1 - k) + a * k
        return torch.lerp(b.to(F32), a.to(F32), k)
    return merge


def _skip_vae(key: str) -> bool:
    return "first_stage_model" in key


register("cosineA", modes=("weight_sum",), prepass=_prepass(True), skip_key=_skip_vae, min_dim=1)(_cosine(True))
register("cosineB", modes=("weight_sum",), prepass=_prepass(False), skip_key=_skip_vae, min_dim=1)(_cosine(False))
