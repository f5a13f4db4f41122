"""One precision vocabulary for every node and command: fp16, bf16, fp32 — and `keep` (every tensor in the dtype
it has) where a command copies weights it did not compute. SuperMerger's LoRA tab calls fp32 `float`; that word
is accepted as fp32 everywhere, and LoRA metadata (`ss_mixed_precision`) keeps SuperMerger's word."""
from __future__ import annotations

from typing import Optional

import torch

from .errors import MergeError

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
NAMES = tuple(DTYPES)
KEEP = "keep"
ALIASES = {"float": "fp32"}


def canonical(name: str, where: str = "precision", keep: bool = False) -> str:
    """The vocabulary's word for `name` (aliases resolved), or an error listing the choices."""
    name = ALIASES.get(name, name)
    if name in DTYPES or (keep and name == KEEP):
        return name
    choices = ", ".join(((KEEP,) if keep else ()) + NAMES)
    raise MergeError(where, f"'{name}' is not one of {choices}")


def dtype_of(name: str, where: str = "precision", keep: bool = False) -> Optional[torch.dtype]:
    """The dtype a precision stores floating-point weights in; None for `keep`."""
    name = canonical(name, where, keep)
    return None if name == KEEP else DTYPES[name]


def choices(keep: bool = False) -> list:
    """The options a node or command offers."""
    return ([KEEP] if keep else []) + list(NAMES)


def lora_word(name: str) -> str:
    """The precision as SuperMerger writes it into a LoRA's metadata (`float` for fp32)."""
    name = canonical(name)
    return "float" if name == "fp32" else name
