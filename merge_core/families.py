"""Architecture families (SPEC §3, §4, §8, §13, Appendix B): the one place that knows block ids, list lengths,
key → block rules for checkpoints and LoRAs, and how a family is detected.

Everything a family is lives as data in `data/blocks.json`; this module reads it into `Family` objects and
evaluates its rules. The rules are ordered (SuperMerger's first match wins); the one rule that is an
algorithm rather than a table — SDXL's block from the digits of a key (SPEC §3.3 rule 6) — is a function
here, named by the data. Keys use the original LDM/SGM checkpoint names (`model.diffusion_model.…`,
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

_DATA = json.loads((Path(__file__).parent / "data" / "blocks.json").read_text(encoding="utf-8"))
_NAMES = [name for name in _DATA if not name.startswith("_") and isinstance(_DATA[name], dict)]


def _field(family: str, field: str):
    """A family's field, following '=other.field' references."""
    value = _DATA[family].get(field)
    if isinstance(value, str) and value.startswith("="):
        other, other_field = value[1:].split(".", 1)
        return _field(other, other_field)
    if isinstance(value, dict):
        return {k: (_field(*v[1:].split(".", 1)) if isinstance(v, str) and v.startswith("=") else v)
                for k, v in value.items()}
    return value


@dataclass(frozen=True)
class BlockRef:
    """Where a key sits: `coarse` indexes the 26/20/61-value MBW list, `fine` the 110-value XL list."""

    coarse: str
    fine: str


@dataclass(frozen=True)
class Rule:
    """One key → block rule: a condition (key prefix, substring or regular expression; none = always) and the
    block it gives (None: not merged). `{n}` in the block is the number the rule's pattern (or `number`)
    captured."""

    block: Optional[str]
    prefix: Optional[str] = None
    has: Optional[str] = None
    pattern: Optional[re.Pattern] = None
    number: Optional[re.Pattern] = None
    fine: Optional[str] = None
    derive: Optional[Callable] = None

    @classmethod
    def of(cls, data: dict) -> "Rule":
        derive = data.get("derive")
        return cls(data.get("block"), data.get("prefix"), data.get("has"),
                   re.compile(data["re"]) if "re" in data else None,
                   re.compile(data["number"]) if "number" in data else None,
                   data.get("fine"), _DERIVED[derive] if derive else None)

    def match(self, key: str):
        """A true value when the rule applies to `key` (the regex match when it has a pattern)."""
        if self.prefix is not None:
            return key.startswith(self.prefix)
        if self.has is not None:
            return self.has in key
        if self.pattern is not None:
            return self.pattern.search(key)
        return True

    def name(self, key: str, found) -> Optional[str]:
        if self.block is None or "{" not in self.block:
            return self.block
        number = (self.number.search(key) if self.number is not None else found).group(1)
        return self.block.format(n=int(number))


def _first(rules: tuple, key: str):
    """(rule, block name) of the first rule that applies, or (None, None)."""
    for rule in rules:
        found = rule.match(key)
        if found:
            return rule, (None if rule.derive else rule.name(key, found))
    return None, None


_TB = re.compile(r"transformer_blocks\.(\d+)\.")


def _xl_digits(key: str) -> Optional[BlockRef]:
    """SPEC §3.3 rule 6: SDXL's U-Net block from the digits of the key."""
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


_DERIVED = {"sdxl_digits": _xl_digits}


@dataclass(frozen=True, eq=False)
class LoraScheme:
    """The LoRA block ids of a family (SPEC §13.5): SD1, SD2 and SDXL share the 26, Flux has its 61."""

    blocks: tuple
    short_lists: dict  # value count → the blocks a short list sets (SPEC §13.2)
    module_rules: tuple  # module-name prefix → block, checked before the module's checkpoint key
    key_rules: tuple  # checkpoint key → block

    def module_block(self, module: str) -> Optional[int]:
        """The block index a module's name alone gives (its text-encoder prefix), else None."""
        rule, name = _first(self.module_rules, module)
        return None if rule is None else self.blocks.index(name)

    def key_block(self, key: str) -> int:
        """The block index of a checkpoint key; a block this scheme lacks (e.g. input_blocks.12) → 0."""
        _, name = _first(self.key_rules, key)
        return self.blocks.index(name) if name in self.blocks else 0


