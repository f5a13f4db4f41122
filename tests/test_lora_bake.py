"""Baking LoRAs into a checkpoint file (SPEC §13.7): W' = W + r_block·ΔW, linear in r."""
import pytest
import torch
import torch.nn.functional as F

from merge_core import MergeError, MergeInterrupted, RunContext
from merge_core.lora.bake import apply_dora, bake_to_file, module_delta
from merge_core.lora.files import LoraFile
from merge_core.lora.synthetic import random_lora
from merge_core.lora.syntax import parse_list
from merge_core.sources import SafetensorsFile
from merge_core.synthetic import tiny_sd1, tiny_sdxl, write_model

U = "model.diffusion_model."
KEYS = {
    "linear": (U + "input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight",
               "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k", 5),
    "conv1x1": (U + "output_blocks.7.1.proj_in.weight", "lora_unet_up_blocks_2_attentions_1_proj_in", 21),
    "conv3x3": (U + "input_blocks.1.0.in_layers.2.weight", "lora_unet_down_blocks_0_resnets_0_conv1", 2),
    "te": ("cond_stage_model.transformer.text_model.encoder.layers.1.mlp.fc2.weight",
           "lora_te_text_model_encoder_layers_1_mlp_fc2", 0),
}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("bake") / "model.safetensors"
    sd = tiny_sd1(7, dtype=torch.float16)
    write_model(sd, path)
    return path, sd


def shapes(sd):
    return {k: tuple(v.shape) for k, v in sd.items()}


def bake(model_path, out, loras: dict, text: str, **kw):
    inputs = [(LoraFile.from_dict(loras[e.name], e.name), e) for e in parse_list(text)]
    return bake_to_file(model_path, inputs, out, **kw)


def read(path):
    with SafetensorsFile(path) as f:
        return {k: f.get(k).clone() for k in f.keys()}


@pytest.mark.parametrize("kind", list(KEYS))
def test_lora_and_locon_follow_kohyas_formula(model, tmp_path, kind):
    path, sd = model
    key, module, _block = KEYS[kind]
    lora = random_lora(shapes(sd), "sd1", 4, 3, conv3x3=True, alpha=2.0)
    out = read(bake(path, tmp_path / "o.safetensors", {"x": lora}, "x:0.7", precision="float").path)
    up, down = lora[module + ".lora_up.weight"], lora[module + ".lora_down.weight"]
    if kind == "conv3x3":  # SPEC §13.7 fallback: 3×3 conv through conv2d composition
        delta = F.conv2d(down.permute(1, 0, 2, 3), up).permute(1, 0, 2, 3)
    elif kind == "conv1x1":
        delta = (up.squeeze(3).squeeze(2) @ down.squeeze(3).squeeze(2))[:, :, None, None]
    else:
        delta = up @ down
    want = sd[key].float() + 0.7 * delta * 2.0 / 4
    assert torch.allclose(out[key], want, atol=1e-6)


def test_result_is_linear_in_the_ratio_and_keeps_the_sign(model, tmp_path):
    path, sd = model
    lora = random_lora(shapes(sd), "sd1", 4, 3, conv3x3=True)
    outs = {r: read(bake(path, tmp_path / f"o{r}.safetensors", {"x": lora}, f"x:{r}", precision="float").path)
            for r in (1, -2)}
    for key, *_ in KEYS.values():
        d1 = outs[1][key] - sd[key].float()
        dm2 = outs[-2][key] - sd[key].float()
        assert d1.abs().max() > 0
        assert torch.allclose(dm2, -2 * d1, atol=1e-5)


def test_per_block_ratios_and_zero_blocks_keep_the_bytes(model, tmp_path):
    path, sd = model
    lora = random_lora(shapes(sd), "sd1", 4, 3, conv3x3=True)
    # 26 values: only IN01 (the 3×3 conv's block) at 1, OUT07 at 0.5
    values = ["0"] * 26
    values[2], values[21] = "1", "0.5"
    out = read(bake(path, tmp_path / "o.safetensors", {"x": lora}, "x:1:" + ",".join(values)).path)
    assert out[KEYS["conv3x3"][0]].dtype == torch.float16  # precision "keep"
    assert not torch.equal(out[KEYS["conv3x3"][0]], sd[KEYS["conv3x3"][0]])
    full = read(bake(path, tmp_path / "f.safetensors", {"x": lora}, "x:0.5", precision="float").path)
    assert torch.equal(out[KEYS["conv1x1"][0]], full[KEYS["conv1x1"][0]].half())
    for key in (KEYS["linear"][0], KEYS["te"][0]):
        assert torch.equal(out[key], sd[key])  # blocks at 0: untouched, bit for bit
    assert set(out) == set(sd)
    assert all(torch.equal(out[k], sd[k]) for k in sd if "first_stage_model" in k)


