"""A LoRA from two LoRAs (SPEC §13.6): each merged alone (ratio²), then the extract formula per factor."""
import math

import pytest
import torch

from merge_core import MergeError
from merge_core.lora.extract_two import combine, extract_two, extract_two_to_file
from merge_core.lora.files import LoraFile
from merge_core.lora.merge import Merged
from merge_core.lora.synthetic import random_lora
from merge_core.lora.syntax import parse_list
from merge_core.sources import open_model
from merge_core.synthetic import sd1_layout

SHAPES = sd1_layout(scale=1 / 40, text_layers=2, vocab=64)


def lora(seed, rank=4, alpha=None):
    return LoraFile.from_dict(random_lora(SHAPES, "sd1", rank=rank, seed=seed, alpha=alpha), f"l{seed}",
                              {"ss_network_dim": str(rank), "ss_output_name": f"l{seed}"})


def pair(text, *loras):
    entries = parse_list(text)
    return [(lo, e) for lo, e in zip(loras, entries)]


def reference(a: torch.Tensor, b: torch.Tensor, alpha, beta, gamma) -> torch.Tensor:
    """SPEC §2.6 without a base, written out: row-wise cosine on the last axis."""
    dot = (a * b).sum(-1, keepdim=True)
    norm = (a.norm(dim=-1, keepdim=True) * b.norm(dim=-1, keepdim=True)).clamp_min(1e-8)
    d = (((dot / norm).clamp(-1, 1) + 1) / 2) ** gamma
    return (a + (b - a) * alpha) * (d + (1 - 2 * d) * beta)


def single(tensors: dict) -> Merged:
    return Merged(tensors, "sd1")


def test_spec_oracles():
    a = single({"m.lora_up.weight": torch.tensor([[1.0, 0.0]]), "m.lora_down.weight": torch.tensor([[1.0, 0.0]]),
                "m.alpha": torch.tensor(2.0)})
    b = single({"m.lora_up.weight": torch.tensor([[0.0, 1.0]]), "m.lora_down.weight": torch.tensor([[1.0, 0.0]]),
                "m.alpha": torch.tensor(2.0)})
    out = combine(a, b, 0.0, 0.0, 1.0)
    assert torch.allclose(out["m.lora_up.weight"], torch.tensor([[0.5, 0.0]]))  # a=[1,0], b=[0,1]
    assert torch.allclose(combine(a, b, 0, 0, 1)["m.lora_down.weight"], torch.tensor([[1.0, 0.0]]))  # a = b, β=0
    assert torch.allclose(combine(a, b, 0, 1, 1)["m.lora_down.weight"], torch.tensor([[0.0, 0.0]]))  # a = b, β=1
    assert float(out["m.alpha"]) == 2.0


def test_every_factor_follows_the_formula_with_b_rescaled_to_a_alpha():
    la, lb = lora(1, alpha=4.0), lora(2, alpha=1.0)
    out = extract_two(pair("l1:1,l2:1", la, lb), 0.3, 0.6, 1.5).tensors
    scale = math.sqrt(1.0 / 4.0)
    checked = 0
    for module in la.modules:
        for part in ("up", "down"):
            key = la.modules[module].keys[part]
            want = reference(la.tensor(module, part), lb.tensor(module, part) * scale, 0.3, 0.6, 1.5)
            assert torch.allclose(out[key], want, atol=1e-6), key
            checked += 1
        assert float(out[module + ".alpha"]) == 4.0  # the first LoRA's alphas
    assert checked == 2 * len(la.modules) > 100


def test_each_lora_is_merged_alone_first_so_ratios_act_squared():
    la, lb = lora(1), lora(2)
    # alpha 0, beta 0, gamma 0: d = 1 everywhere, the result is the first LoRA as merged alone
    out = extract_two(pair("l1:0.5,l2:1", la, lb), 0.0, 0.0, 0.0).tensors
    module = next(iter(la.modules))
    assert torch.allclose(out[module + ".lora_up.weight"], la.tensor(module, "up") * 0.5)
    assert torch.allclose(out[module + ".lora_down.weight"], la.tensor(module, "down") * 0.5)
    # the second LoRA at alpha 1, with same to Strength: ratio -0.25 → up·0.5, down·(−0.5) (§13.8)
    out = extract_two(pair("l1:1,l2:-0.25", la, lb), 1.0, 0.0, 0.0, same_to_strength=True).tensors
    assert torch.allclose(out[module + ".lora_up.weight"], lb.tensor(module, "up") * 0.5)
    assert torch.allclose(out[module + ".lora_down.weight"], lb.tensor(module, "down") * -0.5)


def test_block_weights_apply_before_combining():
    la, lb = lora(1), lora(2)
    zero_unet = "l1:1:" + ",".join(["1"] + ["0"] * 25)  # BASE only: every U-Net module is zeroed
    out = extract_two(pair(zero_unet + ",l2:1", la, lb), 0.0, 0.0, 0.0).tensors
    unet = [k for k in out if k.startswith("lora_unet") and not k.endswith("alpha")]
    te = [k for k in out if k.startswith("lora_te") and not k.endswith("alpha")]
    assert unet and te
    assert all(torch.count_nonzero(out[k]) == 0 for k in unet)
    assert all(torch.count_nonzero(out[k]) > 0 for k in te)


@pytest.mark.parametrize("bad, where", [((-0.1, 0.5, 1.0), "alpha"), ((1.1, 0.5, 1.0), "alpha"),
                                        ((0.5, -0.5, 1.0), "beta"), ((0.5, 2.0, 1.0), "beta"),
                                        ((0.5, 0.5, -1.0), "gamma")])
def test_out_of_range_parameters_are_clear_errors(bad, where):
    with pytest.raises(MergeError, match=f"^{where}:"):
        extract_two(pair("l1:1,l2:1", lora(1), lora(2)), *bad)


def test_different_modules_or_ranks_are_clear_errors():
    full = random_lora(SHAPES, "sd1", rank=4, seed=2)
    fewer = LoraFile.from_dict({k: v for k, v in full.items() if "lora_te" not in k}, "fewer")
    with pytest.raises(MergeError, match="same modules"):
        extract_two(pair("l1:1,fewer:1", lora(1), fewer), 0.5, 0.5, 1.0)
    with pytest.raises(MergeError, match="same ranks"):
        extract_two(pair("l1:1,l8:1", lora(1), lora(8, rank=2)), 0.5, 0.5, 1.0)
    with pytest.raises(MergeError, match="exactly two"):
        extract_two(pair("l1:1", lora(1)), 0.5, 0.5, 1.0)


def test_file_keeps_metadata_and_respects_overwrite(tmp_path):
    out = tmp_path / "two.safetensors"
    path, merged = extract_two_to_file(pair("l1:1,l2:0.5", lora(1), lora(2)), out, 0.5, 0.5, 1.0)
    with open_model(path) as f:
        meta = f.metadata()
        keys = f.keys()
        assert all(f.dtype(k) == torch.float16 for k in keys)
    assert set(keys) == set(merged.tensors)
    assert meta["ss_output_name"] == "two" and meta["ss_network_dim"] == "4"
    assert meta["ss_base_model_version"] == "sd_v1" and "sshs_model_hash" in meta
    with pytest.raises(MergeError, match="already exists"):
        extract_two_to_file(pair("l1:1,l2:1", lora(1), lora(2)), out, 0.5, 0.5, 1.0)
    extract_two_to_file(pair("l1:1,l2:1", lora(1), lora(2)), out, 0.5, 0.5, 1.0, overwrite=True)
