"""SPEC §10: names, save options (fp16, prune, SDXL text encoder, reset CLIP ids, bake VAE) and metadata."""
import hashlib
import json

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from helpers import CONV_IN
from merge_core import MergeError, Recipe
from merge_core.cli import run_merge
from merge_core.merge import SaveOptions, merge_to_file, open_inputs
from merge_core.naming import file_name, merge_name
from merge_core.presets import load_presets
from merge_core.synthetic import tiny_sd1, tiny_sdxl, write_model
from merge_core.families import FAMILIES

POSITION_IDS = "cond_stage_model.transformer.text_model.embeddings.position_ids"
VAE_KEY = "first_stage_model.decoder.conv_out.weight"
U = "model.diffusion_model."
# A cross-section of the real layouts (every kind of key, a few of each) keeps file merges fast.
SMALL = (U + "time_embed.", U + "label_emb.", U + "input_blocks.0.", U + "input_blocks.4.1.transformer_blocks.0.attn1.",
         U + "middle_block.0.", U + "output_blocks.2.", U + "out.",
         "cond_stage_model.transformer.text_model.embeddings.", "cond_stage_model.transformer.text_model.final_layer_norm.",
         "conditioner.embedders.0.transformer.text_model.embeddings.",
         "conditioner.embedders.0.transformer.text_model.final_layer_norm.", "conditioner.embedders.1.model.ln_final.",
         "conditioner.embedders.1.model.text_projection", "conditioner.embedders.1.model.transformer.resblocks.9.mlp.",
         "first_stage_model.encoder.conv_in.", "first_stage_model.decoder.conv_out.", "first_stage_model.quant_conv.",
         "first_stage_model.post_quant_conv.", "alphas_cumprod")


def small_sd1(seed, dtype=torch.float32):
    return {k: v for k, v in tiny_sd1(seed, dtype).items() if k.startswith(SMALL)}


def small_sdxl(seed):
    return {k: v for k, v in tiny_sdxl(seed).items() if k.startswith(SMALL)}


def save(tmp_path, **models):
    paths = {}
    for name, sd in models.items():
        paths[name] = tmp_path / f"{name}.safetensors"
        write_model(sd, paths[name])
    return paths


def run(tmp_path, recipe, out="out.safetensors", vae=None, **options):
    opts = SaveOptions(**options)
    inputs = open_inputs(recipe, base_dir=tmp_path, vae=vae)
    try:
        merge_to_file(recipe, inputs, tmp_path / out, opts)
    finally:
        inputs.close()
    return load_file(tmp_path / out)


def metadata(path):
    with safe_open(path, "pt") as f:
        return f.metadata()


