"""cosineA / cosineB (SPEC §2.2): per column, keep A where A and B agree more than the model does on
average. A global pre-pass finds the range of similarities (1st–99th percentile) that k is scaled to."""
import threading
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.nn.functional import cosine_similarity, normalize

from . import register

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


def _similarities(a, b, normalised: bool):
    """(column similarity, combined similarity) of one key, as SuperMerger computes them."""
    a, b = a.to(F32), b.to(F32)
    if normalised:  # the same normalize, written into reused buffers
        a = normalize(a, p=2, dim=0, out=_scratch(a, 0))
        b = normalize(b, p=2, dim=0, out=_scratch(b, 1))
    s = cosine_similarity(a, b, dim=0)
    return s, (s + _magnitude(a, b)) / 2.0


def _trimmed_range(values: np.ndarray) -> SimilarityRange:
    values = values[~np.isnan(values)]
    if values.size == 0:
        return SimilarityRange(0.0, 1.0)
    values = values[values >= np.percentile(values, 1, method="midpoint")]
    values = values[values <= np.percentile(values, 99, method="midpoint")]
    return SimilarityRange(float(values.min()), float(values.max()))


def _prepass(normalised: bool):
    def run(pairs):
        parts, combined = [], {}
        for key, a, b in pairs:
            if a.dim() == 0:
                continue
            s, comb = _similarities(a, b, normalised)
            # cosineA's range uses the column similarity, cosineB's the combined one (SPEC §2.2)
            parts.append((s if normalised else comb).reshape(-1).double().cpu().numpy())
            combined[key] = comb.cpu()
        release_scratch()
        r = _trimmed_range(np.concatenate(parts) if parts else np.zeros(0))
        return SimilarityRange(r.low, r.high, combined)
    return run


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