def test_loha_and_lokr(model, tmp_path):
    path, sd = model
    key, module, _ = KEYS["linear"]
    for kind in ("loha", "lokr"):
        lora = random_lora(shapes(sd), "sd1", 4, 4, kind=kind, only="attn2_to_k")
        out = read(bake(path, tmp_path / f"{kind}.safetensors", {"y": lora}, "y:0.5", precision="float").path)
        if kind == "loha":
            delta = ((lora[module + ".hada_w1_a"] @ lora[module + ".hada_w1_b"])
                     * (lora[module + ".hada_w2_a"] @ lora[module + ".hada_w2_b"]))  # alpha = rank
        else:
            delta = torch.kron(lora[module + ".lokr_w1"], lora[module + ".lokr_w2"])
        assert torch.allclose(out[key], sd[key].float() + 0.5 * delta, atol=1e-6), kind


def test_full_diff_bias_and_cp_locon_deltas():
    g = torch.Generator().manual_seed(0)
    up, down, mid = torch.randn(6, 2, 1, 1, generator=g), torch.randn(2, 3, 1, 1, generator=g), \
        torch.randn(2, 2, 3, 3, generator=g)
    lf = LoraFile.from_dict({"m.lora_up.weight": up, "m.lora_down.weight": down, "m.lora_mid.weight": mid,
                             "m.alpha": torch.tensor(1.0), "f.diff": torch.ones(4, 4), "f.diff_b": torch.ones(4)},
                            "x")
    cp = module_delta(lf, "m")["weight"]
    # conv down (1×1) → mid (3×3) → up (1×1), composed
    want = torch.einsum("ij,jkxy,kl->ilxy", up[:, :, 0, 0], mid, down[:, :, 0, 0]) * 0.5
    assert torch.allclose(cp, want, atol=1e-6)
    full = module_delta(lf, "f")
    assert torch.equal(full["weight"], torch.ones(4, 4)) and torch.equal(full["bias"], torch.ones(4))


def test_dora_renormalises_rows():
    g = torch.Generator().manual_seed(0)
    w, d = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g) * 0.1
    scale = torch.rand(4, 1, generator=g) + 0.5
    out = apply_dora(w, d, scale, 1.0)
    assert torch.allclose(out, (w + d) * scale / (w.norm(dim=1, keepdim=True) + torch.finfo(w.dtype).eps))
    assert torch.allclose(apply_dora(w, d, scale, 0.0), w)


def test_sdxl_open_clip_qkv_patch_their_third_of_in_proj(tmp_path):
    sd = tiny_sdxl(3)
    path = tmp_path / "xl.safetensors"
    write_model(sd, path)
    lora = random_lora(shapes(sd), "sdxl", 2, 1, only="lora_te2_text_model_encoder_layers_1_self_attn")
    out = read(bake(path, tmp_path / "o.safetensors", {"z": lora}, "z:1").path)
    key = "conditioner.embedders.1.model.transformer.resblocks.1.attn.in_proj_weight"
    w = sd[key].shape[1]
    for i, p in enumerate("qkv"):
        m = f"lora_te2_text_model_encoder_layers_1_self_attn_{p}_proj"
        want = sd[key][i * w:(i + 1) * w] + lora[m + ".lora_up.weight"] @ lora[m + ".lora_down.weight"]
        assert torch.allclose(out[key][i * w:(i + 1) * w], want, atol=1e-6)
    out_proj = "conditioner.embedders.1.model.transformer.resblocks.1.attn.out_proj.weight"
    m = "lora_te2_text_model_encoder_layers_1_self_attn_out_proj"
    assert torch.allclose(out[out_proj], sd[out_proj] + lora[m + ".lora_up.weight"] @ lora[m + ".lora_down.weight"],
                          atol=1e-6)