def sha256_of(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def ws(**fields):
    return Recipe(model_a="A.safetensors", model_b="B.safetensors", **fields)


# Names (§10.2, §10.8) ---------------------------------------------------------------------------

def test_file_name_oracle_fp16_inpainting():
    name = file_name("A x (1-alpha) + B x alpha (0.5,0.5)", fp16=True, in_channels=9)
    assert name == "Ax_1-alpha_+Bxalpha_0.5_0.5_.fp16-inpainting.safetensors"


def test_custom_file_name_oracle_ckpt_inpainting():
    assert file_name("custom", ext=".ckpt", in_channels=9, custom=True) == "custom-inpainting.ckpt"


def test_custom_name_that_already_has_the_extension_gets_it_once():
    assert file_name("custom.safetensors", custom=True) == "custom.safetensors"


def test_instruct_pix2pix_and_normal_file_names():
    assert file_name("A x 0.7 + B x 0.3", in_channels=8) == "Ax0.7+Bx0.3-instruct-pix2pix.safetensors"
    assert file_name("A x 0.7 + B x 0.3", in_channels=4) == "Ax0.7+Bx0.3.safetensors"


def test_leading_underscore_is_removed_from_automatic_names():
    assert file_name("(A) x 1") == "A_x1.safetensors"


def test_merge_name_oracles():
    assert merge_name("weight_sum", "normal", "A", "B", "A", 0.3, 0.25) == "A x 0.7 + B x 0.3"
    assert merge_name("add_difference", "trainDifference", "A", "B", "C", 0.5, 0.25) == \
        "A + (B -  C) x 0.5_trainDifference"


def test_merge_name_uses_model_basenames_without_extension():
    assert merge_name("weight_sum", "normal", "/m/A.safetensors", "dir/B.ckpt", "A", 0.3, 0.2) == "A x 0.7 + B x 0.3"


def test_merge_names_of_the_other_modes():
    assert merge_name("triple_sum", "normal", "A", "B", "C", 0.2, 0.3) == "A x 0.5 + B x 0.2 + C x 0.3"
    assert merge_name("sum_twice", "normal", "A", "B", "C", 0.5, 0.25) == "(A x 0.5 +B x 0.5) x 0.75 + C x 0.25"
    assert merge_name("weight_sum", "tensor", "A", "B", "A", 0.5, 0.25) == "A x 0.5 + B x 0.5_tensor_beta_0.25"


def test_mbw_merge_name_contains_the_base_twice():
    assert merge_name("weight_sum", "normal", "A", "B", "A", 0.5, 0.2, "0.5,1,1") == \
        "A x (1-alpha) + B x alpha (0.5,0.5,1,1)"
    assert merge_name("add_difference", "normal", "A", "B", "C", 0.5, 0.2, "0.5,1") == \
        "A + (B - C) x alpha (0.5,0.5,1)"


# fp16 (§10.2) -----------------------------------------------------------------------------------

def test_fp16_converts_model_keys_of_f32_bf16_f64_and_leaves_the_others(tmp_path):
    a, b = small_sd1(1), small_sd1(2)
    for sd in (a, b):
        sd[CONV_IN] = sd[CONV_IN].to(torch.bfloat16)
        sd[VAE_KEY] = sd[VAE_KEY].to(torch.float64)
    save(tmp_path, A=a, B=b)
    plain = run(tmp_path, ws(alpha=0.3), "plain.safetensors")
    half = run(tmp_path, ws(alpha=0.3), "half.safetensors", fp16=True)
    assert half.keys() == plain.keys() == a.keys()
    assert plain[CONV_IN].dtype == torch.bfloat16 and plain[VAE_KEY].dtype == torch.float64
    for k, t in plain.items():
        if "model" in k and t.dtype in (torch.float32, torch.float64, torch.bfloat16):
            assert half[k].dtype == torch.float16, k
            assert torch.equal(half[k], t.to(torch.float16)), k
        else:
            assert half[k].dtype == t.dtype and torch.equal(half[k], t), k
    assert half["alphas_cumprod"].dtype == torch.float32  # no "model" in its name
    assert half[POSITION_IDS].dtype == torch.int64


# prune (§10.2) ----------------------------------------------------------------------------------

def _with_extras(sd):
    sd = dict(sd)
    sd["model_ema.decay"] = torch.tensor(0.9999)
    sd["model_ema.num_updates"] = torch.tensor(1000, dtype=torch.int32)
    sd["model_ema.diffusion_modelinput_blocks00weight"] = torch.zeros(3)
    sd["betas"] = torch.linspace(0.0001, 0.02, 10)
    return sd


def test_prune_keeps_only_unet_vae_and_text_encoder_keys_for_sd1(tmp_path):
    a = _with_extras(small_sd1(1))
    save(tmp_path, A=a, B=small_sd1(2))
    out = run(tmp_path, ws(alpha=0.3), prune=True)
    keep = ("diffusion_model.", "first_stage_model.", "cond_stage_model.")
    assert set(out) == {k for k in a if any(p in k for p in keep)}
    assert "alphas_cumprod" not in out and "model_ema.decay" not in out
    assert "model_ema.diffusion_modelinput_blocks00weight" not in out
    assert POSITION_IDS in out and CONV_IN in out and VAE_KEY in out


def _sdxl_with_sd_text_encoder(seed):
    sd = _with_extras(small_sdxl(seed))
    sd["cond_stage_model.transformer.text_model.final_layer_norm.weight"] = torch.ones(4)
    sd[POSITION_IDS] = torch.arange(77).unsqueeze(0)
    return sd


def test_prune_keeps_conditioner_keys_for_sdxl(tmp_path):
    a = _sdxl_with_sd_text_encoder(1)
    save(tmp_path, A=a, B=small_sdxl(2))
    out = run(tmp_path, ws(alpha=0.3), prune=True)
    keep = ("diffusion_model.", "first_stage_model.", "conditioner.")
    assert set(out) == {k for k in a if any(p in k for p in keep)}
    assert any(k.startswith("conditioner.embedders.1.") for k in out)


def test_sdxl_output_never_holds_cond_stage_model_keys(tmp_path):
    a = _sdxl_with_sd_text_encoder(1)
    b = dict(small_sdxl(2))
    b["cond_stage_model.transformer.text_model.final_layer_norm.bias"] = torch.zeros(4)  # B only: Stage 2 copy
    save(tmp_path, A=a, B=b)
    out = run(tmp_path, ws(alpha=0.3))
    assert not [k for k in out if k.startswith("cond_stage_model.")]
    assert set(out) == {k for k in a if not k.startswith("cond_stage_model.")}


def test_sd1_output_keeps_cond_stage_model_keys(tmp_path):
    a, b = small_sd1(1), small_sd1(2)
    save(tmp_path, A=a, B=b)
    out = run(tmp_path, ws(alpha=0.3))
    assert set(out) == set(a)


# Reset CLIP ids (§10.6) -------------------------------------------------------------------------

def _broken_ids(sd):
    sd = dict(sd)
    sd[POSITION_IDS] = torch.cat([torch.arange(76, dtype=torch.float32), torch.tensor([75.0])]).unsqueeze(0)
    return sd


def test_reset_clip_ids_turns_broken_float_ids_into_int64_0_to_76(tmp_path):
    save(tmp_path, A=_broken_ids(small_sd1(1)), B=small_sd1(2))
    out = run(tmp_path, ws(alpha=0.3), reset_clip_ids=True)
    ids = out[POSITION_IDS]
    assert ids.dtype == torch.int64 and tuple(ids.shape) == (1, 77)
    assert ids.tolist() == [list(range(77))]


def test_without_reset_clip_ids_a_s_ids_are_kept(tmp_path):
    a = _broken_ids(small_sd1(1))
    save(tmp_path, A=a, B=small_sd1(2))
    out = run(tmp_path, ws(alpha=0.3))
    assert out[POSITION_IDS].dtype == torch.float32 and torch.equal(out[POSITION_IDS], a[POSITION_IDS])


def test_reset_clip_ids_with_fp16_stays_int64(tmp_path):
    save(tmp_path, A=_broken_ids(small_sd1(1)), B=small_sd1(2))
    out = run(tmp_path, ws(alpha=0.3), reset_clip_ids=True, fp16=True)
    assert out[POSITION_IDS].dtype == torch.int64 and out[POSITION_IDS].tolist() == [list(range(77))]


# Bake in VAE (§10.7) ----------------------------------------------------------------------------

def _vae(prefixed: bool, value: float = 7.0):
    vae = {}
    for k, v in small_sd1(5).items():
        if k.startswith("first_stage_model."):
            vae[k if prefixed else k[len("first_stage_model."):]] = torch.full_like(v, value)
    return vae


@pytest.mark.parametrize("prefixed", [False, True])
def test_bake_vae_replaces_every_vae_key_and_nothing_else(tmp_path, prefixed):
    save(tmp_path, A=small_sd1(1), B=small_sd1(2))
    vae = _vae(prefixed)
    vae["unrelated.weight"] = torch.ones(2)  # a key the model lacks is not added
    write_model(vae, tmp_path / "vae.safetensors")
    plain = run(tmp_path, ws(alpha=0.3), "plain.safetensors")
    baked = run(tmp_path, ws(alpha=0.3), "baked.safetensors", vae=str(tmp_path / "vae.safetensors"),
                bake_vae=str(tmp_path / "vae.safetensors"))
    assert baked.keys() == plain.keys()
    assert sum(k.startswith("first_stage_model.") for k in plain) == 8
    for k in plain:
        if k.startswith("first_stage_model."):
            assert bool((baked[k] == 7.0).all()), k
        else:
            assert torch.equal(baked[k], plain[k]), k


def test_bake_vae_with_a_partial_vae_replaces_only_its_keys(tmp_path):
    a = small_sd1(1)
    save(tmp_path, A=a, B=small_sd1(2))
    write_model({"decoder.conv_out.weight": torch.full_like(a[VAE_KEY], 3.0)}, tmp_path / "vae.safetensors")
    out = run(tmp_path, ws(alpha=0.0), vae=str(tmp_path / "vae.safetensors"),
              bake_vae=str(tmp_path / "vae.safetensors"))
    assert bool((out[VAE_KEY] == 3.0).all())
    other = "first_stage_model.encoder.conv_in.weight"
    assert torch.equal(out[other], a[other])


def test_bake_vae_shape_mismatch_is_refused_naming_the_key(tmp_path):
    save(tmp_path, A=small_sd1(1), B=small_sd1(2))
    vae = _vae(False)
    vae["decoder.conv_out.weight"] = torch.zeros(3, 5, 3, 3)
    write_model(vae, tmp_path / "vae.safetensors")
    with pytest.raises(MergeError, match="decoder.conv_out.weight"):
        run(tmp_path, ws(alpha=0.3), vae=str(tmp_path / "vae.safetensors"), bake_vae=str(tmp_path / "vae.safetensors"))
    assert not (tmp_path / "out.safetensors").exists()


# Metadata (§10.5) -------------------------------------------------------------------------------

def test_metadata_holds_supermerger_fields_hashes_and_our_recipe(tmp_path):
    paths = save(tmp_path, A=tiny_sd1(1), B=tiny_sd1(2), C=tiny_sd1(3))
    assert paths["A"].stat().st_size > 0x110000  # the legacy hash reads 64 KiB at 1 MiB
    recipe = Recipe(model_a=str(paths["A"]), model_b=str(paths["B"]), model_c=str(paths["C"]),
                    mode="add_difference", alpha=0.4)
    run(tmp_path, recipe)
    meta = metadata(tmp_path / "out.safetensors")
    assert meta["format"] == "pt"
    sm = json.loads(meta["sd_merge_recipe"])
    assert sm["type"] == "sd-webui-supermerger"
    hashes = {r: sha256_of(paths[r]) for r in "ABC"}
    assert (sm["model_a"], sm["model_b"], sm["model_c"]) == (hashes["A"], hashes["B"], hashes["C"])
    assert sm["mode"] == "add_difference" and sm["calcmode"] == "normal" and sm["mbw"] is False
    assert sm["base_alpha"] == 0.4 and sm["weights_alpha"] is None
    models = json.loads(meta["sd_merge_models"])
    assert set(models) == set(hashes.values())
    for r, h in hashes.items():
        assert models[h]["name"] == f"{r}.safetensors"
        data = paths[r].read_bytes()
        assert models[h]["legacy_hash"] == hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8]
    assert Recipe.from_json(meta["supermerger_recipe"]) == recipe