@dataclass(frozen=True)
class TextEncoder:
    """A text encoder of a family: its checkpoint key prefix, the kohya LoRA module prefixes that address it
    (the first is the one written) and its layout: clip (Hugging Face CLIP), open_clip or t5."""

    key_prefix: str
    lora_prefixes: tuple
    layout: str


@dataclass(frozen=True, eq=False)
class Family:
    name: str
    label: str
    blocks: tuple  # MBW order, BASE (or its equivalent) first
    slots: tuple  # weight-table slots a key may land in (blocks, plus XL's VAE slot)
    extended: Optional[tuple]  # SDXL's 110 fine block names
    weight_lists: tuple  # (value count, what such a list names) for every list length a weights text may have
    sd_list: Optional[tuple]  # the 26-value SD list the family converts (SDXL), else None
    sd_keep: Optional[tuple]  # the positions of `sd_list` it keeps, in its own block order
    dice_blocks: tuple  # the blocks of a Dice Roll list (SDXL: the SD list, converted afterwards)
    keys_need: tuple  # substrings one of which a key must hold to be merged (none: every key)
    key_rules: tuple
    lora: LoraScheme
    context_dim: Optional[int] = None  # the U-Net's cross-attention width
    text_encoders: tuple = ()  # TextEncoder, in the order of the checkpoint
    lora_names: str = "ldm"  # kohya's U-Net module names: "diffusers" or "ldm" paths
    lora_kind: str = ""  # families whose LoRAs cannot be told apart share one kind
    comfy_configs: tuple = ()  # ComfyUI model config classes of the family
    position_ids: Optional[str] = None  # the CLIP position-id key its checkpoints hold

    def block_of(self, key: str) -> Optional[BlockRef]:
        """The block of `key`, or None when SuperMerger never merges it."""
        if self.keys_need and not any(s in key for s in self.keys_need):
            return None
        rule, name = _first(self.key_rules, key)
        if rule is None:
            return None
        ref = rule.derive(key) if rule.derive else None if name is None else BlockRef(name, rule.fine or name)
        if ref is None or ref.coarse not in self.slots:
            return None
        return ref

    def slot_index(self, coarse: str) -> int:
        return self.slots.index(coarse)

    @property
    def weight_counts(self) -> tuple:
        """How many comma values an MBW list may have for this family (BASE included)."""
        return tuple(count for count, _ in self.weight_lists)

    @property
    def counts_text(self) -> str:
        """The list lengths for an error message, e.g. '26 (BASE,IN00…IN11,M00,OUT00…OUT11)'."""
        parts = [f"{count} ({what})" for count, what in self.weight_lists]
        return parts[0] if len(parts) == 1 else f"{', '.join(parts[:-1])} or {parts[-1]}"

    def from_sd_list(self, values: list) -> list:
        """A 26-value SD list (BASE first) on this family's blocks: SuperMerger's `weighttoxl` (SPEC §4.3)."""
        return [values[i] for i in self.sd_keep]


def _family(name: str) -> Family:
    t = _DATA[name]
    blocks = tuple(_field(name, "blocks"))
    lora = _field(name, "lora")
    sd_list = _field(name, "sd_list")
    return Family(
        name, t["label"], blocks, tuple(_field(name, "slots") or blocks),
        tuple(t["extended"]) if "extended" in t else None,
        tuple((count, what) for count, what in _field(name, "weight_lists")),
        tuple(sd_list["blocks"]) if sd_list else None, tuple(sd_list["keep"]) if sd_list else None,
        tuple(_field(name, "dice_blocks")), tuple(t.get("keys_need", ())),
        tuple(Rule.of(r) for r in _field(name, "key_rules")),
        _scheme(tuple(lora["blocks"]), lora), t.get("context_dim"),
        tuple(TextEncoder(e["key_prefix"], tuple(e["lora_prefixes"]), e["layout"]) for e in t["text_encoders"]),
        t["lora_names"], t["lora_kind"], tuple(t.get("comfy_configs", ())), t.get("position_ids"))


_SCHEMES: dict = {}


def _scheme(blocks: tuple, data: dict) -> LoraScheme:
    """Families that share a LoRA description share one scheme object."""
    key = json.dumps(data, sort_keys=True)
    if key not in _SCHEMES:
        _SCHEMES[key] = LoraScheme(blocks, {int(n): tuple(ids) for n, ids in data["short_lists"].items()},
                                   tuple(Rule.of(r) for r in data["module_rules"]),
                                   tuple(Rule.of(r) for r in data["key_rules"]))
    return _SCHEMES[key]


