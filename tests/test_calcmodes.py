"""SPEC §2: every calcmode against its oracles and properties, on real SD1/SDXL key names."""
import dataclasses
import numpy as np
import pytest
import scipy.ndimage
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import CONV_IN, assert_unchanged, merge, one_key, snapshot
from merge_core import MergeError
from merge_core.calcmodes import CALCMODES, smooth
from merge_core.calcmodes.cosine import _trimmed_range

ADD = dict(mode="add_difference")


def test_all_eleven_calcmodes_are_registered_in_spec_order():
    assert list(CALCMODES) == ["normal", "cosineA", "cosineB", "trainDifference", "smoothAdd", "smoothAdd MT",
                               "extract", "tensor", "tensor2", "self", "plus random"]


# trainDifference (§2.3) ---------------------------------------------------------------------------

def test_train_difference_oracles():
    out = merge(one_key([0, 5]), one_key([1, 1]), one_key([0, 1]), calcmode="trainDifference", alpha=1.0)
    assert out[CONV_IN].tolist() == pytest.approx([0.9, 5.0])
    out = merge(one_key([2.0]), one_key([1.0]), one_key([0.0]), calcmode="trainDifference", alpha=0.5)
    assert out[CONV_IN].tolist() == pytest.approx([2.45])


def test_train_difference_is_forced_to_add_difference_and_says_so():
    from merge_core import DictSource, Inputs, Recipe, merge_to_dict

    r = Recipe(model_a="A", model_b="B", model_c="C", mode="weight_sum", calcmode="trainDifference", alpha=1.0)
    res = merge_to_dict(r, Inputs(DictSource(one_key([0, 5])), DictSource(one_key([1, 1])),
                                  DictSource(one_key([0, 1]))))
    assert res.plan.mode == "add_difference"
    assert any("switched" in n for n in res.notes)
    assert res.tensors[CONV_IN].tolist() == pytest.approx([0.9, 5.0])


def test_train_difference_keeps_a_where_b_equals_c(sd1):
    a, b, _ = sd1
    out = merge(a, b, b, calcmode="trainDifference", alpha=1.0)
    for k in a:
        assert torch.equal(out[k], a[k]), k


# smoothAdd (§2.4, §2.5) -----------------------------------------------------------------------------

def test_smooth_add_oracles():
    zero5 = [0.0] * 5
    assert merge(one_key(zero5), one_key([0, 0, 1, 0, 0]), one_key(zero5), calcmode="smoothAdd", alpha=1.0,
                 **ADD)[CONV_IN].tolist() == [0.0] * 5
    out = merge(one_key(zero5), one_key([0, 1, 2, 3, 4]), one_key(zero5), calcmode="smoothAdd", alpha=1.0, **ADD)
    assert out[CONV_IN].tolist() == pytest.approx([0.42704, 1.06782, 2.0, 2.93218, 3.57296], abs=1e-5)
    const = merge(one_key([1.0, 1.0, 1.0]), one_key([3.0, 3.0, 3.0]), one_key([1.0, 1.0, 1.0]),
                  calcmode="smoothAdd", alpha=0.5, **ADD)
    assert const[CONV_IN].tolist() == pytest.approx([2.0, 2.0, 2.0])


def test_smooth_add_mt_gives_the_same_model_as_smooth_add(sd1):
    a, b, c = sd1
    one = merge(a, b, c, calcmode="smoothAdd", alpha=0.7, **ADD)
    many = merge(a, b, c, calcmode="smoothAdd MT", alpha=0.7, **ADD)
    assert one.keys() == many.keys()
    for k in one:
        assert torch.equal(one[k], many[k]), k


@settings(max_examples=60, deadline=None)
@given(shape=st.lists(st.integers(1, 9), min_size=2, max_size=4), part=st.integers(1, 40),
       seed=st.integers(0, 10_000), ties=st.booleans())
def test_median_in_parts_is_scipys_median_filter_bit_for_bit(shape, part, seed, ties):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(np.float32)
    if ties:  # equal values, 0.0 beside -0.0, and NaN inside windows that straddle two parts
        x = np.round(x).astype(np.float32)
        x.reshape(-1)[rng.integers(0, x.size)] = np.nan
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(smooth, "PART", part)  # many parts even for tiny tensors
        mp.setattr(smooth, "thread_share", lambda: 3)
        ours = smooth.median3(x)
    assert np.array_equal(ours.view(np.uint32), scipy.ndimage.median_filter(x, size=3).view(np.uint32))  # bits


