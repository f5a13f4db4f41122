"""Merging LoRAs (SPEC §13.3 same rank, §13.3b re-decomposition, §13.4 LyCORIS, §13.8 same to Strength)."""
import math

import pytest
import torch

from merge_core import MergeError
from merge_core.lora import names
from merge_core.lora.decompose import quantile
from merge_core.lora.files import LoraFile
from merge_core.lora.merge import merge_loras, merge_lycoris, merge_redecompose, merge_same_rank
from merge_core.lora.synthetic import random_lora
from merge_core.lora.syntax import parse_list
from merge_core.synthetic import sd1_layout, sdxl_layout

LAYOUT = sd1_layout(scale=1 / 40, text_layers=2, vocab=64)
XL = sdxl_layout(scale=1 / 40, text_layers=(2, 3), vocab=64)
IN04_ATTN = "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q"  # IN04
OUT07_ATTN = "lora_unet_up_blocks_2_attentions_1_proj_in"  # OUT07
TE = "lora_te_text_model_encoder_layers_0_mlp_fc1"  # BASE
CONV3 = "lora_unet_down_blocks_0_resnets_0_conv1"  # IN01, 3×3


def lora(seed, rank=4, alpha=None, name=None, **kw):
    return LoraFile.from_dict(random_lora(LAYOUT, "sd1", rank, seed, alpha=alpha, **kw), name or f"l{seed}")


def product(sd, module):
    up, down = sd[module + ".lora_up.weight"].float(), sd[module + ".lora_down.weight"].float()
    alpha = float(sd[module + ".alpha"]) if module + ".alpha" in sd else down.shape[0]
    flat = up.reshape(up.shape[0], -1) @ down.reshape(down.shape[0], -1)
    return flat.reshape(up.shape[0], *down.shape[1:]) * alpha / down.shape[0]


def delta_of(lf, module):
    return product({k: lf.source.get(k) for k in lf.source.keys()}, module)


def test_block_indices_of_the_modules_used_here():
    assert [names.block_index(m, "sd1") for m in (IN04_ATTN, OUT07_ATTN, TE, CONV3)] == [5, 21, 0, 2]


def test_same_to_strength_oracle_negative_quarter():
    # SPEC §13.8 [verified]: r = −0.25 alone: normal → up·(−0.25), down·(−0.25), product +0.0625·ΔW;
    # same to Strength → up·0.5, down·(−0.5), product −0.25·ΔW.
    a = lora(1)
    w = (-0.25,) * 26
    up, down = a.tensor(IN04_ATTN, "up"), a.tensor(IN04_ATTN, "down")
    normal = merge_same_rank([(a, w)], "sd1").tensors
    assert torch.allclose(normal[IN04_ATTN + ".lora_up.weight"], up * -0.25)
    assert torch.allclose(normal[IN04_ATTN + ".lora_down.weight"], down * -0.25)
    assert torch.allclose(product(normal, IN04_ATTN), 0.0625 * delta_of(a, IN04_ATTN), atol=1e-7)
    sts = merge_same_rank([(a, w)], "sd1", same_to_strength=True).tensors
    assert torch.allclose(sts[IN04_ATTN + ".lora_up.weight"], up * 0.5)
    assert torch.allclose(sts[IN04_ATTN + ".lora_down.weight"], down * -0.5)
    assert torch.allclose(product(sts, IN04_ATTN), -0.25 * delta_of(a, IN04_ATTN), atol=1e-7)


def test_positive_ratio_squares_normally_and_is_linear_with_same_to_strength():
    a = lora(1)
    for r in (0.5, 2.0):
        w = (r,) * 26
        normal = merge_same_rank([(a, w)], "sd1").tensors
        sts = merge_same_rank([(a, w)], "sd1", same_to_strength=True).tensors
        assert torch.allclose(product(normal, TE), r * r * delta_of(a, TE), atol=1e-6)
        assert torch.allclose(product(sts, TE), r * delta_of(a, TE), atol=1e-6)


def test_two_loras_sum_factors_with_alpha_ratio_scale_and_keep_the_first_alpha():
    a, b = lora(1, alpha=2.0), lora(2, alpha=8.0)
    wa, wb = (1.0,) * 26, (0.5,) * 26
    out = merge_same_rank([(a, wa), (b, wb)], "sd1").tensors
    scale_b = math.sqrt(8.0 / 2.0) * 0.5  # √(alpha_i / base_alpha)·r
    for part in ("up", "down"):
        key = f"{TE}.lora_{part}.weight"
        assert torch.allclose(out[key], a.tensor(TE, part) + b.tensor(TE, part) * scale_b)
    assert float(out[TE + ".alpha"]) == 2.0
    # the product has kohya's cross terms: (ua + s·ub)(da + s·db) ≠ ΔWa + ΔWb
    assert not torch.allclose(product(out, TE), delta_of(a, TE) + delta_of(b, TE), atol=1e-5)


