"""Let the Dice Roll (SPEC §8): random block weights from one seed.

A seed fills SuperMerger's table of uniform numbers (numpy's legacy generator), and tokens in a weights
list are rewritten from it: `R` in [0, 1), `U` in (−0.5, 1.5], `X` between the lower and upper limits,
`D` around a centre, `ER`/`EU`/`EX` hand the block to elemental random ratios. The same recipe (seed
included) therefore always gives the same weights.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from .errors import MergeError

MODES = ("off", "R", "U", "X", "D", "ER", "EU", "EX", "custom")
OFFSETS = {"alpha": 0, "beta": 50, "elemental": 100}  # SuperMerger's RANDMAP: where each list reads the table
DEFAULT_CUSTOM = "U,0,0,0,0,0,0,0,0,0,0,0,0,R,R,R,R,R,R,R,R,R,R,R,R,R"
FIELDS = {"mode", "alpha", "beta", "custom", "upper", "lower", "clamp_upper", "clamp_lower", "round", "extend_xl"}


def draw_seed() -> int:
    return random.randrange(4294967294)


@dataclass
class DiceSettings:
    mode: str = "off"
    alpha: bool = True  # randomise the α list
    beta: bool = False  # randomise the β list
    custom: str = DEFAULT_CUSTOM
    upper: str = "1"  # "Upper limit for X, mid point of D" (one value, or one per block)
    lower: str = "0"  # "Lower limit for X, range of D"; a value may be "<v>R<p>"
    clamp_upper: Optional[str] = None  # clamps for every token; none by default (SPEC §17 #7)
    clamp_lower: Optional[str] = None
    round: int = 3
    extend_xl: bool = False

    @classmethod
    def from_dict(cls, data: Optional[dict]) -> "DiceSettings":
        data = data or {}
        unknown = set(data) - FIELDS
        if unknown:
            raise MergeError("dice", f"unknown setting(s) {', '.join(sorted(unknown))}; known: "
                                     f"{', '.join(sorted(FIELDS))}")
        s = cls(**data)
        if s.mode not in MODES:
            raise MergeError("dice.mode", f"'{s.mode}' is not one of {', '.join(MODES)}")
        if not isinstance(s.round, int) or s.round < 0:
            raise MergeError("dice.round", "must be a whole number ≥ 0")
        return s


def random_table(seed: int, size: int = 3000) -> np.ndarray:
    """SuperMerger's `randomer`, extended past 3000 values for models with more keys (same first 3000)."""
    state = np.random.RandomState(seed)
    return state.random_sample(max(3000, size))


def _values(text: Optional[str], n: int, where: str) -> Optional[list]:
    if text is None or str(text).strip() == "":
        return None
    items = [t.strip() for t in str(text).split(",")]
    if len(items) == 1:
        items = items * n
    if len(items) < n:
        raise MergeError(where, f"has {len(items)} values; give one, or one per block ({n})")
    return items


def _float(text: str, where: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise MergeError(where, f"'{text}' is not a number") from None


def dice_tokens(settings: DiceSettings, count: int) -> Optional[str]:
    """The token list a dice mode puts into a weights box (SuperMerger's `crazyslot`)."""
    if settings.mode == "off":
        return None
    if settings.mode == "custom":
        items = [t.strip() for t in settings.custom.split(",")]
        return ",".join(items * count if len(items) == 1 else items)
    return ",".join([settings.mode] * count)


@dataclass
class Roll:
    """Token rewriting for one list; E-tokens become elemental entries."""
    text: str
    elemental: str = ""
    values: dict = field(default_factory=dict)


def rewrite(text: str, table: np.ndarray, offset: int, settings: DiceSettings, block_names: tuple,
            seed: int, where: str) -> Roll:
    """SuperMerger's `randdealer`: replace R, U, X, D and E* tokens of a weights text."""
    tokens = [t.strip() for t in text.split(",")]
    n = len(tokens)
    up, low = _values(settings.upper, n, "dice.upper"), _values(settings.lower, n, "dice.lower")
    cup, clow = _values(settings.clamp_upper, n, "dice.clamp_upper"), _values(settings.clamp_lower, n, "dice.clamp_lower")
    coin = random.Random(seed)  # the R<p> probabilities (unseeded in SuperMerger)

    def lim(v, i):
        if cup is not None:
            v = min(v, _float(cup[i], "dice.clamp_upper"))
        if clow is not None:
            v = max(v, _float(clow[i], "dice.clamp_lower"))
        return round(v, settings.round)

    def limits(i, token):
        """(lower, upper). A lower limit `vRp` is v with probability p; otherwise X gets 0 (both limits
        0) and D its centre (width 0), as SuperMerger does."""
        lo, hi = low[i], _float(up[i], "dice.upper")
        if "R" in lo:
            value, p = lo.split("R", 1)
            if coin.random() > _float(p, "dice.lower"):
                return (0.0, 0.0) if token == "X" else (0.0, hi)
            lo = value
        return _float(lo, "dice.lower"), hi

    out, elem = [], {"R": [], "U": [], "X": []}
    for i, token in enumerate(tokens):
        r = table[i + offset]
        t = token.upper()
        if t == "R":
            out.append(str(lim(r, i)))
        elif t == "U":
            out.append(str(lim(-2 * r + 1.5, i)))
        elif t == "X":
            lo, hi = limits(i, "X")
            out.append(str(lim((lo - hi) * r + hi, i)))
        elif t == "D":
            lo, hi = limits(i, "D")
            out.append(str(lim(hi + lo * (r - 0.5), i)))
        elif t in ("ER", "EU", "EX"):
            if i < len(block_names) and block_names[i]:
                elem[t[1]].append(block_names[i])
            out.append("0")
        else:
            out.append(token)
    entries = [f"{' '.join(ids)}::{kind}" for kind, ids in elem.items() if ids]
    return Roll(",".join(out), ",".join(entries))


def elemental_ratio(table: np.ndarray, settings: DiceSettings):
    """SuperMerger's `eratiodealer` for random elemental ratios (no clamping)."""
    def ratio(text: str, block_index: int, key_index: int) -> float:
        r = table[key_index + OFFSETS["elemental"]]
        t = text.strip().upper()
        if t == "R":
            return round(r, settings.round)
        if t == "U":
            return round(-2 * r + 1, settings.round)
        if t == "X":
            n = max(block_index + 1, 26)
            up = _values(settings.upper, n, "dice.upper")
            low = _values(settings.lower, n, "dice.lower")
            lo, hi = _float(low[block_index].split("R")[0], "dice.lower"), _float(up[block_index], "dice.upper")
            return round((lo - hi) * r + hi, settings.round)
        raise MergeError("elemental", f"random ratio '{text}' must be R, U or X")
    return ratio
