"""In-graph merges see ComfyUI's weights in checkpoint key space (nodes/keyspace.py), derived from ComfyUI's own
conversions. Held here to literal checkpoint names (not to a table of ours): SD1's CLIP-L is renamed only;
SD2's OpenCLIP-H and SDXL's CLIP-G have their q/k/v put back into the fused `in_proj` tensors they were split
from, and their text projection transposed back; SDXL's CLIP-L position ids are a constant; ComfyUI's unused
CLIP-L projection and logit scale have no checkpoint key. Run in ComfyUI's python (tests/host/keyspace_probe.py)."""
import json
import subprocess
import sys

import pytest

from comfy_host import COMFY, HERE


@pytest.fixture(scope="module")
def layouts():
    run = subprocess.run([sys.executable, str(HERE / "keyspace_probe.py"), "mini_sd15", "mini_sd2", "mini_sdxl"],
                         capture_output=True, text=True, cwd=COMFY, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def parts(layout, key):
    return layout["entries"][key][1]


def test_families_come_from_comfyui_model_configs(layouts):
    assert {k: (v["config"], v["family"]) for k, v in layouts.items()} == {
        "mini_sd15": ("SD15", "sd1"), "mini_sd2": ("SD20", "sd2"), "mini_sdxl": ("Segmind_Vega", "sdxl")}


def test_sd1_unet_and_clip_l_are_renamed_only(layouts):
    sd1 = layouts["mini_sd15"]
    assert parts(sd1, "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight") == [
        ["diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight", "whole"]]
    assert parts(sd1, "cond_stage_model.transformer.text_model.encoder.layers.11.self_attn.q_proj.weight") == [
        ["clip_l.transformer.text_model.encoder.layers.11.self_attn.q_proj.weight", "whole"]]
    assert sd1["unmapped"] == ["clip_l.logit_scale", "clip_l.transformer.text_projection.weight"]
    assert len(sd1["entries"]) == 482 and sd1["constants"] == {}


@pytest.mark.parametrize("kind,prefix,comfy,width", [
    ("mini_sd2", "cond_stage_model.model.", "clip_h.transformer.", 1024),
    ("mini_sdxl", "conditioner.embedders.1.model.", "clip_g.transformer.", 1280)])
def test_open_clip_q_k_v_are_views_of_the_fused_in_proj_and_the_projection_is_transposed_back(
        layouts, kind, prefix, comfy, width):
    layout = layouts[kind]
    layer = f"{comfy}text_model.encoder.layers.5.self_attn."
    assert layout["entries"][f"{prefix}transformer.resblocks.5.attn.in_proj_weight"] == [[3 * width, width], [
        [layer + "k_proj.weight", "view", [width, width], [width, 1], width * width],
        [layer + "q_proj.weight", "view", [width, width], [width, 1], 0],
        [layer + "v_proj.weight", "view", [width, width], [width, 1], 2 * width * width]]]
    assert parts(layout, f"{prefix}transformer.resblocks.5.attn.in_proj_bias") == [
        [layer + "k_proj.bias", "view", [width], [1], width], [layer + "q_proj.bias", "view", [width], [1], 0],
        [layer + "v_proj.bias", "view", [width], [1], 2 * width]]
    assert parts(layout, f"{prefix}transformer.resblocks.5.mlp.c_fc.weight") == [
        [f"{comfy}text_model.encoder.layers.5.mlp.fc1.weight", "whole"]]
    # ComfyUI's projection weight is the checkpoint's text_projection transposed: element (0, 1) is (1, 0)
    assert parts(layout, f"{prefix}text_projection") == [
        [f"{comfy}text_projection.weight", "index", [width, width], [0, width, 2 * width]]]
    assert parts(layout, f"{prefix}positional_embedding") == [
        [f"{comfy}text_model.embeddings.position_embedding.weight", "whole"]]
    assert parts(layout, f"{prefix}logit_scale") == [[comfy.split(".")[0] + ".logit_scale", "whole"]]


def test_sdxl_clip_l_position_ids_are_a_constant_and_clip_l_keeps_its_names(layouts):
    xl = layouts["mini_sdxl"]
    assert xl["constants"] == {"conditioner.embedders.0.transformer.text_model.embeddings.position_ids":
                               [list(range(77))]}
    assert parts(xl, "conditioner.embedders.0.transformer.text_model.encoder.layers.0.mlp.fc2.bias") == [
        ["clip_l.transformer.text_model.encoder.layers.0.mlp.fc2.bias", "whole"]]
    assert xl["unmapped"] == ["clip_l.logit_scale", "clip_l.transformer.text_projection.weight"]
