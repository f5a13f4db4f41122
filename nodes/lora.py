"""LoRA nodes (SPEC §13): merge LoRAs, bake them into a model with block weights, extract them."""
from __future__ import annotations

NODES: list = []
