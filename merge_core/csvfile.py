"""CSV tables (E-lists, similarity tables, weight statistics) written atomically: a complete file or none."""
from __future__ import annotations

import csv
from pathlib import Path

from .atomic import atomic_write


def write_csv(path, rows, overwrite: bool = True) -> Path:
    path = Path(path)
    with atomic_write(path, overwrite, text=True, where=str(path)) as f:
        csv.writer(f).writerows(rows)
    return path
