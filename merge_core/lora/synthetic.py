"""Random LoRAs with real module names for a checkpoint layout (tests, demos, host tests).

`random_lora(shapes, family, rank, seed)` makes one module per kohya target of a checkpoint whose key →
shape table is `shapes` (e.g. `merge_core.synthetic.sd1_layout(...)`, or a file's header), in the
LoRA (up/down/alpha), LoHa or LoKr form. Deterministic in `seed`.
"""
from __future__ import annotations

import math
from typing import Optional

import torch

from . import names


def targets(shapes: dict, family: str, conv3x3: bool = False, style: str = "kohya") -> dict:
    """module name → the weight shape it patches (OpenCLIP q/k/v: one third of in_proj)."""
    out = {}
    for key, shape in shapes.items():
        shape = tuple(shape)
        if not names.is_target(key, family, conv3x3):
            continue
        fused = names.fused_modules(key, family)
        if fused:
            for module in fused:
                out[module] = (shape[0] // 3,) + shape[1:]
        else:
            out[names.module_name(key, family, style)] = shape
    return out


def _randn(g, *shape, scale=1.0):
    return torch.randn(*shape, generator=g) * scale


def random_lora(shapes: dict, family: str, rank: int = 4, seed: int = 0, conv3x3: bool = False,
                alpha: Optional[float] = None, kind: str = "lora", style: str = "kohya", scale: float = 0.05,
                dtype=torch.float32, only: Optional[str] = None) -> dict:
    """A LoRA state dict. `kind`: lora, loha or lokr; `only`: keep modules whose name contains this text."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for module, shape in sorted(targets(shapes, family, conv3x3, style).items()):
        if only is not None and only not in module:
            continue
        out_dim, in_dim, kernel = shape[0], shape[1], tuple(shape[2:])
        r = min(rank, out_dim, in_dim)
        if kind == "lora":
            sd[module + ".lora_up.weight"] = _randn(g, out_dim, r, *((1, 1) if kernel else ()), scale=scale)
            sd[module + ".lora_down.weight"] = _randn(g, r, in_dim, *kernel, scale=scale)
        elif kind == "loha":
            flat_in = in_dim * math.prod(kernel)
            for w in ("w1", "w2"):
                sd[f"{module}.hada_{w}_a"] = _randn(g, out_dim, r, scale=scale)
                sd[f"{module}.hada_{w}_b"] = _randn(g, r, flat_in, scale=scale)
        elif kind == "lokr":
            a = next(f for f in (4, 2, 1) if out_dim % f == 0 and in_dim % f == 0)
            sd[module + ".lokr_w1"] = _randn(g, a, a, scale=scale)
            sd[module + ".lokr_w2"] = _randn(g, out_dim // a, in_dim // a, *kernel, scale=scale)
            continue  # a full LoKr has no rank, so no alpha
        else:
            raise ValueError(f"kind {kind!r}")
        sd[module + ".alpha"] = torch.tensor(float(alpha if alpha is not None else r))
    return {k: v.to(dtype) for k, v in sd.items()}