def test_inpainting_model_gets_the_lora_on_its_first_channels(tmp_path):
    sd = tiny_sd1(5)
    conv = U + "input_blocks.0.0.weight"
    four = sd[conv]
    sd[conv] = torch.cat([four, torch.randn(four.shape[0], 5, 3, 3)], 1)
    path = tmp_path / "inpaint.safetensors"
    write_model(sd, path)
    g = torch.Generator().manual_seed(1)
    lora = {"lora_unet_conv_in.lora_up.weight": torch.randn(four.shape[0], 2, 1, 1, generator=g),
            "lora_unet_conv_in.lora_down.weight": torch.randn(2, 4, 3, 3, generator=g)}
    out = read(bake(path, tmp_path / "o.safetensors", {"c": lora}, "c:1").path)
    assert torch.equal(out[conv][:, 4:], sd[conv][:, 4:])
    assert not torch.equal(out[conv][:, :4], sd[conv][:, :4])


def test_wrong_family_unknown_modules_and_existing_output(model, tmp_path):
    path, sd = model
    xl = random_lora(shapes(tiny_sdxl(1)), "sdxl", 2, 1)
    with pytest.raises(MergeError, match="SDXL LoRA; the model is SD1"):
        bake(path, tmp_path / "o.safetensors", {"xl": xl}, "xl:1")
    alien = {"lora_unet_nothing_here.lora_up.weight": torch.ones(2, 1),
             "lora_unet_nothing_here.lora_down.weight": torch.ones(1, 2)}
    with pytest.raises(MergeError, match="none of the 1 modules of al fits"):
        bake(path, tmp_path / "o.safetensors", {"al": alien}, "al:1")
    good = random_lora(shapes(sd), "sd1", 2, 1, only="mlp_fc1")
    result = bake(path, tmp_path / "o.safetensors", {"g": good, "al": alien | good}, "g:1,al:1")
    assert result.notes and "al: 1 modules fit no key" in result.notes[0]
    with pytest.raises(MergeError, match="already exists"):
        bake(path, tmp_path / "o.safetensors", {"g": good}, "g:1")
    assert not list(tmp_path.glob(".*.part"))


def test_interrupt_leaves_no_file(model, tmp_path):
    path, sd = model
    good = random_lora(shapes(sd), "sd1", 2, 1)
    with pytest.raises(MergeInterrupted):
        bake(path, tmp_path / "o.safetensors", {"g": good}, "g:1", run=RunContext(cancel=lambda: True))
    assert list(tmp_path.iterdir()) == []


def test_precision_fp16_casts_floating_tensors_only(model, tmp_path):
    path, sd = model
    good = random_lora(shapes(sd), "sd1", 2, 1)
    out = read(bake(path, tmp_path / "o.safetensors", {"g": good}, "g:1", precision="bf16").path)
    assert out["cond_stage_model.transformer.text_model.embeddings.position_ids"].dtype == torch.int64
    assert out[KEYS["te"][0]].dtype == torch.bfloat16


def test_flux_blocks_from_a_61_value_list_and_bare_diffusion_model_keys(tmp_path):
    g = torch.Generator().manual_seed(2)
    model = {"double_blocks.0.img_attn.qkv.weight": torch.randn(12, 4, generator=g),
             "single_blocks.1.linear1.weight": torch.randn(6, 4, generator=g),
             "img_in.weight": torch.randn(4, 4, generator=g)}
    write_model(model, tmp_path / "flux.safetensors")
    lora = {}
    for module, (o, i) in (("lora_unet_double_blocks_0_img_attn_qkv", (12, 4)),
                           ("lora_unet_single_blocks_1_linear1", (6, 4)), ("lora_unet_img_in", (4, 4))):
        lora[module + ".lora_up.weight"] = torch.randn(o, 2, generator=g)
        lora[module + ".lora_down.weight"] = torch.randn(2, i, generator=g)
    ratios = ["0"] * 61
    ratios[3], ratios[23] = "0.5", "2"  # D00, S01; IN (img_in) stays 0
    out = read(bake(tmp_path / "flux.safetensors", tmp_path / "o.safetensors", {"f": lora},
                    "f:1:" + ",".join(ratios)).path)

    def delta(m):
        return lora[m + ".lora_up.weight"] @ lora[m + ".lora_down.weight"]
    assert torch.allclose(out["double_blocks.0.img_attn.qkv.weight"],
                          model["double_blocks.0.img_attn.qkv.weight"]
                          + 0.5 * delta("lora_unet_double_blocks_0_img_attn_qkv"),
                          atol=1e-6)
    assert torch.allclose(out["single_blocks.1.linear1.weight"],
                          model["single_blocks.1.linear1.weight"] + 2 * delta("lora_unet_single_blocks_1_linear1"),
                          atol=1e-6)
    assert torch.equal(out["img_in.weight"], model["img_in.weight"])
