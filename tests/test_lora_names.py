"""Checkpoint key ↔ kohya LoRA module name, LoRA blocks (SPEC §13.5) and extraction targets (§13.9)."""
import re

import pytest

from merge_core import FAMILIES
from merge_core.lora.names import (block_index, checkpoint_key, fused_modules, fused_part, is_target,
                                   key_block_index, module_name)
from merge_core.synthetic import sd1_layout, sdxl_layout

U = "model.diffusion_model."
SD1_KEYS = list(sd1_layout(scale=1 / 40))  # real key names, full depth (12 CLIP layers)
SDXL_KEYS = list(sdxl_layout(scale=1 / 40))  # 12 CLIP-L and 32 OpenCLIP-G layers
BLOCKID26 = (["BASE"] + [f"IN{i:02}" for i in range(12)] + ["M00"] + [f"OUT{i:02}" for i in range(12)])


@pytest.mark.parametrize("family,key,name", [
    ("sd1", U + "input_blocks.1.1.proj_in.weight", "lora_unet_down_blocks_0_attentions_0_proj_in"),
    ("sd1", "cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight",
     "lora_te_text_model_encoder_layers_0_self_attn_q_proj"),
    ("sd1", U + "output_blocks.11.1.transformer_blocks.0.attn2.to_out.0.weight",
     "lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_attn2_to_out_0"),
    ("sd1", U + "middle_block.1.transformer_blocks.0.ff.net.0.proj.weight",
     "lora_unet_mid_block_attentions_0_transformer_blocks_0_ff_net_0_proj"),
    ("sd1", U + "middle_block.2.in_layers.2.weight", "lora_unet_mid_block_resnets_1_conv1"),
    ("sd1", U + "input_blocks.4.0.skip_connection.weight", "lora_unet_down_blocks_1_resnets_0_conv_shortcut"),
    ("sd1", U + "input_blocks.3.0.op.weight", "lora_unet_down_blocks_0_downsamplers_0_conv"),
    ("sd1", U + "output_blocks.2.1.conv.weight", "lora_unet_up_blocks_0_upsamplers_0_conv"),
    ("sd1", U + "output_blocks.5.2.conv.weight", "lora_unet_up_blocks_1_upsamplers_0_conv"),
    ("sd1", U + "time_embed.2.weight", "lora_unet_time_embedding_linear_2"),
    ("sd1", U + "input_blocks.0.0.weight", "lora_unet_conv_in"),
    ("sd1", U + "out.2.weight", "lora_unet_conv_out"),
    ("sd2", "cond_stage_model.model.transformer.resblocks.5.mlp.c_fc.weight",
     "lora_te_text_model_encoder_layers_5_mlp_fc1"),
    ("sdxl", U + "input_blocks.4.1.transformer_blocks.1.attn1.to_k.weight",
     "lora_unet_input_blocks_4_1_transformer_blocks_1_attn1_to_k"),
    ("sdxl", "conditioner.embedders.0.transformer.text_model.encoder.layers.11.mlp.fc2.weight",
     "lora_te1_text_model_encoder_layers_11_mlp_fc2"),
    ("sdxl", "conditioner.embedders.1.model.transformer.resblocks.31.attn.out_proj.weight",
     "lora_te2_text_model_encoder_layers_31_self_attn_out_proj"),
    ("sdxl", "conditioner.embedders.1.model.transformer.resblocks.0.mlp.c_proj.weight",
     "lora_te2_text_model_encoder_layers_0_mlp_fc2"),
    ("flux", U + "double_blocks.3.img_attn.qkv.weight", "lora_unet_double_blocks_3_img_attn_qkv"),
    ("flux", U + "single_blocks.37.modulation.lin.weight", "lora_unet_single_blocks_37_modulation_lin"),
    ("flux", U + "time_in.in_layer.weight", "lora_unet_time_in_in_layer"),
    ("flux", "text_encoders.clip_l.transformer.text_model.encoder.layers.2.self_attn.v_proj.weight",
     "lora_te1_text_model_encoder_layers_2_self_attn_v_proj"),
    ("flux", "text_encoders.t5xxl.transformer.encoder.block.0.layer.1.DenseReluDense.wi_0.weight",
     "lora_te2_encoder_block_0_layer_1_DenseReluDense_wi_0"),
])
def test_known_names_both_ways(family, key, name):
    assert module_name(key, family) == name
    assert module_name(key, FAMILIES[family]) == name
    assert checkpoint_key(name, family) == key


