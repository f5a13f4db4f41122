"""SPEC §3: family detection and the key → block mapping (SD1/SD2, SDXL fine/coarse, Flux)."""
from collections import Counter

import pytest
import torch

from helpers import CONV_IN, merge
from merge_core import FAMILIES, MergeError, detect
from merge_core.families import SD2_CLIP_KEY, XL_CLIPG_KEY
from merge_core.synthetic import sd1_layout, sdxl_layout, tiny_sd1, tiny_sdxl

SD1, SD2, SDXL, FLUX = (FAMILIES[n] for n in ("sd1", "sd2", "sdxl", "flux"))
U = "model.diffusion_model."
TO_K2 = U + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"


def block(family, key):
    ref = family.block_of(key)
    return None if ref is None else (ref.fine, ref.coarse)


# Detection (§3.1) ---------------------------------------------------------------------------------

def test_tiny_sd1_is_detected_as_sd1():
    assert detect(tiny_sd1(1).keys()).name == "sd1"


def test_sd1_is_detected_from_the_unet_alone_and_from_the_text_encoder_alone():
    assert detect({CONV_IN}).name == "sd1"
    assert detect({"cond_stage_model.transformer.text_model.final_layer_norm.weight"}).name == "sd1"


def test_sd2_is_detected_by_its_open_clip_key():
    assert detect(set(tiny_sd1(1)) | {SD2_CLIP_KEY}).name == "sd2"


def test_sd2_is_detected_by_a_1024_context_dim_and_sd1_by_768():
    assert detect({CONV_IN, TO_K2}, context_dim=1024).name == "sd2"
    assert detect({CONV_IN, TO_K2}, context_dim=768).name == "sd1"


def test_tiny_sdxl_is_detected_as_sdxl():
    assert XL_CLIPG_KEY in tiny_sdxl(1)
    assert detect(tiny_sdxl(1).keys()).name == "sdxl"


def test_sdxl_clip_g_key_alone_means_sdxl():
    assert detect({XL_CLIPG_KEY, CONV_IN}).name == "sdxl"


@pytest.mark.parametrize("key", ["double_blocks.0.img_attn.qkv.weight",
                                 U + "double_blocks.18.txt_mlp.2.bias"])
def test_flux_is_detected_by_double_block(key):
    assert detect({key, "img_in.weight"}).name == "flux"


@pytest.mark.parametrize("keys", [set(), {"foo.weight", "bar.bias"},
                                  {"encoder.down.0.block.0.conv1.weight"}])
def test_unknown_layouts_are_refused(keys):
    with pytest.raises(MergeError):
        detect(keys, "model_b (x.safetensors)")


def test_sd3_joint_blocks_are_refused_naming_sd3():
    keys = {U + "joint_blocks.0.context_block.attn.qkv.weight", U + "x_embedder.proj.weight"}
    with pytest.raises(MergeError, match="SD3") as e:
        detect(keys, "model_a (sd3.safetensors)")
    assert "model_a (sd3.safetensors)" in str(e.value)


def test_unknown_layout_is_refused_through_a_merge():
    t = torch.ones(2)
    with pytest.raises(MergeError):
        merge({"foo.weight": t}, {"foo.weight": t})


def test_merging_sd1_with_sdxl_is_refused_naming_both_families():
    with pytest.raises(MergeError) as e:
        merge(tiny_sd1(1), tiny_sdxl(2))
    msg = str(e.value)
    assert "Stable Diffusion 1.x" in msg and "SDXL" in msg
    assert "model_a" in msg and "model_b" in msg


def test_merging_sdxl_with_sd1_as_model_c_is_refused():
    with pytest.raises(MergeError) as e:
        merge(tiny_sdxl(1), tiny_sdxl(2), tiny_sd1(3), mode="add_difference")
    assert "SDXL" in str(e.value) and "Stable Diffusion 1.x" in str(e.value) and "model_c" in str(e.value)


def test_merging_sd1_with_sd2_is_refused_naming_both():
    a = tiny_sd1(1)
    b = dict(tiny_sd1(2))
    b[SD2_CLIP_KEY] = torch.zeros(4, 4)
    with pytest.raises(MergeError) as e:
        merge(a, b)
    assert "Stable Diffusion 1.x" in str(e.value) and "Stable Diffusion 2.x" in str(e.value)


def test_sd2_unet_only_file_is_told_apart_by_its_context_width():
    a = {CONV_IN: torch.zeros(4, 4, 3, 3), TO_K2: torch.zeros(4, 768)}
    b = {CONV_IN: torch.zeros(4, 4, 3, 3), TO_K2: torch.zeros(4, 1024)}
    with pytest.raises(MergeError, match="2.x"):
        merge(a, b)


# SD1 / SD2 mapping (§3.2) -------------------------------------------------------------------------

