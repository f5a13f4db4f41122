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


# Row blocks and thread-independent elementwise maths (extract) ---------------------------------------------

def _one_thread(fn, *args):
    from merge_core.run import one_intra_thread
    with one_intra_thread():
        return fn(*args)


@pytest.mark.parametrize("threads", [2, 3])
def test_serial_pow_has_the_one_thread_bits_whatever_the_thread_count(threads):
    # 100_001 elements: split between threads, each part ends in a scalar tail that rounds otherwise than the
    # SIMD lanes (torch's own `t ** 0.3` differs from its one-thread result here)
    t = torch.rand(100_001, generator=torch.Generator().manual_seed(0))
    want = _one_thread(lambda x: x ** 0.3, t)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        got = kernels.serial(lambda x: x ** 0.3, t.reshape(-1, 1))
    finally:
        torch.set_num_threads(before)
    assert got.shape == (100_001, 1) and torch.equal(got.reshape(-1), want)


def _row_formula(x, y):
    """Row-wise like extract: a per-row cosine, a pow of it and elementwise maths, a fresh result."""
    cos = torch.nn.functional.cosine_similarity(x, y, -1).clamp(-1, 1).unsqueeze(-1)
    return x + y * kernels.serial(lambda v: ((v + 1) / 2) ** 0.7, cos)


# (shape, split into blocks?): widths and row counts around the block size (CHUNK // width rounded down to ALIGN
# rows: 87360 rows of 3, 192 rows of 1280), with a last block of one row (which must join the one before), and
# shapes too small to split
ROW_SHAPES = [((2 * 87360 + 1, 3), True), ((3 * 87360 + 77, 3), True), ((385, 1280), True), ((64, 91, 3, 3), False),
              ((1000, 7), False), ((2, 300_001), False), ((300_001,), False), ((5, 5), False)]


@pytest.mark.parametrize("shape,split", ROW_SHAPES)
def test_by_rows_gives_the_whole_tensor_bits(shape, split):
    g = torch.Generator().manual_seed(len(shape))
    x, y = torch.randn(shape, generator=g), torch.randn(shape, generator=g)
    x0, y0 = x.clone(), y.clone()
    want = _one_thread(_row_formula, x, y)
    got = kernels.by_rows(_row_formula, x, y)
    assert got.shape == x.shape and torch.equal(got, want)
    assert torch.equal(x, x0) and torch.equal(y, y0)
    out = x.clone()  # the result written into one of its own inputs, block after block
    assert torch.equal(kernels.by_rows(_row_formula, out, y, out=out), want)
    assert torch.equal(out, want) == split  # written in place when split (a whole call returns a new tensor)
