"""Elemental merge (SPEC §7): `BLOCKS:ELEMENTS:RATIO` entries that override α for matching keys.

Blocks are block ids (ranges `A-B`, leading `NOT`), elements are key substrings (leading `NOT`), the ratio a
number or a random token (R, U, X: drawn from the dice table, §8.5). Later entries win.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from .errors import MergeError
from .families import BlockRef, Family

RANDOM = ("R", "U", "X")


def is_random(ratio: str) -> bool:
    """R, U or X (any case): a random ratio. SuperMerger takes any text holding an upper-case R, U or X."""
    return ratio.strip().upper() in RANDOM


def has_random_ratio(text: str) -> bool:
    """Whether any well-formed entry of an elemental text asks for a random ratio (R, U, X)."""
    return any(is_random(e.split(":")[-1]) for e in (text or "").replace("\n", ",").split(",") if e.count(":") == 2)


@dataclass(frozen=True)
class Rule:
    text: str
    blocks: frozenset  # empty: every block
    blocks_not: bool
    elements: tuple  # ("",) matches every key
    elements_not: bool
    ratio: str  # a number, or a text holding R/U/X

    def hits(self, block: str, key: str) -> bool:
        if self.blocks and (block in self.blocks) == self.blocks_not:
            return False  # (no block listed, with or without NOT: every block, as in SuperMerger)
        return any(e in key for e in self.elements) != self.elements_not


def expand_blocks(text: str, ids: tuple, where: str) -> list:
    """SuperMerger's `blocker`: space-separated ids and inclusive `A-B` ranges (either order) in id order."""
    out = []
    for word in text.split(" "):
        if "-" in word:
            ends = [w.strip() for w in word.split("-")]
            if len(ends) != 2 or any(e not in ids for e in ends):
                raise MergeError(where, f"range '{word}' needs two block ids of this model ({ids[0]}…{ids[-1]})")
            lo, hi = sorted(ids.index(e) for e in ends)
            out += ids[lo:hi + 1]
        else:
            out.append(word)
    return out


def parse_elemental(text: str, family: Family, extended: bool, calcmode: str = "") -> list:
    """Rules in order. An entry that is not BLOCKS:ELEMENTS:RATIO is an error naming it (SuperMerger ignores
    entries without exactly two colons, so a typo merged nothing differently and said nothing)."""
    if not text or not text.strip():
        return []
    if calcmode:
        text = text.replace("\n", ",").replace(calcmode + ",", "")  # a legacy prefix SuperMerger strips
    ids = family.extended if extended else family.slots
    rules = []
    for entry, where, blocks_text, elements_text, ratio in _entries(text):
        words = expand_blocks(blocks_text, ids, where) if blocks_text else [""]
        blocks_not = words[0] == "NOT"
        blocks = [w for w in (words[1:] if blocks_not else words) if w]
        unknown = [b for b in blocks if b not in ids]
        if unknown:
            raise MergeError(where, f"unknown block {unknown[0]} for {family.label}"
                                    f"{' (extended XL names)' if extended else ''}")
        elements = elements_text.split(" ")
        elements_not = elements[0] == "NOT"
        if elements_not:
            elements = elements[1:]
        rules.append(Rule(entry, frozenset(blocks), blocks_not, tuple(elements), elements_not, ratio))
    return rules


def check_syntax(text: str) -> None:
    """What can be checked before a model is known: every entry BLOCKS:ELEMENTS:RATIO with a ratio that is a
    number or R/U/X (the Elemental node checks this as it runs, so a typo is reported by that node)."""
    for _entry in _entries(text or ""):
        pass


def _entries(text: str):
    """(entry, where, blocks, elements, ratio) of each entry, its shape and ratio checked."""
    for entry in text.replace("\n", ",").split(","):
        if not entry.strip():
            continue
        where = f"elemental entry '{entry.strip()}'"
        if entry.count(":") != 2:
            raise MergeError(where, "is not BLOCKS:ELEMENTS:RATIO (e.g. OUT03-OUT05:attn2:0.8, or IN01::0.5 for a "
                                    "whole block); entries are separated by commas or new lines")
        blocks_text, elements_text, ratio = (p.strip() for p in entry.split(":"))
        if not is_random(ratio):
            try:
                float(ratio)
            except ValueError:
                raise MergeError(where, f"ratio '{ratio}' is not a number or R, U, X (a random ratio)") from None
        yield entry.strip(), where, blocks_text, elements_text, ratio


def unmatched(rules: list, seen: list) -> list:
    """The rules that change no key, as notes: `seen` holds (block, key) of every key the rules were tried on
    (block: the name the rules compare, fine or coarse)."""
    return [f"elemental entry '{rule.text}' matches no key of this model (its blocks and element names: see "
            "the Model Elements node or `keys`)" for rule in rules if not any(rule.hits(b, k) for b, k in seen)]


@dataclass(frozen=True)
class Elemental:
    rules: tuple
    extended: bool
    random_ratio: Optional[Callable] = None  # (ratio text, block index, key index) -> float

    def alpha(self, ref: BlockRef, key: str, block_index: int, key_index: int, alpha: float) -> float:
        block = ref.fine if self.extended else ref.coarse
        for rule in self.rules:
            if rule.hits(block, key):
                alpha = self._ratio(rule, block_index, key_index)
        return alpha

    def _ratio(self, rule: Rule, block_index: int, key_index: int) -> float:
        if is_random(rule.ratio):
            if self.random_ratio is None:
                raise MergeError(f"elemental entry '{rule.text}'", "a random ratio needs a seed")
            return self.random_ratio(rule.ratio, block_index, key_index)
        return float(rule.ratio)
