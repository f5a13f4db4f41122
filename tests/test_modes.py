"""SPEC §1: the four merge modes, their oracles and their exact-value properties."""
import pytest
import torch

from helpers import CONV_IN, assert_unchanged, merge, one_key, snapshot

A, B, C = [1.0, 2.0], [3.0, 6.0], [1.0, 1.0]


def test_weight_sum_oracle():
    out = merge(one_key(A), one_key(B), alpha=0.25)
    assert out[CONV_IN].tolist() == [1.5, 3.0]


def test_add_difference_oracle():
    out = merge(one_key(A), one_key(B), one_key(C), mode="add_difference", alpha=0.5)
    assert out[CONV_IN].tolist() == [2.0, 4.5]


def test_triple_sum_oracle_keeps_f32_rounding():
    out = merge(one_key(A), one_key(B), one_key(C), mode="triple_sum", alpha=0.2, beta=0.3)
    assert out[CONV_IN].tolist() == [pytest.approx(1.4), 2.5]
    assert out[CONV_IN][0].item() == torch.tensor(1.399999976158142).item()  # SPEC: f32 1.399999976…


def test_sum_twice_oracle():
    out = merge(one_key(A), one_key(B), one_key(C), mode="sum_twice", alpha=0.5, beta=0.5)
    assert out[CONV_IN].tolist() == [1.5, 2.5]


def test_old_calc_method_gives_the_same_oracles():
    assert merge(one_key(A), one_key(B), alpha=0.25, use_old_calc=True)[CONV_IN].tolist() == [1.5, 3.0]
    out = merge(one_key(A), one_key(B), one_key(C), mode="sum_twice", alpha=0.5, beta=0.5, use_old_calc=True)
    assert out[CONV_IN].tolist() == [1.5, 2.5]


def test_alpha_zero_returns_every_tensor_of_a_bit_for_bit(sd1):
    a, b, _ = sd1
    out = merge(a, b, alpha=0.0)
    assert out.keys() == a.keys()
    for k in a:
        assert out[k] is a[k] or torch.equal(out[k], a[k])


def test_alpha_one_gives_b_for_every_processed_key_and_a_elsewhere(sd1):
    a, b, _ = sd1
    out = merge(a, b, alpha=1.0)
    assert torch.equal(out[CONV_IN], b[CONV_IN])
    te = "cond_stage_model.transformer.text_model.final_layer_norm.weight"
    vae = "first_stage_model.decoder.conv_out.weight"
    assert torch.equal(out[te], b[te]) and torch.equal(out[vae], b[vae])
    # never processed: no "model"/"weight"/"bias" in the name
    assert torch.equal(out["alphas_cumprod"], a["alphas_cumprod"])
    pid = "cond_stage_model.transformer.text_model.embeddings.position_ids"
    assert torch.equal(out[pid], a[pid])


def test_sdxl_alpha_one_leaves_unmerged_keys_as_a(sdxl):
    a, b, _ = sdxl
    out = merge(a, b, alpha=1.0)
    for k in ("conditioner.embedders.1.model.text_projection", "conditioner.embedders.1.model.logit_scale",
              "conditioner.embedders.1.model.positional_embedding"):
        assert torch.equal(out[k], a[k]), k
    for k in ("model.diffusion_model.label_emb.0.0.weight", "model.diffusion_model.time_embed.0.weight",
              "model.diffusion_model.out.2.bias", "first_stage_model.encoder.conv_in.weight"):
        assert torch.equal(out[k], b[k]), k  # time/label embeddings merge with IN00 as at 0b1c491


@pytest.mark.parametrize("mode", ["weight_sum", "add_difference", "triple_sum", "sum_twice"])
def test_inputs_are_never_modified(sd1, mode):
    a, b, c = sd1
    before = [snapshot(x) for x in (a, b, c)]
    merge(a, b, c, mode=mode, alpha=0.3, beta=0.4)
    for x, y in zip(before, (a, b, c)):
        assert_unchanged(x, y)


