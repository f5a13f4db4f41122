"""Behaviours a review found wrong once (each test names the rule it pins down)."""
import torch

from helpers import CONV_IN, merge
from merge_core import DictSource, Inputs, Recipe, build_plan, make_plan
from merge_core.adjust import Adjustment
from merge_core.dice import DiceSettings, random_table, rewrite
from merge_core.families import FAMILIES
from merge_core.executor import run_prepass
from merge_core import modes

META = torch.device("meta")


def test_kernels_and_adjust_keep_the_inputs_device():
    a = torch.empty(300_000, device=META, dtype=torch.float16)
    for mode, fn in modes.FORMULAS.items():
        assert fn(a, a, a, 0.3, 0.2, False).device == META, mode
    assert modes.difference(a, a).device == META
    assert Adjustment(shift=(0.1, 0.2, 0.3, 0.4)).apply(torch.empty(4, device=META)).device == META


def test_adjust_on_an_inpainting_a_covers_every_channel():
    a = {CONV_IN: torch.ones(2, 9, 1, 1)}
    b = {CONV_IN: torch.full((2, 4, 1, 1), 2.0)}
    out = merge(a, b, alpha=1.0, adjust="10,0,0,0,0,0,0,0")[CONV_IN]  # input conv weight × 0.9
    assert torch.allclose(out[:, :4], torch.full((2, 4, 1, 1), 1.8))
    assert torch.allclose(out[:, 4:], torch.full((2, 5, 1, 1), 0.9))


def test_dice_d_keeps_its_centre_when_the_width_coin_fails():
    t = random_table(5)
    never = DiceSettings(upper="0.7", lower="0.5R0")  # probability 0: the width is always dropped
    assert rewrite("D", t, 0, never, FAMILIES["sd1"].dice_blocks, 5, "w").text == "0.7"
    assert rewrite("X", t, 0, never, FAMILIES["sd1"].dice_blocks, 5, "w").text == "0.0"


def test_self_and_plus_random_at_alpha_zero_are_not_adjusted(sd1):
    a, b, _ = sd1
    for calcmode in ("self", "plus random"):
        out = merge(a, b, calcmode=calcmode, alpha=0.0, adjust="5,5,5,5,5,5,5,5", seed=1)
        assert torch.equal(out[CONV_IN], a[CONV_IN]), calcmode


def _prepass_range(a, b, c, **fields):
    recipe = Recipe(model_a="A", model_b="B", model_c="C", mode="add_difference", calcmode="cosineB", **fields)
    inputs = Inputs(DictSource(a, "A"), DictSource(b, "B"), DictSource(c, "C"))
    return run_prepass(make_plan(recipe, inputs), inputs)


def test_cosine_prepass_under_add_difference_sees_stage0_b_and_ignores_include_exclude(sd1):
    a, b, c = sd1
    c = {k: v for k, v in c.items() if "input_blocks.1." not in k}  # keys C lacks: B − C is zeros there
    plain = _prepass_range(a, b, c)
    excluded = _prepass_range(a, b, c, include_exclude={"mode": "exclude", "blocks": ["OUT03", "BASE"]})
    assert plain == excluded
    # the reference: SuperMerger's Stage 0 on B, then the pre-pass over every "model" key of A but the VAE
    import numpy as np
    from torch.nn.functional import cosine_similarity
    sims = []
    for k, ta in a.items():
        if "model" not in k or "first_stage_model" in k or k not in b or ta.dim() == 0:
            continue
        tb = b[k]
        if "weight" in k or "bias" in k:
            tb = (tb.float() - c[k].float()).to(tb.dtype) if k in c else torch.zeros_like(tb)
        x, y = ta.float(), tb.float()
        s1 = cosine_similarity(x, y, dim=0)
        m = torch.dot(x.reshape(-1), y.reshape(-1)) / (torch.norm(x) * torch.norm(y)).clamp_min(1e-8)
        sims.append(((s1 + m) / 2).reshape(-1).double().numpy())
    v = np.concatenate(sims)
    v = v[~np.isnan(v)]
    v = v[v >= np.percentile(v, 1, method="midpoint")]
    v = v[v <= np.percentile(v, 99, method="midpoint")]
    assert (plain.low, plain.high) == (v.min(), v.max())


def test_merge_name_shows_the_block_list_base_beta(sd1):
    from merge_core.merge import display_name
    from merge_core.plan import ModelInfo

    a = DictSource(sd1[0])
    recipe = Recipe(model_a="A.safetensors", model_b="B.safetensors", model_c="C.safetensors", mode="sum_twice",
                    weights_alpha="FLAT_25", weights_beta="ALL_B", beta=0.25)
    plan = build_plan(recipe, ModelInfo.of(a), ModelInfo.of(a), ModelInfo.of(a))
    name = display_name(plan)
    assert name.endswith("_(1.0," + ",".join(["1.0"] * 26) + ")")  # base β 1.0 (not the slider 0.25), then the list


