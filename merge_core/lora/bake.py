"""Baking LoRAs into a checkpoint file (SPEC §13.7): `W' = W + Σ r_block·ΔW`, linear in the ratio.

ΔW per module kind, as the web-ui and ComfyUI compute it: LoRA/LoCon `up @ down · alpha/rank` (convs,
including 3×3, as the flattened product; `lora_mid` CP form as a Tucker product), LoHa
`(w1a @ w1b) ⊙ (w2a @ w2b) · alpha/rank` (CP form with t1/t2), LoKr `kron(w1, w2)` (· alpha/dim when a
factor is decomposed), full `diff`/`diff_b`, norm `w_norm`/`b_norm`; DoRA modules re-normalise the
weight as ComfyUI does. OpenCLIP q/k/v modules patch their third of the fused `in_proj_weight`; a LoRA made
for 4 input channels patches the first 4 channels of an inpainting model's 9. The checkpoint is streamed
key by key from its memory map into the atomic writer: untouched tensors are copied as raw bytes.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

import torch

from ..atomic import refuse_existing
from ..errors import MergeError, MergeInterrupted
from ..families import FAMILIES, detect
from ..sources import open_model
from ..writer import SafetensorsWriter, tensor_bytes
from . import names
from .. import precision as precisions
from .files import LoraFile, detect_family

F32 = torch.float32


def _get(lora: LoraFile, module: str, part: str, device):
    return lora.tensor(module, part, F32, device)


def _scale(alpha: Optional[float], dim: Optional[int]) -> float:
    return alpha / dim if alpha is not None and dim else 1.0


def _tucker(t, b, a):
    """CP-decomposed factor: t (r, r, kh, kw) with b (r, in) and a (out, r) → (out, in, kh, kw)."""
    return torch.einsum("i j k l, j r, i p -> p r k l", t, b, a)


def module_delta(lora: LoraFile, module: str, device="cpu") -> dict:
    """{"weight": ΔW (not yet shaped like the weight), "bias": Δb} of one module at ratio 1."""
    mod = lora.modules[module]
    get = lambda part: _get(lora, module, part, device)  # noqa: E731
    alpha = lora.alpha(module)
    if mod.kind == "lora":
        up, down, mid = get("up"), get("down"), get("mid")
        rank = down.shape[0]
        if mid is not None:
            delta = torch.einsum("m n ..., i m, n j -> i j ...", mid, up.reshape(up.shape[0], -1),
                                 down.reshape(rank, -1))
        else:
            delta = up.reshape(up.shape[0], -1) @ down.reshape(rank, -1)
            if down.dim() == 4:
                delta = delta.reshape(up.shape[0], *down.shape[1:])
        return {"weight": delta * _scale(alpha, rank)}
    if mod.kind == "loha":
        w1a, w1b, w2a, w2b, t1, t2 = (get(p) for p in ("w1a", "w1b", "w2a", "w2b", "t1", "t2"))
        if t1 is not None:
            m1, m2 = _tucker(t1, w1b, w1a), _tucker(t2, w2b, w2a)
        else:
            m1, m2 = w1a @ w1b, w2a @ w2b
        return {"weight": m1 * m2 * _scale(alpha, w1b.shape[0])}
    if mod.kind == "lokr":
        w1, w2, dim = get("w1"), get("w2"), None
        if w1 is None:
            w1a, w1b = get("w1a"), get("w1b")
            w1, dim = w1a @ w1b, w1b.shape[0]
        if w2 is None:
            w2a, w2b, t2 = get("w2a"), get("w2b"), get("t2")
            dim = w2b.shape[0]
            w2 = _tucker(t2, w2b, w2a) if t2 is not None else w2a @ w2b
        if w2.dim() == 4:
            w1 = w1[:, :, None, None]
        return {"weight": torch.kron(w1, w2) * _scale(alpha, dim)}
    if mod.kind in ("full", "norm"):
        w, b = ("diff", "diff_b") if mod.kind == "full" else ("w_norm", "b_norm")
        return {k: v for k, v in (("weight", get(w)), ("bias", get(b))) if v is not None}
    raise MergeError(f"LoRA {lora.name}", f"module {module} is {mod.kind.upper()}, which cannot be baked in "
                                          "here (apply it in ComfyUI with a LoRA loader instead)")


def fit(delta: torch.Tensor, shape: tuple, where: str) -> torch.Tensor:
    """ΔW in the weight's shape: reshaped when the sizes agree, zero-padded when the weight is larger in
    some dimensions (an inpainting model's extra input channels)."""
    shape = tuple(shape)
    if delta.numel() == math.prod(shape):
        return delta.reshape(shape)
    if delta.dim() == len(shape) and all(d <= s for d, s in zip(delta.shape, shape)):
        out = delta.new_zeros(shape)
        out[tuple(slice(0, d) for d in delta.shape)] = delta
        return out
    raise MergeError(where, f"its change has shape {list(delta.shape)} but the model's weight is {list(shape)}; "
                            "is the LoRA for another model?")


def apply_dora(weight: torch.Tensor, delta: torch.Tensor, dora_scale: torch.Tensor, strength: float):
    """ComfyUI's DoRA: the patched weight's norm is replaced by the module's learned magnitude."""
    calc = weight + delta
    if dora_scale.shape[0] == calc.shape[0]:
        norm = weight.reshape(weight.shape[0], -1).norm(dim=1, keepdim=True).reshape(
            weight.shape[0], *[1] * (weight.dim() - 1))
    else:
        norm = calc.transpose(0, 1).reshape(calc.shape[1], -1).norm(dim=1, keepdim=True).reshape(
            calc.shape[1], *[1] * (calc.dim() - 1)).transpose(0, 1)
    calc = calc * (dora_scale / (norm + torch.finfo(weight.dtype).eps))
    return weight + strength * (calc - weight)


@dataclass
class Patch:
    lora: LoraFile
    module: str
    ratio: float
    part: Optional[int] = None  # third of a fused in_proj
    bias: bool = False


@dataclass
class BakeResult:
    path: Path
    patched_keys: int
    seconds: float
    notes: list = field(default_factory=list)


def plan_patches(keys, inputs: list, family: str, where: str = "loras") -> tuple:
    """checkpoint key → [Patch], and notes about modules that fit no key. `inputs`: [(LoraFile, ratios)]."""
    patches, notes = {}, []
    for lora, weights in inputs:
        lfam = detect_family(lora.require_modules(where))
        if FAMILIES[lfam].lora_kind != FAMILIES[family].lora_kind:
            raise MergeError(where, f"{lora.name} is a {lfam.upper()} LoRA; the model is {family.upper()}")
        missing = []
        for module, mod in lora.modules.items():
            key = names.checkpoint_key(module, family)
            if key is not None and key not in keys and key.startswith(names.UNET):
                bare = key[len(names.UNET):]  # a diffusion-model-only file (Flux) has unprefixed keys
                key = bare if bare in keys else key
            ratio = float(weights[names.block_index(module, family)])
            if key is None or key not in keys:
                missing.append(module)
                continue
            if ratio == 0:
                continue  # no change at all: the weight stays bit-identical
            part = names.fused_part(module, family)
            has_weight = any(p in mod.keys for p in ("up", "w1a", "w1", "w1b", "diff", "w_norm"))
            if has_weight:
                patches.setdefault(key, []).append(Patch(lora, module, ratio, part))
            bias_key = key[: -len(".weight")] + ".bias" if key.endswith(".weight") else None
            if bias_key in keys and any(p in mod.keys for p in ("diff_b", "b_norm")):
                patches.setdefault(bias_key, []).append(Patch(lora, module, ratio, part, bias=True))
        if len(missing) == len(lora.modules):
            raise MergeError(where, f"none of the {len(missing)} modules of {lora.name} fits this {family.upper()} "
                                    f"model (e.g. {missing[0] if missing else 'no modules'})")
        if missing:
            notes.append(f"{lora.name}: {len(missing)} modules fit no key of the model and were skipped "
                         f"(e.g. {missing[0]})")
    return patches, notes


def patched_weight(key: str, weight: torch.Tensor, patches: list, device="cpu") -> torch.Tensor:
    """`weight` (float32) with its patches added; a new tensor."""
    w = weight.to(device=device, dtype=F32, copy=True)
    for p in patches:
        delta = module_delta(p.lora, p.module, device)["bias" if p.bias else "weight"]
        where = f"LoRA {p.lora.name} module {p.module}"
        target = w if p.part is None else w[p.part * (w.shape[0] // 3):(p.part + 1) * (w.shape[0] // 3)]
        delta = fit(delta, target.shape, where)
        dora = None if p.bias else p.lora.tensor(p.module, "dora_scale", F32, device)
        if dora is not None:
            target.copy_(apply_dora(target, delta, dora, p.ratio))
        else:
            target.add_(delta, alpha=p.ratio)
    return w


def bake_to_file(model_path, inputs: list, out_path, precision: str = "keep", overwrite: bool = False,
                 device="cpu", metadata: Optional[dict] = None, progress: Optional[Callable] = None,
                 cancel: Optional[Callable] = None, where: str = "loras") -> BakeResult:
    """Stream `model_path` into `out_path` with the LoRAs of `inputs` [(LoraFile, LoraEntry)] baked in.
    `precision`: keep (each tensor's dtype), float, fp16 or bf16 for floating tensors."""
    t0 = time.perf_counter()
    out_path = Path(out_path)
    target = precisions.dtype_of(precision, "precision", keep=True)
    refuse_existing(out_path, overwrite)
    with open_model(model_path) as src:
        keys = src.keys()
        family = detect(keys, f"model {Path(model_path).name}").name
        weighted = [(lora, entry.weights_for(family, where)) for lora, entry in inputs]
        patches, notes = plan_patches(set(keys), weighted, family, where)

        def out_dtype(key):
            dt = src.dtype(key)
            return target if target is not None and dt.is_floating_point else dt

        entries = [(k, out_dtype(k), src.shape(k)) for k in keys]
        with SafetensorsWriter(out_path, entries, metadata or {"format": "pt"}, overwrite) as w:
            for i, key in enumerate(keys):
                if cancel is not None and cancel():
                    raise MergeInterrupted()
                if key in patches:
                    w.write(key, patched_weight(key, src.get(key), patches[key], device).to("cpu", out_dtype(key)))
                elif out_dtype(key) == src.dtype(key):
                    w.write_raw(key, tensor_bytes(src.get(key)))
                else:
                    w.write(key, src.get(key).to(out_dtype(key)))
                src.release(key)
                if progress is not None:
                    progress(i + 1, len(keys), "bake")
    return BakeResult(out_path, len(patches), time.perf_counter() - t0, notes)