@pytest.mark.parametrize("family,key", [
    ("sd1", U + "input_blocks.1.1.proj_in.bias"),
    ("sd1", "first_stage_model.decoder.conv_in.weight"),
    ("sd1", "cond_stage_model.transformer.text_model.embeddings.token_embedding.weight"),
    ("sd1", "cond_stage_model.transformer.text_model.encoder.layers.0.layer_norm1.weight"),
    ("sd1", "cond_stage_model.transformer.text_model.final_layer_norm.weight"),
    ("sdxl", "conditioner.embedders.1.model.text_projection"),
    ("sdxl", "conditioner.embedders.1.model.transformer.resblocks.0.ln_1.weight"),
    ("sdxl", "cond_stage_model.transformer.text_model.encoder.layers.0.mlp.fc1.weight"),  # SD1's layout
    ("sd1", "conditioner.embedders.0.transformer.text_model.encoder.layers.0.mlp.fc1.weight"),
])
def test_layers_no_lora_module_addresses_have_no_name(family, key):
    assert module_name(key, family) is None
    assert not is_target(key, family, conv3x3=True)


@pytest.mark.parametrize("family,keys", [("sd1", SD1_KEYS), ("sdxl", SDXL_KEYS)])
def test_every_named_key_round_trips_and_names_are_unique(family, keys):
    seen = {}
    for key in keys:
        names = [module_name(key, family)] if module_name(key, family) else list(fused_modules(key, family))
        for name in names:
            assert name not in seen, (name, key, seen.get(name))
            seen[name] = key
            assert checkpoint_key(name, family) == key
    assert len(seen) > 400


def _kohya_modules(family, keys, conv3x3=False):
    out = []
    for key in keys:
        if is_target(key, family, conv3x3):
            out += list(fused_modules(key, family)) or [module_name(key, family)]
    return out


def test_kohya_target_counts_match_real_loras():
    # A kohya SD1 LoRA has 192 U-Net and 72 text-encoder modules; an SDXL one 722 U-Net, 72 + 192 TE.
    sd1 = _kohya_modules("sd1", SD1_KEYS)
    assert sum(n.startswith("lora_unet_") for n in sd1) == 192
    assert sum(n.startswith("lora_te_") for n in sd1) == 72
    xl = _kohya_modules("sdxl", SDXL_KEYS)
    assert [sum(n.startswith(p) for n in xl) for p in ("lora_unet_", "lora_te1_", "lora_te2_")] == [722, 72, 192]


def test_conv3x3_adds_exactly_the_resblock_downsample_and_upsample_layers():
    plain, conv = set(_kohya_modules("sd1", SD1_KEYS)), set(_kohya_modules("sd1", SD1_KEYS, conv3x3=True))
    added = conv - plain
    assert plain < conv
    assert all(re.search(r"_(resnets_\d+_(conv1|conv2|time_emb_proj|conv_shortcut)|downsamplers_0_conv|"
                         r"upsamplers_0_conv)$", n) for n in added), added
    # SD1: 22 ResBlocks × (conv1, conv2, time_emb_proj) + 14 shortcuts + 3 downsamplers + 3 upsamplers
    assert len(added) == 22 * 3 + 14 + 3 + 3
    assert not any("norm" in n or n.endswith(("conv_in", "conv_out")) for n in conv)


def test_open_clip_in_proj_is_three_kohya_modules_on_row_thirds():
    key = "conditioner.embedders.1.model.transformer.resblocks.7.attn.in_proj_weight"
    qkv = fused_modules(key, "sdxl")
    assert qkv == tuple(f"lora_te2_text_model_encoder_layers_7_self_attn_{p}_proj" for p in "qkv")
    assert module_name(key, "sdxl") is None and is_target(key, "sdxl")
    assert [checkpoint_key(n, "sdxl") for n in qkv] == [key] * 3
    assert [fused_part(n, "sdxl") for n in qkv] == [0, 1, 2]
    assert fused_part("lora_te2_text_model_encoder_layers_7_self_attn_out_proj", "sdxl") is None
    sd2 = "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight"
    assert fused_modules(sd2, "sd2")[1] == "lora_te_text_model_encoder_layers_0_self_attn_k_proj"
    assert checkpoint_key("lora_te_text_model_encoder_layers_0_self_attn_k_proj", "sd2") == sd2
    assert fused_part("lora_te_text_model_encoder_layers_0_self_attn_k_proj", "sd1") is None
    assert fused_modules("cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight",
                         "sd1") == ()


@pytest.mark.parametrize("family,name,key", [
    # LDM-style names in an SD1 file and diffusers-style names in an SDXL file (both exist in the wild).
    ("sd1", "lora_unet_input_blocks_1_1_proj_in", U + "input_blocks.1.1.proj_in.weight"),
    ("sd1", "lycoris_down_blocks_0_attentions_0_proj_in", U + "input_blocks.1.1.proj_in.weight"),
    ("sdxl", "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn1_to_q",
     U + "input_blocks.4.1.transformer_blocks.0.attn1.to_q.weight"),
    ("sdxl", "lora_unet_up_blocks_0_upsamplers_0_conv", U + "output_blocks.2.2.conv.weight"),
    ("sdxl", "lora_unet_mid_block_resnets_1_time_emb_proj", U + "middle_block.2.emb_layers.1.weight"),
    ("sdxl", "lora_unet_add_embedding_linear_1", U + "label_emb.0.0.weight"),
    ("flux", "lora_te3_encoder_block_0_layer_0_SelfAttention_q",
     "text_encoders.t5xxl.transformer.encoder.block.0.layer.0.SelfAttention.q.weight"),
])
def test_other_naming_styles_are_read(family, name, key):
    assert checkpoint_key(name, family) == key


