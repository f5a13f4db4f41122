"""MBW block-weight lists: text or preset name → one weight per block (SPEC §4).

A list is `BASE,<block 1>,…` in the family's block order. The first value replaces the α (or β) slider
for BASE keys; the others apply to their blocks. SDXL also takes a 26-value SD list (converted, §4.3) and
the 110-value extended list (§4.4), in which every fine block has its own slot.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional

from .errors import MergeError, suggest
from .families import BlockRef, Family
from .presets import load_presets

RANDOM_TOKENS = ("R", "U", "X", "D", "ER", "EU", "EX")


@dataclass(frozen=True)
class BlockWeights:
    base: float
    values: tuple  # per block after BASE, in the family's order (extended: the 110-list order)
    extended: bool = False

    def for_block(self, family: Family, ref: BlockRef) -> float:
        if self.extended:
            # Every fine block has its own slot; unlike SuperMerger the VAE uses the VAE slot (SPEC §17 #6).
            index = family.extended.index(ref.fine)
        else:
            index = family.slot_index(ref.coarse)
        return self.base if index == 0 else self.values[index - 1]

    def as_list(self) -> list:
        return [self.base, *self.values]


def expand_preset(text: str, where: str, presets: Optional[dict] = None) -> str:
    """A text with no comma is a preset name (SPEC §4.5); anything else is returned unchanged."""
    text = (text or "").strip()
    if not text or "," in text:
        return text
    presets = load_presets() if presets is None else presets
    if text in presets:
        return presets[text].strip()
    try:
        float(text)
    except ValueError:
        raise MergeError(where, f"unknown preset '{text}'{suggest(text, sorted(presets), 'Presets')}") from None
    raise MergeError(where, f"a single number '{text}' is not a block-weight list; give one value per "
                            "block separated by commas, or a preset name")


def parse_block_weights(text: Optional[str], family: Family, where: str,
                        presets: Optional[dict] = None) -> Optional[BlockWeights]:
    """Parse a weights text (or preset name) for `family`; None when the text is empty."""
    numbers = parse_numbers(text, where, presets)
    if numbers is None:
        return None
    n = len(numbers)
    if n not in family.weight_counts:
        raise MergeError(where, f"{family.label} takes {family.counts_text} block weights (BASE first); "
                                f"got {n}")
    if family.sd_list and n == len(family.sd_list):
        numbers = family.from_sd_list(numbers)
    base, rest = numbers[0], numbers[1:]
    return BlockWeights(base, tuple(rest), extended=family.extended is not None and n == len(family.extended))


def parse_numbers(text: Optional[str], where: str, presets: Optional[dict] = None) -> Optional[list]:
    """The numbers of a weights text (or preset name), checked as far as no model is needed (how many a model
    takes is checked when it is known); None when the text is empty. Parameter nodes call this as they run, so
    a typo is reported by the node it was typed into."""
    text = expand_preset(text, where, presets)
    if not text:
        return None
    tokens = [t.strip() for t in text.split(",")]
    numbers = []
    for pos, token in enumerate(tokens):
        if token.upper() in RANDOM_TOKENS:
            raise MergeError(where, f"value {pos + 1} is the random token '{token}'; random weights need the "
                                    "Dice Roll settings (a recipe 'dice' entry or the Dice Roll node)")
        try:
            value = float(token)
        except ValueError:
            raise MergeError(where, f"value {pos + 1} ('{token}') is not a number") from None
        if not math.isfinite(value):
            raise MergeError(where, f"value {pos + 1} is {token}; weights must be finite numbers")
        numbers.append(value)
    return numbers