FAMILIES = {name: _family(name) for name in _NAMES}

_DETECT = _DATA["detect"]
CONTEXT_KEY = _DATA["context_key"]
XL_CLIPG_KEY = next(r for r in _DETECT if r.get("family") == "sdxl")["keys"][0]
SD2_CLIP_KEY = next(r for r in _DETECT if r.get("family") == "sd2")["keys"][0]


def _detected(rule: dict, keys, context_dim: Optional[int]) -> bool:
    if any(k in keys for k in rule.get("keys", ())):
        return True
    if rule.get("context_dim") and context_dim is not None and context_dim == FAMILIES[rule["family"]].context_dim:
        return True
    if rule.get("key_has") and any(s in k for k in keys for s in rule["key_has"]):
        return True
    return bool(rule.get("key_prefixes")) and any(k.startswith(tuple(rule["key_prefixes"])) for k in keys)


def detect(keys: Iterable[str], where: str = "model", context_dim: Optional[int] = None) -> Family:
    """Family of a state dict from its key names (SPEC §3.1, plus SD1/SD2 told apart).

    `context_dim` (the cross-attention width, when the caller knows it: `context_width`) separates a
    U-Net-only SD2 file from SD1, since such a file has no text-encoder key to tell them apart.
    """
    keys = keys if isinstance(keys, (set, frozenset, dict)) else set(keys)
    for rule in _DETECT:
        if _detected(rule, keys, context_dim):
            if "refuse" in rule:
                raise MergeError(where, rule["refuse"])
            return FAMILIES[rule["family"]]
    sample = ", ".join(sorted(keys)[:3]) or "no keys at all"
    raise MergeError(where, "not a Stable Diffusion 1.x/2.x, SDXL or Flux checkpoint in the original "
                            f"(LDM) key layout; first keys: {sample}")


def context_width(keys, shape: Callable) -> Optional[int]:
    """The U-Net's cross-attention width (for `detect`), from `shape(key)`; None when the key is absent."""
    return shape(CONTEXT_KEY)[-1] if CONTEXT_KEY in keys else None


def detect_lora(modules: list, input_width: Callable) -> Family:
    """The family a LoRA is for, from its module names and `input_width(module)` (a module's input width, or
    None) (SPEC §13.11)."""
    if any("double_blocks" in n or "single_blocks" in n for n in modules):
        return FAMILIES["flux"]
    if any(n.startswith(("lora_te1_", "lora_te2_")) for n in modules):
        return FAMILIES["sdxl"]
    by_width = {f.context_dim: f for f in FAMILIES.values() if f.context_dim}
    for n in modules:
        if n.endswith("attn2_to_k") and input_width(n) in by_width:
            return by_width[input_width(n)]
    for n in modules:  # no cross-attention module: the text encoder's width tells SD1 from SD2
        if n.startswith("lora_te_") and n.endswith("self_attn_q_proj"):
            sd2 = FAMILIES["sd2"]
            return sd2 if input_width(n) == sd2.context_dim else FAMILIES["sd1"]
    # kohya names SDXL U-Net modules in the LDM layout and SD1/SD2 ones in the diffusers layout
    if any(n.startswith("lora_unet_") and ("input_blocks_" in n or "output_blocks_" in n) for n in modules):
        return FAMILIES["sdxl"]
    return FAMILIES["sd1"]


def lora_family_of_model(unet_keys: Iterable[str]) -> Family:
    """The family whose LoRA block ids a loaded model takes, from its U-Net keys: Flux's 61 when it has Flux's
    double blocks (Flux-like models of other ComfyUI configs too), else the 26 SD1, SD2 and SDXL share."""
    flux = next(r for r in _DETECT if r.get("family") == "flux")
    return FAMILIES["flux"] if _detected(flux, unet_keys, None) else FAMILIES["sd1"]


def of_list_length(count: int) -> Optional[Family]:
    """The first family whose own block list (or extended list) has `count` values, or None."""
    return next((f for f in FAMILIES.values() if count in (len(f.blocks), len(f.extended or ()))), None)


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
