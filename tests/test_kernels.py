"""The chunked kernels give exactly the values of the whole-tensor formulas (SuperMerger's own ops)."""
import pytest
import torch

from merge_core import kernels, modes

N = kernels.CHUNK * 2 + 1234  # several chunks and a ragged tail


def _t(seed, dtype):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(N, generator=g) * 0.05).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_linear_modes_match_the_unchunked_formulas_bit_for_bit(dtype):
    a, b, c = _t(1, dtype), _t(2, dtype), _t(3, dtype)
    f32 = torch.float32
    expect = {
        "weight_sum": torch.lerp(a.to(f32), b.to(f32), 0.3).to(dtype),
        "sum_twice": torch.lerp(torch.lerp(a.to(f32), b.to(f32), 0.3), c.to(f32), 0.6).to(dtype),
        "triple_sum": torch.lerp(a, torch.lerp(b, c, 0.6 / 0.9), 0.9),
    }
    d = (b.to(f32) - c.to(f32)).to(dtype)
    assert torch.equal(modes.difference(b, c), d)
    expect["add_difference"] = torch.lerp(a, a + 0.3 * d, 1.0)
    for mode, value in expect.items():
        arg = d if mode == "add_difference" else b
        got = modes.FORMULAS[mode](a, arg, c, 0.3, 0.6, False)
        assert got.dtype == dtype and torch.equal(got, value), mode


def test_inputs_are_left_untouched_and_shape_is_kept():
    a = _t(1, torch.float16).reshape(-1, 1)
    b = _t(2, torch.float16).reshape(-1, 1)
    a0, b0 = a.clone(), b.clone()
    out = modes.weight_sum(a, b, None, 0.5, 0.0, False)
    assert out.shape == a.shape and torch.equal(a, a0) and torch.equal(b, b0)
