"""Block-weight presets read from the pack's `block_presets/` folder (SPEC §4.5, Appendix A).

`merge_core` never imports its siblings, so the folder is found by path: the repository root is the
parent of this package; an installed wheel carries the folder inside the package as `_presets`. A user's own
presets file (same format) can be added with `extra`.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Iterable, Optional

_HERE = Path(__file__).resolve().parent
PRESET_DIR = next((d for d in (_HERE.parent / "block_presets", _HERE / "_presets") if d.is_dir()),
                  _HERE.parent / "block_presets")
MBW_FILE = PRESET_DIR / "mbw_presets.tsv"
LORA_FILE = PRESET_DIR / "lora_presets.tsv"


def parse_preset_lines(lines: Iterable[str]) -> dict:
    """SuperMerger's rule: split each line at the first TAB, else at the first ':'; the name is stripped,
    the value is kept as written. A header line `preset_name<TAB>preset_weights` is skipped."""
    presets = {}
    for line in lines:
        line = line.rstrip("\r\n")
        if "\t" in line:
            name, value = line.split("\t", 1)
        elif ":" in line:
            name, value = line.split(":", 1)
        else:
            continue
        name = name.strip()
        if name and name != "preset_name":
            presets[name] = value
    return presets


@lru_cache(maxsize=8)
def _load(path: str, mtime: float) -> dict:
    return parse_preset_lines(Path(path).read_text(encoding="utf-8").splitlines())


def load_presets(path: Path = MBW_FILE, extra: Optional[Path] = None) -> dict:
    """Presets by name; a name in `extra` overrides the shipped one."""
    presets = dict(_load(str(path), path.stat().st_mtime))
    if extra is not None and Path(extra).is_file():
        extra = Path(extra)
        presets.update(_load(str(extra), extra.stat().st_mtime))
    return presets


def mbw_preset_names(count: int = 26) -> list:
    """Names of presets with exactly `count` values, in file order (the dropdown list of SPEC §4.5)."""
    return [n for n, v in load_presets().items() if len(v.split(",")) == count]
