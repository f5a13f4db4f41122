"""SuperMerger's merge names and automatic file names (SPEC §10.2, §10.8)."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Optional

from .errors import MergeError


def stem(model: Optional[str]) -> str:
    return Path(model).stem if model else ""


def _r(x: float) -> str:
    return str(round(x, 3))


def merge_name(mode: str, calcmode: str, a: str, b: str, c: str, alpha: float, beta: float,
               weights_a: Optional[str] = None, weights_b: Optional[str] = None) -> str:
    """The human name of a merge; `weights_*` are the full block lists (BASE included) when MBW is on."""
    a, b, c = stem(a), stem(b), stem(c)
    if weights_a is not None:
        name = {
            "add_difference": f"{a} + ({b} - {c}) x alpha ({_r(alpha)},{weights_a})",
            "triple_sum": f"{a} x (1-alpha-beta) + {b} x alpha + {c} x beta (alpha = {_r(alpha)},{weights_a},"
                          f"beta = {beta},{weights_b})",
            "sum_twice": f"({a} x (1-alpha) + {b} x alpha)x(1-beta)+  {c} x beta ({_r(alpha)},{weights_a})_"
                         f"({_r(beta)},{weights_b})",
            "weight_sum": f"{a} x (1-alpha) + {b} x alpha ({_r(alpha)},{weights_a})",
        }[mode]
    else:
        name = {
            "add_difference": f"{a} + ({b} -  {c}) x {_r(alpha)}",
            "triple_sum": f"{a} x {_r(1 - alpha - beta)} + {b} x {_r(alpha)} + {c} x {_r(beta)}",
            "sum_twice": f"({a} x {_r(1 - alpha)} +{b} x {_r(alpha)}) x {_r(1 - beta)} + {c} x {_r(beta)}",
            "weight_sum": f"{a} x {_r(1 - alpha)} + {b} x {_r(alpha)}",
        }[mode]
    if calcmode != "normal":
        name += "_" + calcmode
        if calcmode == "tensor":
            name += f"_beta_{beta}"
    return name


NAME_LIMIT = 240  # characters of a file name: clear of the 255 file systems allow, room for a temporary suffix


def file_name(name: str, fp16: bool = False, ext: str = ".safetensors", in_channels: Optional[int] = None,
              custom: bool = False, number: int = 1, tag: str = "") -> str:
    """File name for a merge name: spaces dropped, `,()` → `_`, `.fp16` and inpainting suffixes; `tag` (what the
    merge name does not show, see merge.name_tag) and `number` > 1 go before the suffixes
    (`name_tag_2.fp16.safetensors`). A name too long for a file is cut after a whole value and marked with a
    hash of all of it, so two long names that differ only in the part cut off stay two names."""
    pre = ("" if number == 1 else f"_{number}") + (".fp16" if fp16 else "")
    kind = {9: "-inpainting", 8: "-instruct-pix2pix"}.get(in_channels, "")
    if custom:
        base = name[: -len(ext)] if name.endswith(ext) else name
        return base + pre + kind + ext
    base = os.path.basename(name).replace(" ", "")
    for ch in ",()":
        base = base.replace(ch, "_")
    base = (base + (f"_{tag}" if tag else "")).lstrip("_")
    room = NAME_LIMIT - len(pre + kind + ext)
    if len(base) > room:
        digest = hashlib.sha256(base.encode()).hexdigest()[:8]
        cut = base[: room - len(digest) - 1]
        cut = cut[: max(cut.rfind(c) for c in "_+-")] or cut  # after a whole value, not inside a number
        base = f"{cut}~{digest}"
    return base + pre + kind + ext


def inside(base, filename: str, suffix: str = ".safetensors") -> Path:
    """`filename` (a name or subfolder/name, `suffix` added when missing) inside the folder `base`, or an
    error: no absolute paths, drive letters, '..' or links that lead out of the folder."""
    name = filename.strip().replace("\\", "/")
    if not name:
        raise MergeError("filename", "is empty")
    parts = name.split("/")
    if name.startswith("/") or ":" in name or any(p in ("", ".", "..") for p in parts):
        raise MergeError("filename", f"'{filename}' must be a plain name or subfolder/name inside the "
                                     "destination folder (no absolute paths, drive letters or '..')")
    if not name.lower().endswith(suffix):
        name += suffix
    base = Path(base).resolve()
    path = (base / name).resolve()
    if base not in path.parents:
        raise MergeError("filename", f"'{filename}' leads outside the destination folder")
    return path


def free_name(folder, name: str, **kwargs) -> Path:
    """The first automatic file name for merge name `name` (see `file_name`) that does not exist in `folder`:
    saving the same merge again gives `name_2`, `name_3`… instead of failing."""
    number = 1
    while True:
        path = inside(folder, file_name(name, number=number, **kwargs))
        if not path.exists():
            return path
        number += 1
