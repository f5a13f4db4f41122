"""The LoRA list syntax `name:ratio[:blocks]` (SPEC §13.2) and LoRA tags in prompts (§13.12).

Entries are separated by commas (or new lines); a comma-separated token without `:` continues the entry
before it, so an explicit block list can be written inline: `style:1:1,0,0,0,1,1,1,0,0,0,0,0,0,0,0,0,0`.
`blocks` is a LoRA block-weight preset name (block_presets/lora_presets.tsv, or a file of your own in the
same format) or 12/17/20/26/61 numbers. Every entry resolves to one ratio per block of the 26 LoRA ids
SD1, SD2 and SDXL share (families.LoraScheme); a 61-value Flux list is kept as it is.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from ..errors import MergeError, suggest
from ..families import FAMILIES
from ..presets import LORA_FILE, load_presets

_SD, _FLUX = FAMILIES["sd1"].lora, FAMILIES["flux"].lora  # SD1, SD2 and SDXL share the 26 ids
BLOCKID26 = _SD.blocks
SHORT_LISTS = _SD.short_lists  # the blocks each short list names; to26 leaves every other block at 0
FLUX_LENGTH = len(_FLUX.blocks)
SD_LENGTHS = tuple(sorted(SHORT_LISTS)) + (len(BLOCKID26),)
LIST_LENGTHS = SD_LENGTHS + (FLUX_LENGTH,)


def _lengths_text(lengths: tuple) -> str:
    return f"{', '.join(map(str, lengths[:-1]))} or {lengths[-1]}"


def to26(values) -> list:
    """Place a 12/17/20-value list on the 26 block ids (missing blocks 0); 26 and 61 values unchanged."""
    values = list(values)
    if len(values) == len(BLOCKID26) or len(values) > 40:
        return values
    if len(values) not in SHORT_LISTS:
        raise ValueError(f"a LoRA block list has {', '.join(map(str, LIST_LENGTHS))} values, not {len(values)}")
    out = [0.0] * len(BLOCKID26)
    for name, value in zip(SHORT_LISTS[len(values)], values):
        out[BLOCKID26.index(name)] = value
    return out


@dataclass(frozen=True)
class LoraEntry:
    """One `name:ratio[:blocks]` entry."""

    name: str
    ratio: float
    ratio_text: str  # as written, for the merged file's metadata
    blocks: Optional[str]  # the preset name or block list as written; None for `name:ratio`
    weights: tuple  # one ratio per block: 26 values, or 61 for a Flux list

    def weights_for(self, family, where: str = "loras") -> tuple:
        """The per-block ratios for a model family: Flux lists are padded to 61 with their first value
        (SPEC §13.7); a 61-value list on another family is refused."""
        name = getattr(family, "name", family)
        if name == "flux":
            return self.weights + (self.weights[0],) * (FLUX_LENGTH - len(self.weights))
        if len(self.weights) == FLUX_LENGTH:
            raise MergeError(where, f"{self.name}: {FLUX_LENGTH} block values are a Flux list; this is a "
                                    f"{FAMILIES[name].label} model (use {_lengths_text(SD_LENGTHS)} values)")
        return self.weights


def lora_presets(extra: Optional[Path] = None) -> dict:
    """LoRA block-weight presets by name → values; only lines with 12/17/20/26/61 numbers qualify."""
    out = {}
    for name, text in load_presets(LORA_FILE, extra).items():
        try:
            values = [float(v) for v in text.split(",")]
        except ValueError:
            continue
        if len(values) in LIST_LENGTHS:
            out[name] = values
    return out


def _number(text: str, where: str, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise MergeError(where, f"{what} '{text.strip()}' is not a number") from None
    if not math.isfinite(value):
        raise MergeError(where, f"{what} is {text.strip()}; ratios must be finite numbers")
    return value


def _fields(text: str, where: str) -> list:
    """Split the list into entries' fields; a token without ':' continues the previous entry."""
    entries = []
    for token in re.split(r"[,\n]", text):
        token = token.strip()
        if not token:
            continue
        if ":" in token:
            entries.append([f.strip() for f in token.split(":")])
        elif entries:
            entries[-1].append(token)
        else:
            raise MergeError(where, f"'{token}' has no ratio; write name:ratio (e.g. {token}:1)")
    return entries


def parse_entry(fields: list, presets: dict, where: str = "loras") -> LoraEntry:
    name, ratio_text, blocks = fields[0], fields[1], fields[2:]
    if not name:
        raise MergeError(where, f"an entry has no LoRA name (':{ratio_text}')")
    ratio = _number(ratio_text, where, f"{name}: ratio")
    if not blocks:
        return LoraEntry(name, ratio, ratio_text, None, (ratio,) * len(BLOCKID26))
    if len(blocks) == 1 and blocks[0] in presets:
        values = [v * ratio for v in presets[blocks[0]]]
        return LoraEntry(name, ratio, ratio_text, blocks[0], tuple(to26(values)))
    if len(blocks) == 1:
        try:
            float(blocks[0])
        except ValueError:
            raise MergeError(where, f"{name}: unknown block-weight preset '{blocks[0]}'"
                                    f"{suggest(blocks[0], list(presets), 'Presets')}") from None
    if len(blocks) not in LIST_LENGTHS:
        raise MergeError(where, f"{name}: {len(blocks)} block value(s); a block list has "
                                f"{_lengths_text(LIST_LENGTHS)} values (BASE first), or name a preset")
    values = [_number(b, where, f"{name}: block value {i + 1}") for i, b in enumerate(blocks)]
    # An explicit list is used as written: the entry's ratio does not scale it (SPEC §13.2).
    return LoraEntry(name, ratio, ratio_text, ",".join(blocks), tuple(to26(values)))


def parse_list(text: str, presets: Optional[dict] = None, where: str = "loras") -> list:
    """All entries of a LoRA list text. `presets` defaults to the shipped LoRA presets."""
    presets = lora_presets() if presets is None else presets
    entries = [parse_entry(f, presets, where) for f in _fields(text or "", where)]
    if not entries:
        raise MergeError(where, "no LoRA given; write name:ratio[:blocks] entries separated by commas")
    return entries


_TAG = re.compile(r"<(lora|lyco):([^>]+)>")


def _item(items: list, keys: tuple, index: int):
    """A tag's value: the first item holding one of `keys` (`unet=0.5`), else the positional item."""
    for key in keys:
        for item in items:
            if key in item:
                return item.replace(key, "")
    if index >= len(items):
        return None
    return 1 if "@" in items[index] else items[index]


def from_prompt(prompt: str) -> str:
    """`<lora:name:w[:lbw]>` / `<lyco:…>` tags of a prompt as a LoRA list (`name:w[:lbw]`, comma-joined).

    The multiplier is the `unet=` item, else `te=`, else the second item (`@…` → 1; none → 1, where
    SuperMerger fails); the blocks are the `lbw=` item, else a third item without `=`.
    """
    out = []
    for _kind, body in _TAG.findall(prompt or ""):
        items = body.split(":")
        multiplier = _item(items, ("unet=", "te="), 1)
        multiplier = 1.0 if multiplier is None else _number(str(multiplier), "prompt", f"{items[0]}: multiplier")
        lbw = _item(items, ("lbw=",), 2)
        if lbw is not None and "=" in str(lbw):
            lbw = None  # another option (start=, stop=, …), not a block list
        out.append(":".join([items[0].strip(), str(multiplier)] + ([str(lbw).strip()] if lbw is not None else [])))
    return ",".join(out)