def test_large_tensors_are_filtered_in_parts(monkeypatch):
    seen = []
    real = scipy.ndimage.median_filter
    monkeypatch.setattr(scipy.ndimage, "median_filter", lambda a, size: seen.append(a.shape) or real(a, size=size))
    monkeypatch.setattr(smooth, "thread_share", lambda: 2)
    x = np.random.default_rng(0).standard_normal((64, 40, 3, 3)).astype(np.float32)
    monkeypatch.setattr(smooth, "PART", x.size // 4)
    smooth.median3(x)
    assert sorted(s[0] for s in seen) == [17, 17, 18, 18]  # 16 rows each, one halo row per inner side


# extract (§2.6) -----------------------------------------------------------------------------------

def test_extract_oracles():
    z = one_key([0.0, 0.0])
    assert merge(z, one_key([1.0, 0.0]), one_key([0.0, 1.0]), calcmode="extract", alpha=0, beta=0,
                 gamma=1)[CONV_IN].tolist() == pytest.approx([0.5, 0.0])
    same = one_key([1.0, 0.0])
    assert merge(z, same, same, calcmode="extract", alpha=0, beta=0, gamma=1)[CONV_IN].tolist() == [1.0, 0.0]
    assert merge(z, same, same, calcmode="extract", alpha=0, beta=1, gamma=1)[CONV_IN].tolist() == [0.0, 0.0]


@pytest.mark.parametrize("field,value,word", [("alpha", 1.5, "alpha"), ("beta", -0.1, "beta"),
                                              ("gamma", -1.0, "gamma")])
def test_extract_limits_are_clear_errors_not_assertions(field, value, word):
    args = dict(alpha=0.5, beta=0.5, gamma=1.0)
    args[field] = value
    with pytest.raises(MergeError, match=word):
        merge(one_key([0.0, 0.0]), one_key([1.0, 0.0]), one_key([0.0, 1.0]), calcmode="extract", **args)


def test_extract_limits_name_the_block_under_mbw(sd1):
    a, b, c = sd1
    weights = ",".join(["0.5"] * 13 + ["1.5"] + ["0.5"] * 12)  # M00 out of range
    with pytest.raises(MergeError, match="block M00"):
        merge(a, b, c, calcmode="extract", weights_alpha=weights)


# tensor / tensor2 (§2.7) ------------------------------------------------------------------------------

def test_tensor_oracles():
    z, o = one_key([0.0] * 10), one_key([1.0] * 10)
    assert merge(z, o, calcmode="tensor", alpha=0.3, beta=0.2)[CONV_IN].tolist() == [0, 0, 1, 1, 1, 0, 0, 0, 0, 0]
    assert merge(z, o, calcmode="tensor", alpha=0.5, beta=0.7)[CONV_IN].tolist() == [1, 0, 0, 0, 0, 0, 0, 1, 1, 1]


def test_tensor2_oracles():
    a = {CONV_IN: torch.zeros(2, 200)}
    b = {CONV_IN: torch.ones(2, 200)}
    out = merge(a, b, calcmode="tensor2", alpha=0.25, beta=0.5)[CONV_IN]
    cols = torch.nonzero(out[0]).flatten().tolist()
    assert cols == list(range(100, 150)) and torch.equal(out[0], out[1])
    a, b = {CONV_IN: torch.zeros(8, 4)}, {CONV_IN: torch.ones(8, 4)}
    out = merge(a, b, calcmode="tensor2", alpha=0.25, beta=0.25)[CONV_IN]
    assert torch.nonzero(out[0]).flatten().tolist() == [2, 3]


def test_tensor_moves_exactly_the_slices_spec_gives(sd1):
    a, b, _ = sd1
    out = merge(a, b, calcmode="tensor", alpha=0.25, beta=0.5)
    k = "model.diffusion_model.input_blocks.1.0.in_layers.2.weight"  # shape (8, 8, 3, 3)
    n = a[k].shape[0]
    s, e = int(n * 0.5), int(n * 0.75)
    assert torch.equal(out[k][s:e], b[k][s:e])
    assert torch.equal(out[k][:s], a[k][:s]) and torch.equal(out[k][e:], a[k][e:])


def test_tensor_skips_zero_dim_tensors():
    key = "model.diffusion_model.x.weight"
    a = {CONV_IN: torch.zeros(4), key: torch.tensor(1.0)}
    b = {CONV_IN: torch.ones(4), key: torch.tensor(2.0)}
    out = merge(a, b, calcmode="tensor", alpha=0.5, beta=0.0)
    assert out[key].item() == 1.0


# cosineA / cosineB (§2.2) -----------------------------------------------------------------------------

@pytest.mark.parametrize("calcmode", ["cosineA", "cosineB"])
def test_cosine_with_a_equal_b_gives_a(sd1, calcmode):
    a, _, _ = sd1
    out = merge(a, snapshot(a), calcmode=calcmode, alpha=0.3)
    for k in a:
        assert torch.allclose(out[k], a[k], atol=1e-7), k


@pytest.mark.parametrize("calcmode", ["cosineA", "cosineB"])
def test_cosine_leaves_the_vae_as_a_and_shares_k_along_dim0(sd1, calcmode):
    a, b, _ = sd1
    out = merge(a, b, calcmode=calcmode, alpha=0.2)
    vae = "first_stage_model.decoder.conv_out.weight"
    assert torch.equal(out[vae], a[vae])
    k = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
    # out = k·A + (1−k)·B with one k per column: solve for k from row 0 and check it fits every row
    d = (a[k] - b[k])
    kk = (out[k] - b[k]) / d
    assert torch.allclose(kk, kk[0:1].expand_as(kk), atol=1e-4)
    assert (kk >= -1e-5).all() and (kk <= 1 + 1e-5).all()


def test_cosine_alpha_one_gives_b_inside_the_trimmed_range(sd1):
    a, b, _ = sd1
    out = merge(a, b, calcmode="cosineB", alpha=1.0)
    keys = [k for k in a if "model" in k and "weight" in k and "first_stage_model" not in k and a[k].dim()]
    total = sum(a[k].numel() for k in keys)
    kept = sum((out[k] != b[k]).sum().item() for k in keys)
    assert 0 < kept <= 0.03 * total  # only columns above the 99th percentile keep some of A


def test_similarity_range_trimming_follows_numpy_midpoint_percentiles():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(size=1000), [np.nan, 50.0, -50.0]])
    r = _trimmed_range(values)
    v = values[~np.isnan(values)]
    v = np.delete(v, np.where(v < np.percentile(v, 1, method="midpoint")))
    v = np.delete(v, np.where(v > np.percentile(v, 99, method="midpoint")))
    assert (r.low, r.high) == (v.min(), v.max())


