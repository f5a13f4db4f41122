"""Adjust (SPEC §6): eight sliders that scale or shift the U-Net's first and last layers (detail, contrast,
brightness, colour). Compiled to one operation per key; applied after the calcmode."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

P = "model.diffusion_model."
ADJUST_KEYS = (P + "input_blocks.0.0.weight", P + "input_blocks.0.0.bias", P + "out.0.weight",
               P + "out.0.bias", P + "out.2.weight", P + "out.2.bias")
NAMES = ("IN", "OUT", "OUT2", "CONT", "BRI", "COL1", "COL2", "COL3")
# Latent-channel directions of brightness, cyan–red, magenta–green, yellow–blue.
COLOURS = {"sd": ((-1, 1 / 3, 2 / 3), (1, 1, 0), (0, -1, -1), (1, 0, 1)),
           "sdxl": ((0, 0, 1), (1, 0, 0), (-1, -1, 0), (-1, 1, 0))}


@dataclass(frozen=True)
class Adjustment:
    """`scale`: multiply the tensor; `shift`: add this per-channel vector (computed in f32)."""
    scale: Optional[float] = None
    shift: Optional[tuple] = None

    def apply(self, t: torch.Tensor) -> torch.Tensor:
        if self.scale is not None:
            return t * self.scale
        return t + torch.tensor(self.shift, dtype=torch.float32, device=t.device)


def parse_adjust(text: str) -> Optional[list]:
    """The eight values, or None when Adjust is off. SuperMerger: no comma → off; all zeros → off;
    unreadable values count as 0."""
    if not text or "," not in text or text.rstrip(",0") == "":
        return None
    values = [0.0] * 8
    for i, part in enumerate(t.strip() for t in text.split(",")[:8]):
        try:
            values[i] = float(part)
        except ValueError:
            pass
    return values


def colour_shift(values: list, family_name: str) -> list:
    cols = COLOURS["sdxl" if family_name == "sdxl" else "sd"]
    parts = [[y * values[i] * 0.02 for y in direction] for i, direction in enumerate(cols)]
    return [sum(x) for x in zip(*parts)]


def fineman(values: list, family_name: str) -> list:
    """SuperMerger's `fineman`: five factors and the 4-channel bias shift."""
    f = values
    return [1 - f[0] * 0.01, 1 + f[0] * 0.02, 1 - f[1] * 0.01, 1 + f[1] * 0.02, 1 - f[2] * 0.01,
            [f[3] * 0.02] + colour_shift(f[4:8], family_name)]


def compile_adjust(text: str, family_name: str) -> dict:
    """key → Adjustment for the six Adjust keys ({} when off)."""
    values = parse_adjust(text)
    if values is None:
        return {}
    fine = fineman(values, family_name)
    ops = {key: Adjustment(scale=fine[i]) for i, key in enumerate(ADJUST_KEYS[:5])}
    ops[ADJUST_KEYS[5]] = Adjustment(shift=tuple(fine[5]))
    return ops
