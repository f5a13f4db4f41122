"""What the editor's block-weight panel needs from the engine, as plain JSON data: each family's block lists,
the SDXL conversions, the presets, and a checkpoint's family read from its file header alone.

The panel (web/js) works from this data only, so block names, list lengths, the 26 → 20 SDXL conversion and
the fine → coarse SDXL grouping are described once, here in the engine.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Optional

from .errors import MergeError
from .families import FAMILIES, context_width, detect
from .plan import ModelInfo
from .presets import load_presets
from .sources import SafetensorsFile
from .weights import RANDOM_TOKENS

@lru_cache(maxsize=1)
def _xl_fine_coarse() -> dict:
    """Each of SDXL's 110 fine blocks → the 20-list block it belongs to, found by mapping the keys of a full
    SDXL layout through the engine's own key → block rules. `IN0` (no key ever lands there) goes with IN00."""
    from .synthetic import sdxl_layout

    family = FAMILIES["sdxl"]
    found = {"IN0": "IN00"}
    for key in sdxl_layout():
        ref = family.block_of(key)
        if ref is not None:
            found[ref.fine] = ref.coarse
    return {name: found[name] for name in family.extended}


def family_tables() -> dict:
    """Per family: label, block names (BASE first), the list lengths it takes, and for SDXL the 110 fine
    names with their 20-list block and the positions a 26-value list keeps (SPEC §4.3)."""
    out = {}
    for name, fam in FAMILIES.items():
        t = {"label": fam.label, "blocks": list(fam.blocks), "weight_counts": list(fam.weight_counts)}
        if fam.extended is not None:
            t["extended"] = list(fam.extended)
            t["fine_coarse"] = _xl_fine_coarse()
        if fam.sd_keep is not None:
            t["from_sd26"] = list(fam.sd_keep)
        out[name] = t
    return out


def preset_list(presets: Optional[dict] = None) -> list:
    """The block-weight presets in file order: name, the text as written, its value count, and whether it
    holds random tokens (R/U/X: those need the Dice Roll settings)."""
    presets = load_presets() if presets is None else presets
    out = []
    for name, text in presets.items():
        tokens = [t.strip() for t in text.strip().split(",")]
        out.append({"name": name, "text": text.strip(), "count": len(tokens),
                    "random": any(t.upper() in RANDOM_TOKENS for t in tokens)})
    return out


def editor_data(presets: Optional[dict] = None) -> dict:
    return {"families": family_tables(), "presets": preset_list(presets)}


def family_of_file(path) -> str:
    """The family name of a checkpoint from its header alone: the file is memory-mapped, and only its header
    (key names and shapes) is read. `.ckpt` files have no header to read without unpickling the whole file,
    so they are refused with a reason."""
    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        raise MergeError(f"file {path.name}", "is not a .safetensors file: its family cannot be read from a "
                                              "header; choose the family on the panel")
    with SafetensorsFile(path) as src:
        info = ModelInfo.of(src)
        return detect(info.keys, f"file {path.name}", context_width(info, info.shape)).name
