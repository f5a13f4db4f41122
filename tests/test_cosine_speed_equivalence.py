"""cosineA/B's fast pre-pass arithmetic (numpy column norms in row blocks, no temporaries) against a frozen
copy of the plain-torch code it replaced (normalize + cosine_similarity + dot/norm): the same bits, on real
SD1 key names, float32 and float16 inputs, zero tensors, 1-D to 4-D shapes and several row blocks."""
import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st
from torch.nn.functional import cosine_similarity, normalize

from helpers import CONV_IN
from merge_core import DictSource, Inputs, Recipe
from merge_core.calcmodes import cosine
from merge_core.executor import run_prepass
from merge_core.steps import merge_tensors as merge_key
from merge_core.merge import make_plan
from merge_core.run import RunContext, Threads
from merge_core.synthetic import tiny_sd1

F32 = torch.float32


# ---- frozen: the arithmetic as it was before the fast path (do not edit) ----------------------------------

def frozen_similarities(a, b, normalised):
    # on one intra-op thread: the dot product's sum order depends on the thread count, and the merge now takes
    # its similarities on one thread on every door (the only change to the frozen code)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _frozen_similarities(a, b, normalised)
    finally:
        torch.set_num_threads(before)


def _frozen_similarities(a, b, normalised):
    a, b = a.to(F32), b.to(F32)
    if normalised:
        a, b = normalize(a, p=2, dim=0), normalize(b, p=2, dim=0)
    s = cosine_similarity(a, b, dim=0)
    m = torch.dot(a.reshape(-1), b.reshape(-1)) / (torch.norm(a) * torch.norm(b)).clamp_min(1e-8)
    return s, (s + m) / 2.0


def frozen_prepass(pairs, normalised):
    parts, combined = [], {}
    for key, a, b in pairs:  # 0-dim tensors count, as in SuperMerger (issue #12 corrected the old skip)
        s, comb = frozen_similarities(a, b, normalised)
        parts.append((s if normalised else comb).reshape(-1).double().cpu().numpy())
        combined[key] = comb.cpu()
    values = np.concatenate(parts) if parts else np.zeros(0)
    values = values[~np.isnan(values)]
    if values.size == 0:
        return 0.0, 1.0, combined
    values = values[values >= np.percentile(values, 1, method="midpoint")]
    values = values[values <= np.percentile(values, 99, method="midpoint")]
    return float(values.min()), float(values.max()), combined


# ---- helpers ------------------------------------------------------------------------------------------------

def same(x, y):
    """Bit for bit: equal values, the same sign of zero, NaN where the other has NaN (a NaN's sign bit is
    noise: whether 0/0 gives +NaN or -NaN differs between numpy's and ATen's loops, and nothing reads it)."""
    nan = x.isnan()
    return (x.dtype == y.dtype and x.shape == y.shape and torch.equal(nan, y.isnan())
            and torch.equal(x[~nan], y[~nan]) and torch.equal(x[~nan].signbit(), y[~nan].signbit()))


def assert_same_similarities(a, b, label=""):
    for normalised in (True, False):
        want = frozen_similarities(a, b, normalised)
        got = cosine._similarities(a, b, normalised)
        assert same(got[0], want[0]) and same(got[1], want[1]), (label, normalised, tuple(a.shape))


def one_key_per_shape(sd):
    """The pre-pass's keys, the first of each shape (the arithmetic depends on the shape, not the name)."""
    keys = {}
    for k in sd:
        if cosine.prepass_key(k) and sd[k].is_floating_point() and sd[k].dim() > 0:
            keys.setdefault(tuple(sd[k].shape), k)
    return list(keys.values())


# ---- tests -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtypes", [(F32, F32), (torch.float16, torch.float16), (torch.float16, F32)])
def test_every_sd1_key_gives_the_frozen_similarities(dtypes):
    a, b = tiny_sd1(1, dtypes[0]), tiny_sd1(2, dtypes[1])
    keys = one_key_per_shape(a)
    assert {a[k].dim() for k in keys} == {1, 2, 4} and len(keys) > 20
    for key in keys:
        assert_same_similarities(a[key], b[key], key)


def test_zero_tensors_give_the_frozen_similarities():
    a, b = tiny_sd1(1), tiny_sd1(2)
    for key in (CONV_IN, "model.diffusion_model.out.2.bias",
                "cond_stage_model.transformer.text_model.encoder.layers.0.mlp.fc1.weight"):
        zero = torch.zeros_like(a[key])
        for x, y in ((zero, b[key]), (a[key], zero), (zero, zero)):
            assert_same_similarities(x, y, key)
    partly = a[CONV_IN].clone()
    partly[:, 1] = 0  # some columns zero, the others not
    assert_same_similarities(partly, b[CONV_IN], "zero columns")


