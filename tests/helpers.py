"""Shared test helpers (imported by the tests; conftest.py only holds fixtures)."""
import torch

from merge_core import DictSource, Inputs, Recipe, merge_to_dict

CONV_IN = "model.diffusion_model.input_blocks.0.0.weight"


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


def snapshot(sd: dict) -> dict:
    return {k: v.clone() for k, v in sd.items()}


def assert_unchanged(before: dict, after: dict):
    assert before.keys() == after.keys()
    for k in before:
        assert torch.equal(before[k], after[k]), k