def test_block_ratio_comes_from_the_modules_block():
    a = lora(1)
    (entry,) = parse_list("l1:1:OUTS")  # OUTS: BASE and OUT07–OUT11 on, the rest 0
    out = merge_same_rank([(a, entry.weights)], "sd1").tensors
    assert not out[IN04_ATTN + ".lora_up.weight"].any()
    assert torch.allclose(out[OUT07_ATTN + ".lora_up.weight"], a.tensor(OUT07_ATTN, "up"))
    assert torch.allclose(out[TE + ".lora_down.weight"], a.tensor(TE, "down"))


def test_missing_alpha_means_alpha_equals_rank():
    sd = random_lora(LAYOUT, "sd1", 4, 3)
    sd = {k: v for k, v in sd.items() if not k.endswith(".alpha")}
    out = merge_same_rank([(LoraFile.from_dict(sd, "x"), (1.0,) * 26)], "sd1").tensors
    assert float(out[TE + ".alpha"]) == 4.0


def test_different_ranks_need_a_rank_choice():
    a, b = lora(1, rank=4), lora(2, rank=2)
    ea, eb = parse_list("a:1,b:1")
    with pytest.raises(MergeError, match="rank"):
        merge_loras([(a, ea), (b, eb)], "no")
    auto = merge_loras([(a, ea), (b, eb)], "auto")
    assert auto.rank == 4
    assert auto.tensors[TE + ".lora_down.weight"].shape[0] == 4


def test_auto_with_equal_ranks_is_the_plain_merge():
    a, b = lora(1), lora(2)
    ea, eb = parse_list("a:1,b:0.5")
    auto = merge_loras([(a, ea), (b, eb)], "auto")
    plain = merge_same_rank([(a, ea.weights), (b, eb.weights)], "sd1")
    assert auto.rank is None
    assert all(torch.equal(auto.tensors[k], plain.tensors[k]) for k in plain.tensors)


def expected_sum(inputs, module, sts=False):
    total = 0
    for lf, w in inputs:
        r = w[names.block_index(module, "sd1")]
        if sts:
            r = math.copysign(math.sqrt(abs(r)), r) if r > 0 else -math.sqrt(abs(r))
        total = total + r * delta_of(lf, module)
    return total


@pytest.mark.parametrize("module", [TE, IN04_ATTN, CONV3, "lora_unet_mid_block_attentions_0_proj_out"])
def test_redecomposition_without_clamp_reproduces_a_low_rank_sum(module):
    a, b = lora(1, rank=2, conv3x3=True), lora(2, rank=2, alpha=1.0, conv3x3=True)
    inputs = [(a, (0.7,) * 26), (b, (-1.3,) * 26)]
    out = merge_redecompose(inputs, "sd1", rank=4, clamp=None).tensors
    got = product(out, module)
    want = expected_sum(inputs, module)
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=1e-5 * want.abs().max()), (got - want).abs().max()
    assert float(out[module + ".alpha"]) == 4.0


def test_redecomposition_same_to_strength_is_sign_times_root():
    a, b = lora(1, rank=2), lora(2, rank=2)
    inputs = [(a, (0.49,) * 26), (b, (-0.25,) * 26)]
    out = merge_redecompose(inputs, "sd1", rank=4, same_to_strength=True, clamp=None).tensors
    want = 0.7 * delta_of(a, TE) - 0.5 * delta_of(b, TE)
    assert torch.allclose(product(out, TE), want, atol=1e-6)


def _oracle(m, rank, like_down):
    """SPEC §13.3b independently: full SVD, U·S and Vh, clamp at torch.quantile(…, 0.99). A singular vector
    pair is defined up to a common sign, and the signs move the quantile, so the pairs take the signs of
    the result under test first."""
    u, s, vh = torch.linalg.svd(m)
    up, down = u[:, :rank] @ torch.diag(s[:rank]), vh[:rank]
    signs = torch.sign((down * like_down).sum(1))
    up, down = up * signs, down * signs[:, None]
    hi = torch.quantile(torch.cat([up.flatten(), down.flatten()]), 0.99)
    return up.clamp(-hi, hi), down.clamp(-hi, hi)


@pytest.mark.parametrize("module", [TE, CONV3])
def test_redecomposition_with_clamp_matches_the_svd_and_quantile_oracle(module):
    a, b = lora(1, rank=3, conv3x3=True), lora(2, rank=3, conv3x3=True)
    inputs = [(a, (1.0,) * 26), (b, (0.5,) * 26)]
    out = merge_redecompose(inputs, "sd1", rank=2).tensors
    m = expected_sum(inputs, module)
    up = out[module + ".lora_up.weight"].reshape(m.shape[0], -1)
    down = out[module + ".lora_down.weight"].reshape(2, -1)
    up_o, down_o = _oracle(m.reshape(m.shape[0], -1), 2, down)
    assert torch.allclose(up, up_o, atol=1e-5 * up_o.abs().max())
    assert torch.allclose(down, down_o, atol=1e-5)
    clamped = (up.abs() == up.abs().max()).sum() + (down.abs() == down.abs().max()).sum()
    assert clamped >= 1  # the clamp did act
    if m.dim() == 4:
        assert out[module + ".lora_up.weight"].shape == (m.shape[0], 2, 1, 1)
        assert out[module + ".lora_down.weight"].shape == (2, *m.shape[1:])


