"""Model similarity (SPEC §14): ASimilarity of the self-attention blocks, and cosine similarity per key
(element) and per block. Reads two models one key at a time through the executor's pair loop."""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from statistics import mean
from typing import Iterable, Iterator, Optional

import torch
from torch.nn.functional import cosine_similarity, linear

from .errors import MergeError
from .executor import iter_pairs
from .families import Family
from .run import RunContext

ASIM_SEED = 2244096
ASIM_PROBES = 6  # SuperMerger builds three nn.Linear (q, k, v) per model for every block
_ATTN1 = re.compile(r"^model\.diffusion_model\.(input_blocks\.(\d+)|middle_block|output_blocks\.(\d+))"
                    r"\.1\.transformer_blocks\.0\.attn1\.to_q\.weight$")
PARTS = ("te", "unet", "vae")
METHODS = ("mean", "min", "attn2")


@dataclass
class Similarity:
    """Rows of (block, key, score); `blocks` holds one (block, score) per block in block order, valued by
    `method` (mean, min or attn2; "both" always lists means)."""
    mode: str
    elements: list = field(default_factory=list)
    blocks: list = field(default_factory=list)
    method: str = "mean"

    def csv_rows(self) -> list:
        """The listing as SuperMerger returns and saves it. "both" puts the block means above the element rows
        in reverse block order (SuperMerger inserts each at the top as it goes)."""
        blocks = [(b, "", s) for b, s in self.blocks]
        if self.mode == "both":
            return blocks[::-1] + [tuple(e) for e in self.elements]
        return [tuple(e) for e in self.elements] if self.mode == "element" else blocks


def _attn1_blocks(keys) -> list:
    """Attention-1 shells in SuperMerger's order (inputs, middle, outputs); SD1 gives its 16 ATTN1BLOCKS."""
    found = []
    for key in keys:
        m = _ATTN1.match(key)
        if m:
            kind = 0 if m.group(2) is not None else 1 if m.group(3) is None else 2
            found.append((kind, int(m.group(2) or m.group(3) or 0), key[: -len("to_q.weight")]))
    return [prefix for _, _, prefix in sorted(found)]


def probe_inputs(shapes: Iterable[tuple]) -> Iterator[torch.Tensor]:
    """The random input of each attention block, given its to_q shapes (h, e) in order, as SuperMerger draws
    them from the global generator seeded once with 2244096: `randn(e, h)`, then six `nn.Linear(h, e,
    bias=False)` probes whose kaiming-uniform initialisation (one float32 uniform per weight element) moves
    the generator on before the next block's input. Drawn here from a private generator (the global one is
    left alone), so every block sees the input SuperMerger's does."""
    gen = torch.Generator().manual_seed(ASIM_SEED)
    for h, e in shapes:
        x = torch.randn(e, h, generator=gen)
        probe = torch.empty(e, h)
        bound = 1 / math.sqrt(h)  # kaiming_uniform_(a=√5) of an (e, h) weight; only the draw count matters
        for _ in range(ASIM_PROBES):
            probe.uniform_(-bound, bound, generator=gen)
        yield x


