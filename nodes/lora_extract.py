"""LoRA extraction nodes (SPEC §13.6, §13.9)."""
from __future__ import annotations

NODES: list = []