def test_metadata_model_c_is_a_when_no_c_is_used(tmp_path):
    paths = save(tmp_path, A=small_sd1(1), B=small_sd1(2))
    recipe = Recipe(model_a=str(paths["A"]), model_b=str(paths["B"]), alpha=0.3, seed=11)
    run(tmp_path, recipe)
    meta = metadata(tmp_path / "out.safetensors")
    sm = json.loads(meta["sd_merge_recipe"])
    assert sm["model_c"] == sm["model_a"] == sha256_of(paths["A"]) and sm["model_b"] == sha256_of(paths["B"])
    assert Recipe.from_json(meta["supermerger_recipe"]) == recipe


def test_metadata_weights_are_the_parsed_list_without_base(tmp_path):
    save(tmp_path, A=small_sd1(1), B=small_sd1(2))
    run(tmp_path, ws(weights_alpha="GRAD_V"))
    sm = json.loads(metadata(tmp_path / "out.safetensors")["sd_merge_recipe"])
    grad_v = [float(x) for x in load_presets()["GRAD_V"].split(",")]
    assert sm["mbw"] is True and sm["base_alpha"] == grad_v[0] and sm["weights_alpha"] == grad_v[1:]


def test_metadata_weights_on_sdxl_are_the_converted_list(tmp_path):
    save(tmp_path, A=small_sdxl(1), B=small_sdxl(2))
    values = [i / 100 for i in range(26)]
    run(tmp_path, ws(weights_alpha=",".join(map(str, values))))
    sm = json.loads(metadata(tmp_path / "out.safetensors")["sd_merge_recipe"])
    assert sm["weights_alpha"] == FAMILIES["sdxl"].from_sd_list(values)[1:] and len(sm["weights_alpha"]) == 19