def _attention(x: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """SuperMerger's ASimilarityCalculator, with the same operations (its probes' forward is `linear`)."""
    qx, kx, vx = linear(x, q), linear(x, k), linear(x, v)
    p = torch.softmax(torch.einsum("ij,kj->ik", qx, kx), dim=-1)
    return torch.einsum("ik,jk->ik", p, vx)  # element-wise P[i,k]·Σ_j V[j,k]: the original's quirk, kept


def asimilarity(a, b, family: Family, run: Optional[RunContext] = None) -> Similarity:
    """How alike A's and B's self-attention responds to the same random input, per attention block (100 =
    the same). Works for SD1/SD2 and, unlike SuperMerger, SDXL (its attn1 blocks)."""
    if family.name == "flux":
        raise MergeError("mode", "ASimilarity needs a U-Net with self-attention blocks; use block or element "
                                 "similarity for Flux")
    prefixes = [p for p in _attn1_blocks(a.keys()) if p + "to_q.weight" in b]
    if not prefixes:
        raise MergeError("models", "no self-attention (attn1) weights found in both models")
    out = Similarity("asimilarity")
    inputs = probe_inputs(tuple(a.shape(p + "to_q.weight")) for p in prefixes)
    for prefix, x in zip((run or RunContext()).each(prefixes, "ASimilarity"), inputs):
        with torch.no_grad():
            att = [_attention(x, *(src.get(prefix + f"to_{w}.weight").float() for w in "qkv")) for src in (a, b)]
        score = round(torch.mean(cosine_similarity(att[0], att[1], dim=1)).item() * 100, 3)
        out.blocks.append((family.block_of(prefix + "to_q.weight").fine, score))
    return out


def _part(key: str) -> Optional[str]:
    if "first_stage_model" in key or key.startswith("vae."):
        return "vae"
    if "diffusion_model" in key:
        return "unet"
    if "model" in key and "model_ema" not in key or key.startswith("text_encoders."):
        return "te"
    return None


def _label(key: str, family: Family) -> Optional[tuple]:
    """(element label, block) of a key as SuperMerger lists it, or None for a key it never merges (SDXL's
    `logit_scale`, `text_projection`, …). Elements carry SuperMerger's fine names (SDXL: `IN410`, `CLIPG`,
    `TIME`, `OUT9`; SD1/SD2: the block itself); VAE keys are listed as VAE."""
    if _part(key) == "vae":
        return "VAE", "VAE"
    ref = family.block_of(key)
    return None if ref is None else (ref.fine, ref.coarse)


def cosine(a, b, family: Family, mode: str = "block", method: str = "mean", parts=("te", "unet", "vae"),
           run: Optional[RunContext] = None) -> Similarity:
    """Cosine similarity ×100 of every comparable key (element rows), grouped per block (SPEC §14.2). Block
    rows are the mean or minimum of the block's keys, or its attn2.to_out.0 value; under "both" they are
    the block means whatever `method` says, as in SuperMerger. `mode`: block, element or both."""
    if mode not in ("block", "element", "both"):
        raise MergeError("mode", f"'{mode}' is not one of asimilarity, block, element, both")
    if method not in METHODS:
        raise MergeError("method", f"'{method}' is not one of {', '.join(METHODS)}")
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise MergeError("parts", f"unknown part(s) {', '.join(sorted(unknown))}; use te, unet, vae")
    # Integer tensors (SD1's position_ids) take part as SuperMerger's float cast has them do.
    labels = {k: _label(k, family) for k in a.keys() if _part(k) in parts and k in b}
    keys = [k for k, lab in labels.items() if lab is not None and _numel(a.shape(k)) == _numel(b.shape(k))]
    out = Similarity(mode, method="mean" if mode == "both" else method)
    per_block, attn2 = {}, {}
    read = lambda k: (a.get(k), b.get(k))  # noqa: E731
    release = lambda k: (a.release(k), b.release(k))  # noqa: E731
    for key, ta, tb in iter_pairs(keys, read, release, run, "similarity"):
        # float64: in float32 two identical 38 M-element embeddings score 100.47
        score = round(cosine_similarity(ta.reshape(-1).double(), tb.reshape(-1).double(), dim=0).item() * 100, 3)
        element, block = labels[key]
        out.elements.append((element, key, score))
        per_block.setdefault(block, []).append(score)
        if "attn2.to_out.0.weight" in key:
            attn2[block] = score
    order = list(family.blocks) + ["VAE"]
    for block in sorted(per_block, key=lambda x: order.index(x) if x in order else len(order)):
        values = per_block[block]
        if out.method == "attn2":
            if block not in attn2:
                continue
            value = attn2[block]
        elif out.method == "min":
            value = min(values)
        else:
            value = round(mean(values), 3)
        out.blocks.append((block, value))
    return out


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def elements(source, family: Family, contains: Optional[str] = None) -> list:
    """SuperMerger's Elements tab (SPEC §15): (key, block, fine block, shape, dtype) for every key;
    "-" where SuperMerger never merges the key."""
    rows = []
    for key in source.keys():
        if contains and contains not in key:
            continue
        ref = family.block_of(key)
        rows.append((key, ref.coarse if ref else "-", ref.fine if ref else "-", list(source.shape(key)),
                     str(source.dtype(key)).replace("torch.", "")))
    return rows


def table_text(result: Similarity) -> str:
    rows = result.csv_rows()
    width = max((len(str(r[0])) for r in rows), default=5)
    return "\n".join(f"{block:<{width}}  {score:8.3f}  {key}".rstrip() for block, key, score in rows)