def test_a_header_shape_given_as_text_is_corrupt(tmp_path):
    import json
    import struct

    import pytest
    from merge_core import MergeError, open_model

    header = json.dumps({"w": {"dtype": "F32", "shape": "12", "data_offsets": [0, 8]}}).encode()
    (tmp_path / "bad.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 8)
    with pytest.raises(MergeError, match="corrupt"):
        open_model(tmp_path / "bad.safetensors")


def test_a_ckpt_that_is_not_a_pickle_is_called_unreadable_not_unsafe(tmp_path):
    import pytest
    from merge_core import MergeError, open_model

    (tmp_path / "notes.ckpt").write_text("these are not weights")
    with pytest.raises(MergeError, match="not a readable checkpoint"):
        open_model(tmp_path / "notes.ckpt")


def test_cosine_merges_from_the_prepass_similarities_equal_recomputed_ones(sd1):
    import dataclasses

    from merge_core.steps import merge_tensors as merge_key

    a, b, _ = sd1
    for calcmode in ("cosineA", "cosineB"):
        recipe = Recipe(model_a="A", model_b="B", calcmode=calcmode, alpha=0.3)
        inputs = Inputs(DictSource(a, "A"), DictSource(b, "B"))
        plan = make_plan(recipe, inputs)
        stats = run_prepass(plan, inputs)
        bare = dataclasses.replace(stats, combined={})
        for step in plan.merged():
            one = merge_key(plan, step, a[step.key], b[step.key], None, stats)
            two = merge_key(plan, step, a[step.key], b[step.key], None, bare)
            assert torch.equal(one, two), step.key


def test_cosine_similarities_through_reused_buffers_equal_plain_normalize(sd1):
    from torch.nn.functional import cosine_similarity, normalize

    from merge_core.calcmodes.cosine import _similarities

    a, b, _ = sd1
    for key in ("model.diffusion_model.input_blocks.1.0.in_layers.2.weight",
                "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight",
                "model.diffusion_model.out.2.bias"):
        an, bn = normalize(a[key].float(), p=2, dim=0), normalize(b[key].float(), p=2, dim=0)
        s = cosine_similarity(an, bn, dim=0)
        m = torch.dot(an.reshape(-1), bn.reshape(-1)) / (torch.norm(an) * torch.norm(bn)).clamp_min(1e-8)
        got_s, got_comb = _similarities(a[key], b[key], True)
        assert torch.equal(got_s, s) and torch.equal(got_comb, (s + m) / 2), key


def test_cosine_prepass_counts_0_dim_tensors_as_supermerger_does():
    """SDXL's CLIP-G `logit_scale` and SD1's `model_ema.decay` are 0-dim "model" keys: SuperMerger's pre-pass
    (SPEC §2.2) normalises and compares them like any other, and so shifts the 1st/99th percentiles. The oracle
    below is that pre-pass written out with plain torch/numpy over every key it reads."""
    import numpy as np
    from torch.nn.functional import cosine_similarity, normalize

    from merge_core.synthetic import tiny_sdxl

    a, b = tiny_sdxl(1), tiny_sdxl(2)
    scalar = "conditioner.embedders.1.model.logit_scale"
    assert a[scalar].dim() == 0
    # a few tiny, nearly identical tensors would sit inside the trimmed range anyway; make the scalar decide the
    # top: every other similarity stays below 1, the scalar's is exactly 1 (x/|x| of a positive scalar)
    a[scalar], b[scalar] = torch.tensor(2.0), torch.tensor(3.0)
    values = []
    for key in a:
        if "model" not in key or "first_stage_model" in key or key not in b:
            continue
        s = cosine_similarity(normalize(a[key].float(), p=2, dim=0), normalize(b[key].float(), p=2, dim=0), dim=0)
        values.append(s.reshape(-1).double().numpy())
    v = np.concatenate(values)
    v = v[~np.isnan(v)]
    v = v[v >= np.percentile(v, 1, method="midpoint")]
    v = v[v <= np.percentile(v, 99, method="midpoint")]
    recipe = Recipe(model_a="A", model_b="B", calcmode="cosineA", alpha=0.3)
    inputs = Inputs(DictSource(a, "A"), DictSource(b, "B"))
    stats = run_prepass(make_plan(recipe, inputs), inputs)
    assert (stats.low, stats.high) == (float(v.min()), float(v.max()))
    assert scalar in stats.combined