def test_no_metadata_option_writes_only_the_format(tmp_path):
    save(tmp_path, A=small_sd1(1), B=small_sd1(2))
    run(tmp_path, ws(alpha=0.3), metadata=False)
    assert metadata(tmp_path / "out.safetensors") == {"format": "pt"}


# Exactness of a saved merge ---------------------------------------------------------------------

def test_a_file_merged_with_alpha_0_equals_model_a_key_for_key(tmp_path):
    a = _broken_ids(_with_extras(tiny_sd1(1)))
    a[CONV_IN] = a[CONV_IN].to(torch.float16)
    save(tmp_path, A=a, B=tiny_sd1(2))
    out = run(tmp_path, ws(alpha=0.0))
    assert set(out) == set(a)
    for k, t in a.items():
        assert out[k].dtype == t.dtype and torch.equal(out[k], t), k


def test_a_file_merged_with_alpha_1_holds_b_for_merged_keys_in_a_s_dtype(tmp_path):
    a, b = small_sd1(1, torch.float16), small_sd1(2)
    save(tmp_path, A=a, B=b)
    out = run(tmp_path, ws(alpha=1.0))
    assert out[CONV_IN].dtype == torch.float16 and torch.equal(out[CONV_IN], b[CONV_IN].to(torch.float16))
    assert torch.equal(out["alphas_cumprod"], a["alphas_cumprod"])