@pytest.mark.parametrize("shape", [(3000, 40), (40, 30000), (1, 77), (7, 2), (640, 320, 1, 1), (320, 320, 3, 3),
                                   (5, 1), (1280, 1, 1, 1), (300,)])
def test_shapes_across_row_blocks_and_the_torch_fallbacks(shape):
    g = torch.Generator().manual_seed(sum(shape))
    a = torch.randn(shape, generator=g) * 0.02
    b = a + torch.randn(shape, generator=g) * 0.01
    assert_same_similarities(a, b)
    assert_same_similarities(a.half(), b.half(), "fp16")


def test_non_contiguous_inputs_take_torch_and_match():
    g = torch.Generator().manual_seed(5)
    a, b = torch.randn(64, 9, 3, 3, generator=g), torch.randn(64, 9, 3, 3, generator=g)
    assert_same_similarities(a[:, :4], b[:, :4], "narrowed (inpainting)")
    assert_same_similarities(a.reshape(64, 81).t(), b.reshape(64, 81).t(), "transposed")


def test_infinite_and_nan_values_match():
    g = torch.Generator().manual_seed(6)
    a, b = torch.randn(50, 20, generator=g), torch.randn(50, 20, generator=g)
    a[3, 2], a[7, 5], b[9, 5], a[0, 11] = float("inf"), float("nan"), float("-inf"), 3e38  # 3e38² overflows
    assert_same_similarities(a, b)


@pytest.mark.parametrize("threads", [1, 2])
def test_the_same_bits_whatever_torch_thread_count(threads):
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(7)
        a, b = torch.randn(2000, 300, generator=g), torch.randn(2000, 300, generator=g)
        assert_same_similarities(a, b)
    finally:
        torch.set_num_threads(before)


@settings(max_examples=40, deadline=None)
@given(rows=st.integers(1, 200), trailing=st.lists(st.integers(1, 12), min_size=0, max_size=3),
       scale=st.sampled_from([1e-30, 1e-3, 1.0, 1e15]), seed=st.integers(0, 2**31 - 1),
       fp16=st.booleans())
def test_random_shapes_and_scales_match(rows, trailing, scale, seed, fp16):
    g = torch.Generator().manual_seed(seed)
    shape = (rows, *trailing)
    a, b = torch.randn(shape, generator=g) * scale, torch.randn(shape, generator=g) * scale
    if fp16:
        a, b = a.half(), b.half()
    assert_same_similarities(a, b)


@pytest.mark.parametrize("workers", [1, 3])  # keys side by side: the same bits whichever thread takes a key
@pytest.mark.parametrize("calcmode, dtype", [("cosineA", F32), ("cosineB", F32), ("cosineA", torch.float16)])
def test_prepass_range_and_merge_equal_the_frozen_pipeline(calcmode, dtype, workers):
    a, b = tiny_sd1(1, dtype), tiny_sd1(2, dtype)
    a[CONV_IN] = torch.zeros_like(a[CONV_IN])
    recipe = Recipe(model_a="A", model_b="B", calcmode=calcmode, alpha=0.3)
    inputs = Inputs(DictSource(a, "A"), DictSource(b, "B"))
    plan = make_plan(recipe, inputs)
    stats = run_prepass(plan, inputs, RunContext(threads=Threads(cores=workers, workers=workers, intra=1)))
    keys = [s.key for s in plan.steps if s.action in ("keep", "merge") and cosine.prepass_key(s.key) and s.key in b]
    low, high, combined = frozen_prepass(((k, a[k], b[k]) for k in keys), calcmode == "cosineA")
    assert (stats.low, stats.high) == (low, high)
    assert stats.combined.keys() == combined.keys()
    for key, comb in combined.items():
        assert same(stats.combined[key], comb), key
    frozen_stats = dataclasses.replace(stats, combined=combined)
    for step in plan.merged():
        got = merge_key(plan, step, a[step.key], b[step.key], None, stats)
        want = merge_key(plan, step, a[step.key], b[step.key], None, frozen_stats)
        assert same(got, want), step.key


def test_weights_take_the_blockwise_path_and_odd_shapes_torch_s_own():
    a = tiny_sd1(1)
    conv, linear = a[CONV_IN], a["cond_stage_model.transformer.text_model.encoder.layers.0.mlp.fc1.weight"]
    assert cosine._blockwise(conv, conv) and cosine._blockwise(linear, linear)
    bias, column = a["model.diffusion_model.out.2.bias"], torch.zeros(64, 1, 1, 1)
    for x in (bias, column, conv[:, :2], linear.t()):
        assert not cosine._blockwise(x, x)