def test_quantile_helper_equals_torch_quantile():
    g = torch.Generator().manual_seed(0)
    for n in (1, 2, 7, 1000, 4097):
        t = torch.randn(n, generator=g)
        for q in (0.0, 0.5, 0.99, 1.0):
            assert torch.allclose(quantile(t, q), torch.quantile(t, q)), (n, q)


def test_rank_above_a_modules_size_is_clamped_to_its_size_with_a_note():
    a = lora(1, rank=4)
    merged = merge_redecompose([(a, (1.0,) * 26)], "sd1", rank=64)
    # every tiny module is narrower than 64: each gets min(out, in) and the file stays valid
    for module in (TE, IN04_ATTN):
        d = merged.tensors[module + ".lora_down.weight"]
        u = merged.tensors[module + ".lora_up.weight"]
        assert d.shape[0] == u.shape[1] == min(u.shape[0], d.shape[1])
        assert float(merged.tensors[module + ".alpha"]) == d.shape[0]
    assert merged.notes and "smaller than rank 64" in merged.notes[0]


def test_lycoris_single_merge_scales_every_factor_by_root_ratio():
    sd = random_lora(LAYOUT, "sd1", 4, 5, kind="loha")
    lf = LoraFile.from_dict(sd, "loha")
    (entry,) = parse_list("loha:1:OUTS")
    out = merge_lycoris(lf, tuple(v * 0.25 for v in entry.weights), "sd1").tensors
    for part in ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b"):
        assert torch.allclose(out[f"{OUT07_ATTN}.{part}"], sd[f"{OUT07_ATTN}.{part}"] * 0.5)
        assert not out[f"{IN04_ATTN}.{part}"].any()
    assert torch.equal(out[OUT07_ATTN + ".alpha"], sd[OUT07_ATTN + ".alpha"])


def _loha_delta(sd, m):
    return (sd[m + ".hada_w1_a"] @ sd[m + ".hada_w1_b"]) * (sd[m + ".hada_w2_a"] @ sd[m + ".hada_w2_b"])


def test_lycoris_negative_ratio_flips_the_sign_and_same_to_strength_is_linear():
    sd = random_lora(LAYOUT, "sd1", 4, 5, kind="loha")
    lf = LoraFile.from_dict(sd, "loha")
    base = _loha_delta(sd, TE)
    neg = merge_lycoris(lf, (-0.5,) * 26, "sd1").tensors
    assert torch.allclose(_loha_delta(neg, TE), -0.25 * base, atol=1e-7)  # r² with the sign kept
    sts = merge_lycoris(lf, (-0.5,) * 26, "sd1", same_to_strength=True).tensors
    assert torch.allclose(_loha_delta(sts, TE), -0.5 * base, atol=1e-7)


def test_lycoris_lokr_same_to_strength_scales_the_kronecker_product():
    sd = random_lora(LAYOUT, "sd1", 4, 6, kind="lokr")
    lf = LoraFile.from_dict(sd, "lokr")
    out = merge_lycoris(lf, (0.3,) * 26, "sd1", same_to_strength=True).tensors
    kron = lambda d: torch.kron(d[TE + ".lokr_w1"], d[TE + ".lokr_w2"])  # noqa: E731
    assert torch.allclose(kron(out), 0.3 * kron(sd), atol=1e-7)


def test_lycoris_files_merge_only_alone():
    loha = LoraFile.from_dict(random_lora(LAYOUT, "sd1", 4, 5, kind="loha"), "loha")
    e1, e2 = parse_list("loha:1,l1:1")
    with pytest.raises(MergeError, match="LyCORIS"):
        merge_loras([(loha, e1), (lora(1), e2)])
    single = merge_loras([(loha, e1)], "no")
    assert set(single.tensors) == set(loha.source.keys())


def test_loras_of_different_families_are_refused():
    xl = LoraFile.from_dict(random_lora(XL, "sdxl", 4, 1), "xl")
    e1, e2 = parse_list("l1:1,xl:1")
    with pytest.raises(MergeError, match="SD1 LoRA and xl a SDXL"):
        merge_loras([(lora(1), e1), (xl, e2)])


def test_sdxl_merge_uses_26_block_ids_and_fused_text_encoder_names():
    xl = LoraFile.from_dict(random_lora(XL, "sdxl", 4, 1), "xl")
    (entry,) = parse_list("xl:1:" + ",".join(["0"] * 5 + ["1"] + ["0"] * 20))  # IN04 only
    out = merge_loras([(xl, entry)]).tensors
    in04 = "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q"
    assert out[in04 + ".lora_up.weight"].any()
    assert not out["lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight"].any()
    assert not out["lora_unet_input_blocks_5_1_proj_in.lora_up.weight"].any()


def test_inputs_are_not_modified():
    sd = random_lora(LAYOUT, "sd1", 4, 1)
    before = {k: v.clone() for k, v in sd.items()}
    lf = LoraFile.from_dict(sd, "a")
    (e,) = parse_list("a:-0.7")
    for rank in ("no", 2):
        merge_loras([(lf, e)], rank, same_to_strength=True)
    assert all(torch.equal(before[k], sd[k]) for k in sd)