# Automatic names (§10.8) ------------------------------------------------------------------------

def test_out_folder_gets_the_automatic_name(tmp_path):
    save(tmp_path, A=small_sd1(1), B=small_sd1(2))
    out = run_merge(ws(alpha=0.3), tmp_path, SaveOptions(), base_dir=tmp_path, quiet=True)
    assert out == tmp_path / "Ax0.7+Bx0.3.safetensors" and out.is_file()


def test_automatic_name_with_fp16_and_an_inpainting_a(tmp_path):
    a = small_sd1(1)
    a[CONV_IN] = torch.randn(a[CONV_IN].shape[0], 9, 3, 3)
    save(tmp_path, A=a, B=small_sd1(2))
    out = run_merge(ws(alpha=0.3), tmp_path, SaveOptions(fp16=True), base_dir=tmp_path, quiet=True)
    assert out.name == "Ax0.7+Bx0.3.fp16-inpainting.safetensors" and out.is_file()


def test_automatic_name_of_an_mbw_merge(tmp_path):
    save(tmp_path, A=small_sd1(1), B=small_sd1(2))
    out = run_merge(ws(weights_alpha="ALL_B"), tmp_path, SaveOptions(), base_dir=tmp_path, quiet=True)
    expected = "Ax(1-alpha)+Bxalpha(" + ",".join(["1.0"] * 27) + ")"
    for ch in ",()":
        expected = expected.replace(ch, "_")
    assert out.name == expected + ".safetensors"


def test_automatic_name_of_an_add_difference_train_difference_merge(tmp_path):
    save(tmp_path, A=small_sd1(1), B=small_sd1(2), C=small_sd1(3))
    recipe = Recipe(model_a="A.safetensors", model_b="B.safetensors", model_c="C.safetensors",
                    mode="add_difference", calcmode="trainDifference", alpha=0.5)
    out = run_merge(recipe, tmp_path, SaveOptions(), base_dir=tmp_path, quiet=True)
    assert out.name == "A+_B-C_x0.5_trainDifference.safetensors"


# Saving a state dict someone else holds (ComfyUI's model) and the checkpoint merge's VAE option ---------------
def test_save_state_dict_precisions_and_options(tmp_path):
    from merge_core.merge import save_state_dict

    sd = small_sd1(1)
    sd[POSITION_IDS] = torch.arange(77, dtype=torch.float32).reshape(1, 77)
    for precision, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16), ("fp32", torch.float32)):
        out = tmp_path / f"{precision}.safetensors"
        save_state_dict(sd, out, SaveOptions(precision=precision, reset_clip_ids=True), {"format": "pt", "x": "1"})
        got = load_file(out)
        assert got.keys() == sd.keys()
        assert got[POSITION_IDS].dtype == torch.int64 and got[POSITION_IDS].tolist() == [list(range(77))]
        assert got["alphas_cumprod"].dtype == torch.float32  # not a "model" key: kept as it is
        for k, t in sd.items():
            if "model" in k and k != POSITION_IDS:
                assert got[k].dtype == dtype and torch.equal(got[k], t.to(dtype)), k
        with safe_open(out, "pt") as f:
            assert f.metadata() == {"format": "pt", "x": "1"}
    pruned = tmp_path / "pruned.safetensors"
    save_state_dict(sd, pruned, SaveOptions(prune=True))
    assert "alphas_cumprod" not in load_file(pruned)
    with pytest.raises(MergeError, match="exists"):
        save_state_dict(sd, pruned, SaveOptions())
    with pytest.raises(MergeError, match="precision"):
        SaveOptions(precision="fp8")


