"""Architecture families: detection from key names and the key → block mapping (SPEC §3).

The block id tables live in `data/blocks.json`; the rules that map a key to a block are small per-family
functions because SuperMerger's rules are positional (first match wins) and, for SDXL, built from the
digits of the key. Keys use the original LDM/SGM checkpoint names (`model.diffusion_model.…`,
`cond_stage_model.…`, `conditioner.embedders.N.…`, `first_stage_model.…`).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional

import torch

from .errors import MergeError

_TABLES = json.loads((Path(__file__).parent / "data" / "blocks.json").read_text())

XL_CLIPG_KEY = "conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.weight"
SD2_CLIP_KEY = "cond_stage_model.model.transformer.resblocks.0.attn.out_proj.weight"


@dataclass(frozen=True)
class BlockRef:
    """Where a key sits: `coarse` indexes the 26/20/61-value MBW list, `fine` the 110-value XL list."""

    coarse: str
    fine: str


@dataclass(frozen=True)
class Family:
    name: str
    label: str
    blocks: tuple  # MBW order, BASE (or its equivalent) first
    slots: tuple  # weight-table slots a key may land in (blocks, plus XL's VAE slot)
    extended: Optional[tuple]  # SDXL's 110 fine block names
    _mapper: Callable[[str], Optional[BlockRef]]
    comfy_configs: tuple = ()  # ComfyUI model config classes of the family
    position_ids: Optional[str] = None  # the CLIP position-id key its checkpoints hold

    def block_of(self, key: str) -> Optional[BlockRef]:
        """The block of `key`, or None when SuperMerger never merges it."""
        ref = self._mapper(key)
        if ref is None or ref.coarse not in self.slots:
            return None
        return ref

    def slot_index(self, coarse: str) -> int:
        return self.slots.index(coarse)

    @property
    def weight_counts(self) -> tuple:
        """How many comma values an MBW list may have for this family (BASE included)."""
        counts = [len(self.blocks)]
        if self.name == "sdxl":
            counts += [26, len(self.extended)]
        return tuple(counts)


_IN = re.compile(r"\.input_blocks\.(\d+)\.")
_MID = re.compile(r"\.middle_block\.(\d+)\.")
_OUT = re.compile(r"\.output_blocks\.(\d+)\.")
_TB = re.compile(r"transformer_blocks\.(\d+)\.")
_FIRST_NUM = re.compile(r"\.(\d+)\.")


def _sd_block(key: str) -> BlockRef:
    # Order matters: SuperMerger's first match wins (SPEC §3.2). time_embed → IN00 as at 0b1c491.
    if "time_embed" in key:
        name = "IN00"
    elif ".out." in key:
        name = "OUT11"
    elif m := _IN.search(key):
        name = f"IN{int(m.group(1)):02}"
    elif _MID.search(key):
        name = "M00"
    elif m := _OUT.search(key):
        name = f"OUT{int(m.group(1)):02}"
    else:
        name = "BASE"
    return BlockRef(name, name)


# SDXL keys whose block is fixed by a substring, checked in this order (SPEC §3.3 rules 2–5).
_XL_FIXED = (
    ("label_emb", "IN00", "LABEL"),
    ("time_embed", "IN00", "TIME"),
    ("conditioner.embedders.0.", "BASE", "CLIPL"),
    ("conditioner.embedders.1.", "BASE", "CLIPG"),
    ("first_stage_model", "BASE", "VAE"),
    ("model.diffusion_model.out.", "OUT08", "OUT9"),
)


def _xl_block(key: str) -> Optional[BlockRef]:
    if "weight" not in key and "bias" not in key:
        return None
    for needle, coarse, fine in _XL_FIXED:
        if needle in key:
            return BlockRef(coarse, fine)
    if "model.diffusion_model" not in key:
        return None
    kind = next((k for k in ("input", "mid", "output") if k in key), None)
    if kind is None:
        return None
    kind = kind.upper().replace("PUT", "")
    digits = "".join(re.findall(r"\d", key))
    if not digits:
        return BlockRef("M00", "M00")
    nums = digits[0] + "0" if kind == "MID" else digits[:2]
    tb = _TB.search(key)
    fine = kind + nums + (tb.group(1) if tb else "")
    coarse = {"IN": "IN0" + nums[0], "OUT": "OUT0" + nums[0], "MID": "M00"}[kind]
    return BlockRef(coarse, fine)


def _flux_block(key: str) -> Optional[BlockRef]:
    if "vae" in key:
        return None
    if "t5xxl" in key:
        name = "T5"
    elif "text_encoders.clip" in key:
        name = "CLIP"
    elif "double_blocks" in key:
        name = f"D{int(_FIRST_NUM.search(key).group(1)):02}"
    elif "single_blocks" in key:
        name = f"S{int(_FIRST_NUM.search(key).group(1)):02}"
    elif "_in" in key:
        name = "IN"
    elif "final_layer" in key:
        name = "OUT"
    else:
        return None
    return BlockRef(name, name)


def _family(name: str, label: str, mapper) -> Family:
    t = _TABLES[name]
    blocks = tuple(t["blocks"])
    return Family(name, label, blocks, tuple(t.get("slots", blocks)),
                  tuple(t["extended"]) if "extended" in t else None, mapper, tuple(t.get("comfy_configs", ())),
                  t.get("position_ids"))


FAMILIES = {
    "sd1": _family("sd1", "Stable Diffusion 1.x", _sd_block),
    "sd2": _family("sd2", "Stable Diffusion 2.x", _sd_block),
    "sdxl": _family("sdxl", "SDXL", _xl_block),
    "flux": _family("flux", "Flux", _flux_block),
}


def detect(keys: Iterable[str], where: str = "model", context_dim: Optional[int] = None) -> Family:
    """Family of a state dict from its key names (SPEC §3.1, plus SD1/SD2 told apart).

    `context_dim` (the cross-attention width, when the caller knows it) separates a U-Net-only SD2 file
    from SD1, since such a file has no text-encoder key to tell them apart.
    """
    keys = keys if isinstance(keys, (set, frozenset, dict)) else set(keys)
    if any("double_block" in k for k in keys):
        return FAMILIES["flux"]
    if any("joint_blocks" in k for k in keys):
        raise MergeError(where, "SD3 models are not supported (SuperMerger has no SD3 support either)")
    if XL_CLIPG_KEY in keys or "model.diffusion_model.label_emb.0.0.weight" in keys:
        return FAMILIES["sdxl"]
    if SD2_CLIP_KEY in keys or context_dim == 1024:
        return FAMILIES["sd2"]
    if "model.diffusion_model.input_blocks.0.0.weight" in keys or any(
            k.startswith("cond_stage_model.transformer.") for k in keys):
        return FAMILIES["sd1"]
    sample = ", ".join(sorted(keys)[:3]) or "no keys at all"
    raise MergeError(where, "not a Stable Diffusion 1.x/2.x, SDXL or Flux checkpoint in the original "
                            f"(LDM) key layout; first keys: {sample}")




def for_comfy_config(class_names: Iterable[str]) -> Optional[Family]:
    """The family of a ComfyUI model config, from its class and base-class names (most specific first)."""
    for name in class_names:
        for family in FAMILIES.values():
            if name in family.comfy_configs:
                return family
    return None


def checkpoint_constants(family: Family, keys) -> dict:
    """Keys a checkpoint of `family` holds that a loaded model does not: the CLIP position ids 0…76 (when the
    text encoder is there)."""
    key = family.position_ids
    if key is None or key in keys or not any(k.startswith(key.split(".")[0] + ".") for k in keys):
        return {}
    return {key: torch.arange(77, dtype=torch.int64).unsqueeze(0)}
