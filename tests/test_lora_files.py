"""Reading LoRA files, type/rank/version (SPEC §13.11), merged-file metadata and hashes (§13.10)."""
import hashlib
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from merge_core import MergeError
from merge_core.lora import metadata as meta
from merge_core.lora.files import LoraFile, detect_family, info, save_lora, split_key
from merge_core.lora.merge import default_name, merge_to_file
from merge_core.lora.synthetic import random_lora
from merge_core.lora.syntax import parse_list
from merge_core.synthetic import sd1_layout, sdxl_layout, write_model

SD1 = sd1_layout(scale=1 / 40, text_layers=2, vocab=64)
XL = sdxl_layout(scale=1 / 40, text_layers=(2, 3), vocab=64)


def test_split_key_forms():
    assert split_key("lora_unet_a_b.lora_down.weight") == ("lora_unet_a_b", "lora_down.weight")
    assert split_key("m.hada_w1_a") == ("m", "hada_w1_a")
    assert split_key("m.lokr_w1_a") == ("m", "lokr_w1_a")
    assert split_key("m.diff_b") == ("m", "diff_b")
    assert split_key("m.alpha") == ("m", "alpha")
    assert split_key("something_else") is None


@pytest.mark.parametrize("kw,ltype,dim", [
    ({}, "LoRA", 4),
    ({"conv3x3": True}, "LoCon", 4),
    ({"kind": "loha"}, "LyCORIS", "LyCORIS"),
    ({"kind": "lokr"}, "LyCORIS", "LyCORIS"),
])
def test_type_and_dim(kw, ltype, dim):
    i = info(LoraFile.from_dict(random_lora(SD1, "sd1", 4, 1, **kw), "x"))
    assert (i.type, i.dim, i.version, i.family) == (ltype, dim, "1.X/2.X", "sd1")


def test_versions_and_label():
    xl = info(LoraFile.from_dict(random_lora(XL, "sdxl", 8, 1), "xl"))
    assert (xl.version, xl.family, xl.dim) == ("XL", "sdxl", 8)
    assert xl.label() == "xl[8,XL]"
    sd1 = info(LoraFile.from_dict(random_lora(SD1, "sd1", 4, 1), "s"))
    assert sd1.label() == "s[4]"
    flux = LoraFile.from_dict({"lora_unet_single_blocks_0_linear1.lora_down.weight": torch.zeros(2, 8),
                               "lora_unet_single_blocks_0_linear1.lora_up.weight": torch.zeros(8, 2)}, "f")
    assert info(flux).version == "Flux"
    empty = info(LoraFile.from_dict({"foo": torch.zeros(1)}, "e"))
    assert (empty.type, empty.dim) == ("unknown", "unknown")


def test_mixed_ranks_list_and_missing_alpha():
    sd = random_lora(SD1, "sd1", 4, 1, only="mlp_fc1") | random_lora(SD1, "sd1", 2, 2, only="attn1_to_q")
    sd = {k: v for k, v in sd.items() if "mlp_fc1.alpha" not in k}
    i = info(LoraFile.from_dict(sd, "m"))
    assert i.ranks == (2, 4) and i.dim == [2, 4] and i.alphas == (2.0, 4.0)


def test_family_from_context_width():
    def one(width):
        return LoraFile.from_dict({
            "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight":
                torch.zeros(4, width),
            "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k.lora_up.weight":
                torch.zeros(640, 4)}, "w")
    assert [detect_family(one(w)) for w in (768, 1024, 2048)] == ["sd1", "sd2", "sdxl"]


def test_ckpt_lora_is_read_safely(tmp_path):
    sd = random_lora(SD1, "sd1", 2, 1, only="mlp_fc1")
    torch.save(sd, tmp_path / "old.pt")
    with LoraFile.open(tmp_path / "old.pt") as lf:
        assert info(lf).type == "LoRA" and lf.name == "old"

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))
    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(MergeError, match="pickled objects"):
        LoraFile.open(tmp_path / "evil.pt")