@pytest.mark.parametrize("family,name", [
    ("sd1", "lora_te1_text_model_encoder_layers_0_mlp_fc1"),  # SDXL's prefix in an SD1 file
    ("sd1", "lora_unet_down_blocks_0_resnets_0_bogus"),
    ("sdxl", "lora_te_text_model_encoder_layers_0_layer_norm1"),
    ("sd1", "hada_something"),
])
def test_unknown_names_have_no_key(family, name):
    assert checkpoint_key(name, family) is None


def _spec_block(ldm_key):
    """SPEC §13.5's rule, independently: the first LBLCOKS26 substring of the compvis-style name."""
    lblocks = (["encoder"] + [f"diffusion_model_input_blocks_{i}_" for i in range(12)]
               + ["diffusion_model_middle_block_"] + [f"diffusion_model_output_blocks_{i}_" for i in range(12)])
    full = ldm_key.replace("model.diffusion_model.", "diffusion_model_").replace(".", "_")
    return next((i for i, n in enumerate(lblocks) if n in full), 0)


@pytest.mark.parametrize("family,keys", [("sd1", SD1_KEYS), ("sdxl", SDXL_KEYS)])
def test_block_index_follows_spec_substring_rule(family, keys):
    counts = [0] * 26
    for key in keys:
        for name in ([module_name(key, family)] if module_name(key, family) else fused_modules(key, family)):
            want = 0 if not key.startswith(U) else _spec_block(key)
            assert block_index(name, family) == want == key_block_index(key, family), name
            counts[want] += 1
    used = {BLOCKID26[i] for i, c in enumerate(counts) if c}
    expected = set(BLOCKID26) if family == "sd1" else (
        {"BASE", "M00"} | {f"IN{i:02}" for i in range(9)} | {f"OUT{i:02}" for i in range(9)})
    assert used == expected


@pytest.mark.parametrize("family,name,index", [
    ("sd1", "lora_unet_down_blocks_1_attentions_1_proj_out", 6),  # IN05
    ("sd1", "lora_unet_mid_block_attentions_0_proj_in", 13),
    ("sd1", "lora_unet_up_blocks_3_attentions_2_proj_in", 25),  # OUT11
    ("sd1", "lora_unet_conv_in", 1),  # IN00
    ("sd1", "lora_unet_time_embedding_linear_1", 0),  # no LoRA block: BASE (SPEC §13.5)
    ("sd1", "lora_unet_conv_out", 0),
    ("sd1", "lora_te_text_model_encoder_layers_3_mlp_fc1", 0),
    ("sdxl", "lora_unet_output_blocks_8_0_out_layers_3", 22),  # OUT08
    ("sdxl", "lora_te2_text_model_encoder_layers_3_self_attn_q_proj", 0),
    ("sd1", "something_else_entirely", 0),
    ("flux", "lora_te1_text_model_encoder_layers_0_mlp_fc1", 0),
    ("flux", "lora_te2_encoder_block_0_layer_0_SelfAttention_q", 1),
    ("flux", "lora_unet_img_in", 2),
    ("flux", "lora_unet_double_blocks_18_txt_mlp_2", 21),
    ("flux", "lora_unet_single_blocks_0_linear1", 22),
    ("flux", "lora_unet_single_blocks_37_linear2", 59),
    ("flux", "lora_unet_final_layer_linear", 60),
])
def test_block_index_examples(family, name, index):
    assert block_index(name, family) == index


def test_comfy_model_keys_give_the_same_blocks():
    assert key_block_index("diffusion_model.output_blocks.3.1.proj_in.weight", "sd1") == 17
    assert key_block_index("clip_l.transformer.text_model.encoder.layers.0.mlp.fc1.weight", "sd1") == 0
    assert key_block_index("diffusion_model.single_blocks.2.linear1.weight", "flux") == 24


def test_flux_targets_are_the_block_linears():
    assert is_target(U + "double_blocks.0.img_mlp.2.weight", "flux")
    assert is_target("single_blocks.0.linear1.weight", "flux")  # a bare diffusion-model file
    assert not is_target(U + "img_in.weight", "flux")
    assert not is_target("text_encoders.t5xxl.transformer.encoder.block.0.layer.0.SelfAttention.q.weight", "flux")
    assert is_target("text_encoders.clip_l.transformer.text_model.encoder.layers.0.mlp.fc1.weight", "flux")


def test_unknown_family_is_refused():
    with pytest.raises(ValueError):
        module_name(U + "out.2.weight", "sd3")