# self / plus random (§2.8, §2.9) ----------------------------------------------------------------------

def test_self_scales_a_and_skips_norm_proj_out_to_out(sd1):
    a, b, _ = sd1
    out = merge(a, b, calcmode="self", alpha=0.5)
    k = "model.diffusion_model.input_blocks.1.0.in_layers.2.weight"
    assert torch.equal(out[k], a[k] * 0.5)
    for k in ("model.diffusion_model.input_blocks.1.1.norm.weight",
              "model.diffusion_model.input_blocks.1.1.proj_out.weight",
              "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_out.0.weight"):
        assert torch.equal(out[k], a[k]), k
    assert all(torch.equal(merge(a, b, calcmode="self", alpha=x)[k], a[k]) for x in (0.0, 1.0))


def test_plus_random_is_seeded_and_skips_like_self(sd1):
    a, b, _ = sd1
    one = merge(a, b, calcmode="plus random", alpha=0.1, seed=7)
    two = merge(a, b, calcmode="plus random", alpha=0.1, seed=7)
    other = merge(a, b, calcmode="plus random", alpha=0.1, seed=8)
    k = "model.diffusion_model.input_blocks.1.0.in_layers.2.weight"
    assert torch.equal(one[k], two[k]) and not torch.equal(one[k], other[k])
    noise = one[k] - a[k]
    assert 0.05 < noise.std().item() < 0.2
    skipped = "model.diffusion_model.input_blocks.1.1.norm.weight"
    assert torch.equal(one[skipped], a[skipped])


# all calcmodes, all modes ---------------------------------------------------------------------------

@pytest.mark.parametrize("calcmode", list(CALCMODES))
@pytest.mark.parametrize("mode", ["weight_sum", "add_difference", "triple_sum", "sum_twice"])
def test_every_calcmode_runs_in_every_mode_on_sdxl_and_keeps_inputs_and_dtypes(sdxl, calcmode, mode):
    a, b, c = sdxl
    before = [snapshot(x) for x in (a, b, c)]
    out = merge(a, b, c, mode=mode, calcmode=calcmode, alpha=0.4, beta=0.3, gamma=0.5)
    for x, y in zip(before, (a, b, c)):
        assert_unchanged(x, y)
    for k, t in out.items():
        assert t.dtype == a[k].dtype and t.shape == a[k].shape, k
        if t.is_floating_point():
            assert torch.isfinite(t).all(), k


def test_nan_in_an_input_is_named_clearly():
    b = one_key([1.0, float("nan")])
    with pytest.raises(MergeError, match=r"model_b \(B\).*NaN"):
        merge(one_key([1.0, 2.0]), b, alpha=0.5)


# In-place trainDifference / extract against the plain formulas they replaced (frozen copies, do not edit) ----

def _frozen_train_difference(a, b, c, alpha):
    b32, c32 = b.float(), c.float()
    diff = b32 - c32
    d0 = torch.abs(diff)
    d1 = torch.abs(b32 - a.float())
    total = d0 + d1
    scale = torch.where(total != 0, d1 / total, torch.tensor(0.0))
    scale = torch.sign(diff) * torch.abs(scale)
    return a + (scale * d0) * (alpha * 1.8)


