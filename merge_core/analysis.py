"""Model similarity (SPEC §14): ASimilarity of the self-attention blocks, and cosine similarity per key
(element) and per block. Reads two models one key at a time through the executor's pair loop."""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch
from torch.nn.functional import cosine_similarity

from .errors import MergeError
from .executor import iter_pairs
from .families import Family

ASIM_SEED = 2244096
_ATTN1 = re.compile(r"^model\.diffusion_model\.(input_blocks\.(\d+)|middle_block|output_blocks\.(\d+))"
                    r"\.1\.transformer_blocks\.0\.attn1\.to_q\.weight$")
PARTS = ("te", "unet", "vae")
METHODS = ("mean", "min", "attn2")


@dataclass
class Similarity:
    """Rows of (block, key, score); `blocks` holds one (block, score) per block in block order."""
    mode: str
    elements: list = field(default_factory=list)
    blocks: list = field(default_factory=list)

    def csv_rows(self) -> list:
        rows = [(b, "", s) for b, s in self.blocks] if self.mode in ("block", "both", "asimilarity") else []
        return rows + ([tuple(e) for e in self.elements] if self.mode in ("element", "both") else [])


def _attn1_blocks(keys) -> list:
    """Attention-1 shells in SuperMerger's order (inputs, middle, outputs); SD1 gives its 16 ATTN1BLOCKS."""
    found = []
    for key in keys:
        m = _ATTN1.match(key)
        if m:
            kind = 0 if m.group(2) is not None else 1 if m.group(3) is None else 2
            found.append((kind, int(m.group(2) or m.group(3) or 0), key[: -len("to_q.weight")]))
    return [prefix for _, _, prefix in sorted(found)]


def _attention(x: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    qx, kx, vx = x @ q.T, x @ k.T, x @ v.T
    p = torch.softmax(qx @ kx.T, dim=-1)
    return torch.einsum("ik,jk->ik", p, vx)  # SuperMerger's ASimilarityCalculator, kept as it is


def asimilarity(a, b, family: Family, cancel: Optional[Callable] = None, progress: Optional[Callable] = None
                ) -> Similarity:
    """How alike A's and B's self-attention responds to the same random input, per attention block (100 =
    the same). Works for SD1/SD2 and, unlike SuperMerger, SDXL (its attn1 blocks)."""
    if family.name == "flux":
        raise MergeError("mode", "ASimilarity needs a U-Net with self-attention blocks; use block or element "
                                 "similarity for Flux")
    prefixes = [p for p in _attn1_blocks(a.keys()) if p + "to_q.weight" in b]
    if not prefixes:
        raise MergeError("models", "no self-attention (attn1) weights found in both models")
    gen = torch.Generator().manual_seed(ASIM_SEED)
    out = Similarity("asimilarity")
    for n, prefix in enumerate(prefixes):
        if cancel is not None and cancel():
            from .errors import MergeInterrupted
            raise MergeInterrupted()
        if progress:
            progress(n, len(prefixes), "ASimilarity")
        h, e = a.shape(prefix + "to_q.weight")
        x = torch.randn(e, h, generator=gen)
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


def cosine(a, b, family: Family, mode: str = "block", method: str = "mean", parts=("te", "unet", "vae"),
           cancel: Optional[Callable] = None, progress: Optional[Callable] = None) -> Similarity:
    """Cosine similarity ×100 of every comparable key (element rows), grouped per block (block rows by mean,
    min, or the block's attn2.to_out.0 value). `mode`: block, element or both."""
    if mode not in ("block", "element", "both"):
        raise MergeError("mode", f"'{mode}' is not one of asimilarity, block, element, both")
    if method not in METHODS:
        raise MergeError("method", f"'{method}' is not one of {', '.join(METHODS)}")
    unknown = set(parts) - set(PARTS)
    if unknown:
        raise MergeError("parts", f"unknown part(s) {', '.join(sorted(unknown))}; use te, unet, vae")
    keys = [k for k in a.keys() if _part(k) in parts and k in b
            and _numel(a.shape(k)) == _numel(b.shape(k)) and a.dtype(k).is_floating_point]
    out = Similarity(mode)
    per_block, attn2 = {}, {}
    read = lambda k: (a.get(k), b.get(k))  # noqa: E731
    release = lambda k: (a.release(k), b.release(k))  # noqa: E731
    for key, ta, tb in iter_pairs(keys, read, release, cancel, progress, "similarity"):
        # float64: in float32 two identical 38 M-element embeddings score 100.47
        score = round(cosine_similarity(ta.reshape(-1).double(), tb.reshape(-1).double(), dim=0).item() * 100, 3)
        ref = family.block_of(key)
        block = "VAE" if _part(key) == "vae" else (ref.coarse if ref else "BASE")
        out.elements.append((block, key, score))
        per_block.setdefault(block, []).append(score)
        if "attn2.to_out.0.weight" in key:
            attn2[block] = score
    order = list(family.blocks) + ["VAE"]
    for block in sorted(per_block, key=lambda x: order.index(x) if x in order else len(order)):
        values = per_block[block]
        if method == "attn2":
            if block not in attn2:
                continue
            value = attn2[block]
        elif method == "min":
            value = min(values)
        else:
            value = round(sum(values) / len(values), 3)
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
