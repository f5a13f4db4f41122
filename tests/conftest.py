import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from merge_core import DictSource, Inputs, Recipe, merge_to_dict  # noqa: E402
from merge_core.synthetic import tiny_sd1, tiny_sdxl  # noqa: E402

CONV_IN = "model.diffusion_model.input_blocks.0.0.weight"


@pytest.fixture(autouse=True)
def _hash_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("SUPERMERGER_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


def merge(a: dict, b: dict, c: dict = None, **fields) -> dict:
    """Run a recipe on in-memory state dicts and return the merged dict."""
    recipe = Recipe(model_a="A", model_b="B", model_c="C" if c is not None else None, **fields)
    inputs = Inputs(DictSource(a, "A"), DictSource(b, "B"), DictSource(c, "C") if c is not None else None)
    return merge_to_dict(recipe, inputs).tensors


def vec(*values, dtype=torch.float32):
    return torch.tensor(values, dtype=dtype)


def one_key(values, key=CONV_IN, dtype=torch.float32):
    """A state dict with a single real SD1 key, enough for detection, holding an oracle's vector."""
    return {key: torch.tensor(values, dtype=dtype)}


@pytest.fixture(scope="session")
def sd1():
    return [tiny_sd1(seed) for seed in (1, 2, 3)]


@pytest.fixture(scope="session")
def sdxl():
    return [tiny_sdxl(seed) for seed in (1, 2, 3)]


def snapshot(sd: dict) -> dict:
    return {k: v.clone() for k, v in sd.items()}


def assert_unchanged(before: dict, after: dict):
    assert before.keys() == after.keys()
    for k in before:
        assert torch.equal(before[k], after[k]), k
