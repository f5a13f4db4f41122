"""CSV tables (E-lists, similarity tables, weight statistics) written atomically: a complete file or none."""
from __future__ import annotations

import csv
import os
from pathlib import Path

from .errors import MergeError


def write_csv(path, rows, overwrite: bool = True) -> Path:
    path = Path(path)
    if path.exists() and not overwrite:
        raise MergeError(str(path), "already exists; turn on overwrite to replace it")
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    try:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows(rows)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