def test_mixed_kinds_in_one_module_are_refused():
    with pytest.raises(MergeError, match="mixes"):
        LoraFile.from_dict({"m.lora_up.weight": torch.zeros(1), "m.hada_w1_a": torch.zeros(1)}, "x")


# Metadata (§13.10) -------------------------------------------------------------------------------

FIRST = {"ss_network_module": "networks.lora", "ss_network_dim": "4", "ss_network_alpha": "4",
         "ss_v2": "False", "ss_base_model_version": "sd_v1", "ss_sd_model_name": "base.ckpt",
         "ss_tag_frequency": json.dumps({"set_a": {"girl": 3}}), "ss_training_comment": "hi",
         "modelspec.title": "first"}
SECOND = {"ss_network_module": "lycoris.kohya", "ss_tag_frequency": json.dumps({"set_b": {"boy": 1}})}


def inputs_meta():
    a, b = parse_list("first:0.5,second:1:OUTS")
    return [meta.input_metadata(FIRST, a), meta.input_metadata(SECOND, b)]


def test_input_metadata_records_ratio_blocks_and_name():
    m = inputs_meta()[1]
    assert m["sshs_ratio"] == "1" and m["ss_output_name"] == "second"
    assert m["sshs_blocks"].split(",")[0] == "1.0" and len(m["sshs_blocks"].split(",")) == 26


def test_create_new_keeps_minimum_and_adds_output_name_and_precision():
    m = meta.merged_metadata(inputs_meta(), "create new", "out", "fp16", "sd1")
    for k in meta.MINIMUM:
        assert m[k] == FIRST[k]
    assert m["ss_output_name"] == "out" and m["ss_mixed_precision"] == "fp16"
    assert "ss_tag_frequency" not in m and "ss_training_comment" not in m and "sshs_ratio" not in m
    assert m["modelspec.title"] == "out" and m["modelspec.prediction_type"] == "epsilon"
    without = meta.merged_metadata(inputs_meta(), "create new without output_name", "out", "bf16", "sd1")
    assert "ss_output_name" not in without and without["ss_mixed_precision"] == "bf16"


def test_merge_and_save_all_keep_every_input_and_merge_unions_tags():
    for mode in ("merge", "save all"):
        m = meta.merged_metadata(inputs_meta(), mode, "out", "fp16", "sd1")
        assert json.loads(m["sshs_cp1"])["ss_output_name"] == "second"
        assert json.loads(m["sshs_cp0"])["sshs_ratio"] == "0.5"
        assert m["ss_network_module"] == "networks.lora" and m["ss_training_comment"] == "hi"
        tags = json.loads(m["ss_tag_frequency"])
        assert ("set_b" in tags) == (mode == "merge") and "set_a" in tags


def test_use_first_and_redecomposed_rank():
    m = meta.merged_metadata(inputs_meta(), "use first lora", "out", "fp16", "sd1", rank=16)
    assert m["ss_tag_frequency"] == FIRST["ss_tag_frequency"] and m["sshs_ratio"] == "0.5"
    assert m["ss_network_dim"] == m["ss_network_alpha"] == "16" and m["modelspec.title"] == "first"