def test_keep_vae_keeps_a_s_vae_and_merges_the_rest():
    from merge_core import DictSource, Inputs, make_plan, merge_to_dict
    from merge_core.merge import keep_vae

    a, b = small_sd1(1), small_sd1(2)
    inputs = Inputs(DictSource(a, "A"), DictSource(b, "B"))
    recipe = Recipe(model_a="A", model_b="B", alpha=0.5)
    plan = keep_vae(make_plan(recipe, inputs))
    out = merge_to_dict(recipe, inputs, plan=plan).tensors
    assert [k for k in a if k.startswith("first_stage_model.")]
    for k in a:
        if k.startswith("first_stage_model."):
            assert out[k] is a[k]
        elif k.startswith(U) and a[k].is_floating_point():
            assert not torch.equal(out[k], a[k]), k


def test_an_automatic_name_that_exists_gets_the_next_number_before_its_suffixes(tmp_path):
    from merge_core.naming import free_name

    name = "A x 0.7 + B x 0.3"
    first = free_name(tmp_path, name, fp16=True, in_channels=9)
    assert first.name == "Ax0.7+Bx0.3.fp16-inpainting.safetensors"
    first.touch()
    second = free_name(tmp_path, name, fp16=True, in_channels=9)
    assert second.name == "Ax0.7+Bx0.3_2.fp16-inpainting.safetensors"
    second.touch()
    assert free_name(tmp_path, name, fp16=True, in_channels=9).name == "Ax0.7+Bx0.3_3.fp16-inpainting.safetensors"
    assert free_name(tmp_path, "merge_7").name == "merge_7.safetensors"


def test_a_long_automatic_name_is_cut_after_a_whole_value_keeps_its_suffixes_and_a_hash_of_all_of_it():
    weights = ",".join(f"0.{i:03}" for i in range(110))
    name = f"modelA x (1-alpha) + modelB x alpha (0.5,{weights})_cosineA"
    out = file_name(name, fp16=True, in_channels=9, tag="1a2b3c4d", number=2)
    assert len(out) <= 240 and out.endswith("_2.fp16-inpainting.safetensors")
    cut, digest = out[: -len("_2.fp16-inpainting.safetensors")].rsplit("~", 1)
    assert len(digest) == 8 and int(digest, 16) >= 0
    last = cut.rsplit("_", 1)[-1]
    assert last == "" or last.replace(".", "").isdigit() and len(last) == 5  # a whole value: 0.nnn
    other = file_name(name.replace("0.109", "0.999"), fp16=True, in_channels=9, tag="1a2b3c4d", number=2)
    assert other != out and other.rsplit("~", 1)[0] == out.rsplit("~", 1)[0]  # the same cut, another hash


def test_what_the_merge_name_does_not_show_changes_the_file_name():
    from merge_core.merge import name_tag

    plain = Recipe(model_a="a", model_b="b")
    assert name_tag(plain) == ""
    tags = {name_tag(plain.replace(elemental="OUT03:attn2:0.5")), name_tag(plain.replace(elemental="OUT04:attn2:0.5")),
            name_tag(plain.replace(adjust="1,0,0,0,0,0,0,0")), name_tag(plain.replace(
                include_exclude={"mode": "exclude", "blocks": ["OUT03"], "elements": []}))}
    assert len(tags) == 4 and all(len(t) == 8 for t in tags)
    assert file_name("A x 0.7 + B x 0.3", tag="0badcafe") == "Ax0.7+Bx0.3_0badcafe.safetensors"