@pytest.mark.parametrize("key, expected", [
    (U + "time_embed.0.weight", "IN00"),
    (U + "time_embed.2.bias", "IN00"),
    (U + "out.0.weight", "OUT11"),
    (U + "out.2.bias", "OUT11"),
    (U + "input_blocks.0.0.weight", "IN00"),
    (U + "input_blocks.3.0.op.weight", "IN03"),
    (U + "input_blocks.11.0.out_layers.3.weight", "IN11"),
    (U + "input_blocks.1.1.transformer_blocks.0.attn1.to_out.0.weight", "IN01"),
    (U + "middle_block.0.in_layers.0.weight", "M00"),
    (U + "middle_block.1.proj_in.weight", "M00"),
    (U + "middle_block.2.out_layers.3.bias", "M00"),
    (U + "output_blocks.0.0.skip_connection.weight", "OUT00"),
    (U + "output_blocks.5.2.conv.weight", "OUT05"),
    (U + "output_blocks.11.1.proj_out.bias", "OUT11"),
    ("cond_stage_model.transformer.text_model.encoder.layers.0.mlp.fc1.weight", "BASE"),
    ("cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight", "BASE"),
    ("first_stage_model.decoder.conv_out.weight", "BASE"),
    ("first_stage_model.encoder.mid.attn_1.proj_out.weight", "BASE"),
    ("model_ema.diffusion_modelinput_blocks00weight", "BASE"),
])
def test_sd1_and_sd2_key_to_block(key, expected):
    assert block(SD1, key) == (expected, expected)
    assert block(SD2, key) == (expected, expected)


def test_sd1_1130_key_layout_block_counts_match_spec():
    layout = sd1_layout()
    assert len(layout) == 1130
    groups = Counter()
    for key in layout:
        b = SD1.block_of(key).coarse
        if key.startswith("first_stage_model."):
            groups["vae", b] += 1
        elif key.startswith("cond_stage_model."):
            groups["te", b] += 1
        elif "time_embed" in key:
            groups["time", b] += 1
        elif key.startswith(U + "out."):
            groups["out", b] += 1
    assert groups == {("time", "IN00"): 4, ("out", "OUT11"): 4, ("vae", "BASE"): 248, ("te", "BASE"): 196}


def test_sd1_layout_reaches_every_one_of_the_26_blocks():
    seen = {SD1.block_of(k).coarse for k in sd1_layout(scale=1 / 40, text_layers=1, vocab=8)}
    assert seen == set(SD1.blocks)
    assert len(SD1.blocks) == 26 and SD1.blocks[0] == "BASE"


def test_sd1_unet_keys_other_than_time_embed_and_out_follow_their_block_number():
    for key in sd1_layout(scale=1 / 40, text_layers=1, vocab=8):
        if not key.startswith(U) or "time_embed" in key or key.startswith(U + "out."):
            continue
        part, num = key[len(U):].split(".")[:2]
        expected = {"input_blocks": f"IN{int(num):02}", "middle_block": "M00",
                    "output_blocks": f"OUT{int(num):02}"}[part]
        assert SD1.block_of(key).coarse == expected, key


# SDXL mapping (§3.3) ------------------------------------------------------------------------------

@pytest.mark.parametrize("key, fine, coarse", [
    (U + "input_blocks.4.1.transformer_blocks.1.attn1.to_k.weight", "IN411", "IN04"),
    (U + "input_blocks.4.1.norm.weight", "IN41", "IN04"),
    (U + "middle_block.1.transformer_blocks.3.attn1.to_q.weight", "MID103", "M00"),
    (U + "middle_block.1.transformer_blocks.3.ff.net.2.bias", "MID103", "M00"),
    (U + "output_blocks.2.2.conv.weight", "OUT22", "OUT02"),
    (U + "label_emb.0.0.weight", "LABEL", "IN00"),
    (U + "label_emb.0.2.bias", "LABEL", "IN00"),
    (U + "time_embed.0.weight", "TIME", "IN00"),
    (U + "time_embed.2.bias", "TIME", "IN00"),
    ("conditioner.embedders.0.transformer.text_model.encoder.layers.0.mlp.fc1.weight", "CLIPL", "BASE"),
    ("conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.weight", "CLIPG", "BASE"),
    ("conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight", "CLIPG", "BASE"),
    ("first_stage_model.decoder.conv_out.weight", "VAE", "BASE"),
    ("first_stage_model.quant_conv.bias", "VAE", "BASE"),
    (U + "out.0.weight", "OUT9", "OUT08"),
    (U + "out.2.bias", "OUT9", "OUT08"),
    (U + "input_blocks.0.0.weight", "IN00", "IN00"),
    (U + "input_blocks.7.1.transformer_blocks.9.attn2.to_v.weight", "IN719", "IN07"),
    (U + "middle_block.0.in_layers.0.weight", "MID00", "M00"),
    (U + "middle_block.2.out_layers.3.bias", "MID20", "M00"),
    (U + "output_blocks.0.1.transformer_blocks.4.norm1.weight", "OUT014", "OUT00"),
    (U + "output_blocks.8.0.skip_connection.weight", "OUT80", "OUT08"),
])
def test_sdxl_key_to_fine_and_coarse_block(key, fine, coarse):
    assert block(SDXL, key) == (fine, coarse)


