"""History weight analysis (SPEC §14.3): for chosen merges, the mean and spread of the α each block got.

Each merge's α per block comes from its stored recipe, resolved the way its merge resolved it (presets, the
SDXL conversion, the dice roll with the recorded seed), so the figures describe what was really merged.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import MergeError
from .families import FAMILIES, of_list_length
from .plan import block_alphas


def parse_ids(text: str) -> list:
    """'3, 5-8, -1' → [3, 5, 6, 7, 8, -1]: IDs and ranges; negative IDs count back from the last merge, so
    '-3--1' is the last three."""
    ids = []
    for part in (p.strip() for p in text.replace(" ", ",").split(",")):
        if not part:
            continue
        try:
            if "-" in part[1:]:
                lo, hi = part[0] + part[1:].split("-", 1)[0], part[1:].split("-", 1)[1]
                lo, hi = int(lo), int(hi)
                if hi < lo or (lo < 0) != (hi < 0) or 0 in (lo, hi):
                    raise ValueError
                ids.extend(range(lo, hi + 1))
            else:
                ids.append(int(part))
        except ValueError:
            raise MergeError("ids", f"'{part}' is not an ID, a negative ID or a range like 5-8") from None
    if not ids:
        raise MergeError("ids", "name at least one merge ID (e.g. 3, 5-8, -1)")
    return ids


def _family(entry):
    if entry.family in FAMILIES:
        return FAMILIES[entry.family]
    text = entry.recipe.weights_alpha or ""
    count = len(text.split(",")) if "," in text else 26
    return of_list_length(count) or FAMILIES["sd1"]


@dataclass(frozen=True)
class WeightStats:
    ids: tuple
    labels: tuple
    mean: tuple
    std: tuple  # population standard deviation, as SuperMerger's

    def rows(self) -> list:
        """(block, mean, σ, 2σ, 3σ), rounded to 3 decimals as SuperMerger shows them."""
        return [(b, round(m, 3), round(s, 3), round(2 * s, 3), round(3 * s, 3))
                for b, m, s in zip(self.labels, self.mean, self.std)]

    def table_text(self) -> str:
        head = f"merges {', '.join(map(str, self.ids))}\nblock\tmean\tσ\t2σ\t3σ"
        return "\n".join([head] + ["\t".join(map(str, r)) for r in self.rows()])


def block_series(entries: list) -> tuple:
    """(block labels, one α list per entry): what each merge gave each block. All entries must be of one kind
    (the same list of blocks)."""
    if not entries:
        raise MergeError("ids", "no merges chosen")
    lists, labels = [], None
    for e in entries:
        family = _family(e)
        try:
            values = block_alphas(e.recipe, family)
        except MergeError as err:
            raise err.at(f"merge {e.id}:") from None
        names = family.extended if len(values) == len(family.extended or ()) else family.blocks
        if labels is None:
            labels, first = tuple(names), e.id
        elif tuple(names) != labels:
            raise MergeError(f"merge {e.id}", f"has {len(values)} block weights ({family.label}) but merge {first} "
                                              f"has {len(labels)}: compare merges of one kind")
        lists.append(values)
    return labels, lists


def weight_stats(entries: list) -> WeightStats:
    """Per-block mean and spread of α over `entries` (history entries of one model family)."""
    labels, lists = block_series(entries)
    n = len(lists)
    mean = [sum(col) / n for col in zip(*lists)]
    std = [math.sqrt(sum((x - m) ** 2 for x in col) / n) for col, m in zip(zip(*lists), mean)]
    return WeightStats(tuple(e.id for e in entries), labels, tuple(mean), tuple(std))