def _frozen_extract(a, b, c, alpha, beta, gamma):
    from torch.nn.functional import cosine_similarity
    base = a.float()
    da, db = b.float() - base, c.float() - base
    cos = cosine_similarity(da, db, -1).clamp(-1, 1).unsqueeze(-1)
    d = ((cos + 1) / 2) ** gamma
    return base + torch.lerp(da, db, alpha) * torch.lerp(d, 1 - d, beta)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.float64])
@pytest.mark.parametrize("shape", [(300, 77), (16, 4, 3, 3), (257,), (2, 300_001), (2 * 87360 + 1, 3), (385, 1280)])
def test_in_place_train_difference_and_extract_equal_the_plain_formulas_bit_for_bit(dtype, shape):
    from merge_core.calcmodes import CALCMODES, KeyArgs
    from merge_core.run import one_intra_thread

    g = torch.Generator().manual_seed(sum(shape))
    a, b, c = (torch.randn(shape, generator=g).to(dtype) for _ in range(3))
    flat = [t.view(-1) for t in (a, b, c)]
    flat[1][::7] = flat[2][::7]  # B = C: no change there
    flat[0][::5] = flat[1][::5]  # B = A: scale 0
    flat[1][::11] = 0.0
    flat[2][::11] = 0.0  # both zero: 0/0 guarded
    flat[0][::13] = -0.0
    before = [t.clone() for t in (a, b, c)]
    for alpha in (0.3, 1.0, -0.4):
        p = KeyArgs(key="k", alpha=alpha, beta=0.3, gamma=1.5, mode="add_difference")
        got, want = CALCMODES["trainDifference"].fn(a, b, c, p), _frozen_train_difference(a, b, c, alpha)
        assert got.dtype == want.dtype and torch.equal(got, want) and torch.equal(got.signbit(), want.signbit())
        p = KeyArgs(key="k", alpha=abs(alpha) % 1, beta=0.3, gamma=1.5, mode="add_difference")
        with one_intra_thread():  # the plain formula's `**` gives other bits for some elements on more threads
            want = _frozen_extract(a, b, c, abs(alpha) % 1, 0.3, 1.5)
        got = CALCMODES["extract"].fn(a, b, c, p)
        assert got.dtype == want.dtype and torch.equal(got, want)
        if dtype == torch.float32:  # a caller's scratch copy of A, given up for the result
            scratch = a.clone()
            got = CALCMODES["extract"].fn(scratch, b, c, dataclasses.replace(p, out=scratch))
            assert torch.equal(got, want)
    assert all(torch.equal(t, u) and torch.equal(t.signbit(), u.signbit()) for t, u in zip((a, b, c), before))


def _extract_step(a, b, c):
    from merge_core import make_plan, DictSource, Inputs, Recipe
    recipe = Recipe(model_a="A", model_b="B", model_c="C", mode="add_difference", calcmode="extract", alpha=0.3,
                    beta=0.2, gamma=0.7)
    plan = make_plan(recipe, Inputs(DictSource(a, "A"), DictSource(b, "B"), DictSource(c, "C")))
    return plan, next(s for s in plan.merged() if s.key == KEY_LINEAR)


KEY_LINEAR = "model.diffusion_model.input_blocks.1.1.proj_in.weight"


def _handed_over(tensors, scratch):
    """A reader as the ComfyUI patch has one: A's scratch copy on the first read, the model's A after."""
    first = [scratch]

    def read(role, key):
        if role == "a" and first[0] is not None:
            t, first[0] = first[0], None
            return t
        return tensors[role][key]
    return read


def test_a_result_written_into_the_callers_scratch_copy_of_a_is_the_merge_and_still_checked(sd1):
    from merge_core.steps import evaluate

    g = torch.Generator().manual_seed(5)  # a key large enough to be merged in blocks of rows
    sds = {role: dict(sd, **{KEY_LINEAR: torch.randn(385, 1280, generator=g)}) for role, sd in zip("abc", sd1)}
    plan, step = _extract_step(*sds.values())
    want = evaluate(plan, step, lambda role, key: sds[role][key])
    scratch = sds["a"][KEY_LINEAR].clone()
    got = evaluate(plan, step, _handed_over(sds, scratch), out=scratch)
    assert got.data_ptr() == scratch.data_ptr() and torch.equal(got, want)
    # A result that overflows, written into A's own scratch, is still caught, and blamed on the merge, not on A
    sds["a"][KEY_LINEAR][7, :] = 3e38
    sds["b"][KEY_LINEAR][7, :] = -3e38
    with pytest.raises(MergeError, match="the merge produced NaN or infinite values"):
        scratch = sds["a"][KEY_LINEAR].clone()
        evaluate(plan, step, _handed_over(sds, scratch), out=scratch)