def test_weight_sum_matches_the_formula_in_f32_and_casts_to_a_dtype():
    a = one_key([0.1, 0.2, 0.3], dtype=torch.float16)
    b = one_key([0.5, -0.2, 1.0], dtype=torch.float32)
    out = merge(a, b, alpha=0.3)[CONV_IN]
    assert out.dtype == torch.float16
    expect = torch.lerp(a[CONV_IN].float(), b[CONV_IN], 0.3).half()
    assert torch.equal(out, expect)


@pytest.mark.parametrize("mode", ["add_difference", "triple_sum", "sum_twice"])
def test_mixed_fp16_fp32_inputs_work_in_every_mode(mode):
    a = one_key([0.1, 0.2], dtype=torch.float16)
    b = one_key([0.5, -0.2], dtype=torch.float32)
    c = one_key([0.25, 0.5], dtype=torch.bfloat16)
    out = merge(a, b, c, mode=mode, alpha=0.5, beta=0.25)[CONV_IN]
    assert out.dtype == torch.float16 and torch.isfinite(out).all()


def test_add_difference_in_fp16_follows_supermerger_native_precision():
    a = one_key([0.1, 0.7, -3.3], dtype=torch.float16)
    b = one_key([0.3, 0.2, 1.1], dtype=torch.float16)
    c = one_key([0.2, 0.9, 0.4], dtype=torch.float16)
    out = merge(a, b, c, mode="add_difference", alpha=0.35)[CONV_IN]
    d = (b[CONV_IN].float() - c[CONV_IN].float()).half()
    assert torch.equal(out, torch.lerp(a[CONV_IN], a[CONV_IN] + 0.35 * d, 1.0))


def test_add_difference_without_c_uses_a_as_c():
    out = merge(one_key(A), one_key(B), None, mode="add_difference", alpha=0.5)
    assert out[CONV_IN].tolist() == [2.0, 4.0]  # A + 0.5·(B − A)


def test_keys_only_in_b_are_copied_in_and_keys_only_in_a_stay(sd1):
    a, b, _ = sd1
    a = dict(a)
    extra_b = "model.diffusion_model.extra.weight"
    only_a = "cond_stage_model.transformer.text_model.final_layer_norm.bias"
    b = {k: v for k, v in b.items() if k != only_a}
    b[extra_b] = torch.ones(3)
    out = merge(a, b, alpha=0.5)
    assert torch.equal(out[extra_b], b[extra_b])
    assert torch.equal(out[only_a], a[only_a])
    assert list(out)[: len(a)] == list(a)  # A's key order first


def test_inpainting_a_merges_only_the_shared_channels():
    a = {CONV_IN: torch.arange(2 * 9 * 3 * 3, dtype=torch.float32).reshape(2, 9, 3, 3)}
    b = {CONV_IN: torch.zeros(2, 4, 3, 3)}
    out = merge(a, b, alpha=1.0)[CONV_IN]
    assert out.shape == (2, 9, 3, 3)
    assert torch.equal(out[:, :4], torch.zeros(2, 4, 3, 3))
    assert torch.equal(out[:, 4:], a[CONV_IN][:, 4:])
    assert a[CONV_IN][:, :4].abs().sum() > 0  # A itself untouched


def test_inpainting_b_with_normal_a_is_refused_clearly():
    from merge_core import MergeError

    with pytest.raises(MergeError, match="A must be the inpainting model"):
        merge({CONV_IN: torch.zeros(2, 4, 3, 3)}, {CONV_IN: torch.zeros(2, 9, 3, 3)}, alpha=0.5)


def test_add_difference_with_inpainting_b_and_normal_c():
    a = {CONV_IN: torch.ones(2, 9, 1, 1)}
    b = {CONV_IN: torch.full((2, 9, 1, 1), 3.0)}
    c = {CONV_IN: torch.full((2, 4, 1, 1), 2.0)}
    out = merge(a, b, c, mode="add_difference", alpha=1.0)[CONV_IN]
    assert torch.equal(out[:, :4], torch.full((2, 4, 1, 1), 2.0))
    assert torch.equal(out[:, 4:], torch.ones(2, 5, 1, 1))
