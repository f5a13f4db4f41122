"""The Recipe: what the user asked for, as plain JSON-serialisable data (DESIGN "Public contracts").

The same Recipe is what the CLI takes, what the history stores and what saved models and images carry, so
`Recipe.from_json(r.to_json()) == r` always holds and unknown fields are refused rather than dropped.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, Optional

from .errors import MergeError

VERSION = 1
MODES = ("weight_sum", "add_difference", "triple_sum", "sum_twice")
# SuperMerger's UI names, accepted on input so its history and metadata read as recipes.
MODE_ALIASES = {"weight sum": "weight_sum", "add difference": "add_difference", "triple sum": "triple_sum",
                "sum twice": "sum_twice", "add": "add_difference"}
INEX_MODES = ("off", "include", "exclude")


def normalise_mode(value: Any, where: str = "mode") -> str:
    if not isinstance(value, str):
        raise MergeError(where, f"must be one of {', '.join(MODES)}")
    text = value.split(":", 1)[0].strip()
    key = text.lower().replace("_", " ")
    mode = MODE_ALIASES.get(key, text if text in MODES else None)
    if mode is None:
        raise MergeError(where, f"unknown mode '{value}'; one of {', '.join(MODES)}")
    return mode


def _default_inex() -> dict:
    return {"mode": "off", "blocks": [], "elements": []}


@dataclass
class Recipe:
    model_a: str
    model_b: str
    model_c: Optional[str] = None
    mode: str = "weight_sum"
    calcmode: str = "normal"
    alpha: float = 0.5
    beta: float = 0.25
    gamma: float = 0.3
    weights_alpha: Optional[str] = None
    weights_beta: Optional[str] = None
    elemental: str = ""
    elemental_extended: bool = False
    include_exclude: dict = field(default_factory=_default_inex)
    adjust: str = ""
    seed: int = -1
    dice: Optional[dict] = None
    use_old_calc: bool = False
    version: int = VERSION

    def __post_init__(self):
        self.validate()

    def validate(self) -> None:
        from .calcmodes import CALCMODES  # late: calcmodes import the recipe's mode names

        self.mode = normalise_mode(self.mode)
        if self.calcmode not in CALCMODES:
            raise MergeError("calcmode", f"unknown calcmode '{self.calcmode}'; one of {', '.join(CALCMODES)}")
        for name in ("model_a", "model_b"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip():
                raise MergeError(name, "is required (a file path or checkpoint name)")
        if self.model_c is not None and not isinstance(self.model_c, str):
            raise MergeError("model_c", "must be a file path, a checkpoint name or null")
        for name in ("alpha", "beta", "gamma"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise MergeError(name, f"must be a finite number, got {value!r}")
            setattr(self, name, float(value))
        for name in ("weights_alpha", "weights_beta"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise MergeError(name, "must be null, a preset name or comma-separated numbers")
            if isinstance(value, str) and not value.strip():
                setattr(self, name, None)
        for name in ("elemental", "adjust"):
            if not isinstance(getattr(self, name), str):
                raise MergeError(name, "must be text")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < -1:
            raise MergeError("seed", f"must be a whole number ≥ -1, got {self.seed!r}")
        for name in ("use_old_calc", "elemental_extended"):
            if not isinstance(getattr(self, name), bool):
                raise MergeError(name, "must be true or false")
        if self.dice is not None:
            from .dice import DiceSettings

            if not isinstance(self.dice, dict):
                raise MergeError("dice", "must be null or an object of Dice Roll settings")
            try:
                DiceSettings.from_dict(self.dice)
            except TypeError as e:
                raise MergeError("dice", str(e)) from None
        self.include_exclude = _check_inex(self.include_exclude)
        if self.version != VERSION:
            raise MergeError("version", f"recipe version {self.version} is not known (this engine reads {VERSION})")

    # JSON -------------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self, indent: Optional[int] = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: Any) -> "Recipe":
        if not isinstance(data, dict):
            raise MergeError("recipe", "must be a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise MergeError("recipe", f"unknown field(s) {', '.join(unknown)}; known fields: "
                                       f"{', '.join(sorted(known))}")
        try:
            return cls(**data)
        except TypeError as e:  # a required field is missing
            raise MergeError("recipe", str(e).replace("__init__() ", "")) from None

    @classmethod
    def from_json(cls, text: str) -> "Recipe":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise MergeError("recipe", f"not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
        return cls.from_dict(data)

    def replace(self, **changes) -> "Recipe":
        return dataclasses.replace(self, **changes)


def _check_inex(value: Any) -> dict:
    if value is None:
        return _default_inex()
    if not isinstance(value, dict):
        raise MergeError("include_exclude", 'must be {"mode": "off|include|exclude", "blocks": [...], '
                                            '"elements": [...]}')
    unknown = set(value) - {"mode", "blocks", "elements"}
    if unknown:
        raise MergeError("include_exclude", f"unknown field(s) {', '.join(sorted(unknown))}")
    mode = str(value.get("mode", "off")).lower()
    if mode not in INEX_MODES:
        raise MergeError("include_exclude.mode", f"'{value.get('mode')}' is not one of off, include, exclude")
    out = {"mode": mode}
    for name in ("blocks", "elements"):
        items = value.get(name, [])
        if isinstance(items, str):
            items = [s for s in items.replace(",", " ").split()]
        if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
            raise MergeError(f"include_exclude.{name}", "must be a list of texts")
        out[name] = [s.strip() for s in items if s.strip()]
    return out