@pytest.mark.parametrize("key", [
    "conditioner.embedders.1.model.text_projection",
    "conditioner.embedders.1.model.logit_scale",
    "conditioner.embedders.1.model.positional_embedding",
    "conditioner.embedders.0.transformer.text_model.embeddings.position_ids",
    "alphas_cumprod",
])
def test_sdxl_keys_without_weight_or_bias_are_not_merged(key):
    assert SDXL.block_of(key) is None


def test_every_extended_name_but_in0_is_produced_by_some_sdxl_key():
    fines = {SDXL.block_of(k).fine for k in sdxl_layout() if SDXL.block_of(k) is not None}
    assert len(SDXL.extended) == 110
    assert set(SDXL.extended) - fines == {"IN0"}
    assert fines <= set(SDXL.extended)


def test_every_sdxl_coarse_block_is_one_of_the_20_blocks():
    coarse = {SDXL.block_of(k).coarse for k in sdxl_layout() if SDXL.block_of(k) is not None}
    assert coarse == set(SDXL.blocks)
    assert len(SDXL.blocks) == 20


def test_sdxl_fine_block_prefix_agrees_with_coarse_block():
    for key in sdxl_layout():
        ref = SDXL.block_of(key)
        if ref is None or ref.fine in ("CLIPL", "CLIPG", "VAE", "TIME", "LABEL", "OUT9"):
            continue
        if ref.fine.startswith("MID"):
            assert ref.coarse == "M00", key
        elif ref.fine.startswith("IN"):
            assert ref.coarse == "IN0" + ref.fine[2], key
        else:
            assert ref.coarse == "OUT0" + ref.fine[3], key


def test_sdxl_unmerged_keys_keep_a_in_a_merge(sdxl):
    a, b, _ = sdxl
    out = merge(a, b, alpha=1.0)
    for key in ("conditioner.embedders.1.model.text_projection", "conditioner.embedders.1.model.logit_scale",
                "conditioner.embedders.1.model.positional_embedding"):
        assert torch.equal(out[key], a[key]) and not torch.equal(a[key], b[key])
    for key in (U + "time_embed.0.weight", U + "label_emb.0.0.weight", U + "out.2.weight"):
        assert torch.equal(out[key], b[key])


# Flux (§3.4) --------------------------------------------------------------------------------------

@pytest.mark.parametrize("key, expected", [
    ("vae.decoder.conv_in.weight", None),
    ("vae.encoder.down.0.block.0.conv1.bias", None),
    ("text_encoders.t5xxl.transformer.encoder.block.0.layer.0.SelfAttention.q.weight", "T5"),
    ("text_encoders.clip_l.transformer.text_model.encoder.layers.0.mlp.fc1.weight", "CLIP"),
    ("double_blocks.0.img_attn.qkv.weight", "D00"),
    ("double_blocks.18.txt_mlp.2.bias", "D18"),
    (U + "double_blocks.7.img_mod.lin.weight", "D07"),
    ("single_blocks.0.linear1.weight", "S00"),
    ("single_blocks.37.modulation.lin.bias", "S37"),
    (U + "single_blocks.12.norm.key_norm.scale", "S12"),
    ("img_in.weight", "IN"),
    ("txt_in.bias", "IN"),
    ("time_in.in_layer.weight", "IN"),
    ("vector_in.out_layer.bias", "IN"),
    ("guidance_in.in_layer.weight", "IN"),
    (U + "img_in.weight", "IN"),
    ("final_layer.linear.weight", "OUT"),
    ("final_layer.adaLN_modulation.1.bias", "OUT"),
    ("something_else.weight", None),
])
def test_flux_key_to_block(key, expected):
    got = block(FLUX, key)
    assert got == (None if expected is None else (expected, expected))


def test_flux_has_61_blocks_in_spec_order():
    assert len(FLUX.blocks) == 61
    assert FLUX.blocks[:4] == ("CLIP", "T5", "IN", "D00")
    assert FLUX.blocks[21:23] == ("D18", "S00") and FLUX.blocks[-2:] == ("S37", "OUT")


def _tiny_flux(seed):
    g = torch.Generator().manual_seed(seed)
    keys = ["double_blocks.0.img_attn.qkv.weight", "double_blocks.1.txt_mlp.0.bias",
            "single_blocks.0.linear1.weight", "single_blocks.2.linear2.bias", "img_in.weight", "time_in.in_layer.bias",
            "final_layer.linear.weight", "vae.decoder.conv_in.weight",
            "text_encoders.clip_l.transformer.text_model.final_layer_norm.weight",
            "text_encoders.t5xxl.transformer.encoder.final_layer_norm.weight"]
    return {k: torch.randn(3, 2, generator=g) for k in keys}


def test_flux_merge_leaves_vae_as_a_and_merges_everything_else():
    a, b = _tiny_flux(1), _tiny_flux(2)
    out = merge(a, b, alpha=1.0)
    assert torch.equal(out["vae.decoder.conv_in.weight"], a["vae.decoder.conv_in.weight"])
    for k in a:
        if not k.startswith("vae."):
            assert torch.equal(out[k], b[k]), k