def test_sdxl_and_sd1_standard_fields():
    sd1 = meta.standard_metadata("sd1", "t", 8)
    assert sd1["ss_base_model_version"] == "sd_v1" and sd1["modelspec.prediction_type"] == "epsilon"
    assert sd1["ss_network_dim"] == sd1["ss_network_alpha"] == "8"
    assert sd1["modelspec.implementation"] == "diffusers"  # kohya: SD1/SD2 LoRAs use diffusers names
    xl = meta.standard_metadata("sdxl", "t")
    assert xl["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"
    assert xl["modelspec.implementation"] == "https://github.com/Stability-AI/generative-models"
    v2 = meta.standard_metadata("sd2", "t", v_prediction=True)
    assert v2["modelspec.prediction_type"] == "v" and v2["ss_v2"] == "True"
    assert "modelspec.prediction_type" not in meta.standard_metadata("sd2", "t")


def test_header_helper_matches_the_writer(tmp_path):
    tensors = {"a": torch.ones(3, dtype=torch.float16), "b": torch.zeros(2, 2), "c": torch.tensor(1.0)}
    m = {"ss_x": "é", "k": "v"}
    save_lora(tensors, tmp_path / "t.safetensors", m)
    raw = (tmp_path / "t.safetensors").read_bytes()
    head = meta.safetensors_header([(k, t.dtype, tuple(t.shape)) for k, t in tensors.items()], m)
    assert raw[:len(head)] == head


def test_hashes_are_those_of_the_written_file(tmp_path):
    # big enough for the legacy window (64 KiB at 1 MiB) to hold tensor bytes
    g = torch.Generator().manual_seed(0)
    tensors = {f"m{i}.lora_down.weight": torch.randn(64, 1024, generator=g) for i in range(5)}
    m = {"ss_output_name": "x", "other": "kept"}
    hashed = meta.with_hashes(m, tensors)
    save_lora(tensors, tmp_path / "full.safetensors", hashed)
    raw = (tmp_path / "full.safetensors").read_bytes()
    n = int.from_bytes(raw[:8], "little")
    assert hashed["sshs_model_hash"] == hashlib.sha256(raw[8 + n:]).hexdigest()
    save_lora(tensors, tmp_path / "ss.safetensors", {"ss_output_name": "x"})
    ss = (tmp_path / "ss.safetensors").read_bytes()
    assert hashed["sshs_legacy_hash"] == hashlib.sha256(ss[0x100000:0x110000]).hexdigest()[:8]
    assert hashed["other"] == "kept"


def test_merge_to_file_end_to_end(tmp_path):
    a = random_lora(SD1, "sd1", 4, 1)
    save_file(a, tmp_path / "a.safetensors", FIRST)
    save_file(random_lora(SD1, "sd1", 4, 2), tmp_path / "b.safetensors")
    entries = parse_list("a:1,b:-0.5:OUTS")
    inputs = [(LoraFile.open(tmp_path / f"{e.name}.safetensors"), e) for e in entries]
    out = tmp_path / f"{default_name('a:1,b:-0.5:OUTS')}.safetensors"
    assert out.name == "a_1+b_-0.5_OUTS.safetensors"
    path, merged = merge_to_file(inputs, out, "no", metadata_mode="save all", precision="bf16")
    loaded = load_file(path)
    assert all(t.dtype == torch.bfloat16 for t in loaded.values())
    assert set(loaded) == set(a)
    with LoraFile.open(path) as lf:
        m = lf.metadata()
    assert m["ss_output_name"] == out.stem and m["ss_mixed_precision"] == "bf16"
    assert json.loads(m["sshs_cp1"])["sshs_ratio"] == "-0.5"
    with pytest.raises(MergeError, match="already exists"):
        merge_to_file(inputs, out)
    path2, merged2 = merge_to_file(inputs, out, 2, overwrite=True)
    assert merged2.rank == 2 and LoraFile.open(path2).metadata()["ss_network_dim"] == "2"
    with pytest.raises(MergeError, match="metadata"):
        merge_to_file(inputs, tmp_path / "z.safetensors", metadata_mode="bogus")
    with pytest.raises(MergeError, match="save precision"):
        merge_to_file(inputs, tmp_path / "z.safetensors", precision="fp8")


def test_models_are_not_loras(tmp_path):
    write_model({"model.diffusion_model.out.2.weight": torch.zeros(1)}, tmp_path / "m.safetensors")
    with LoraFile.open(tmp_path / "m.safetensors") as lf:
        assert not lf.modules and lf.unknown


def test_a_file_without_lora_modules_is_refused_by_merge_and_bake(tmp_path):
    from merge_core.lora.bake import plan_patches
    from merge_core.lora.merge import merge_loras

    empty = LoraFile.from_dict({"model.diffusion_model.out.2.weight": torch.zeros(1)}, "ckpt")
    (e,) = parse_list("ckpt:1")
    with pytest.raises(MergeError, match="ckpt holds no LoRA modules"):
        merge_loras([(empty, e)])
    with pytest.raises(MergeError, match="ckpt holds no LoRA modules"):
        plan_patches({"model.diffusion_model.out.2.weight"}, [(empty, e.weights)], "sd1")
