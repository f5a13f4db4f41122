"""LoRA extraction from two models (SPEC §13.9): tiny random SD1/SDXL models with the real key names."""
import hashlib
import json

import pytest
import torch

from helpers import assert_unchanged, snapshot
from merge_core import FAMILIES, DictSource, MergeError, MergeInterrupted, RunContext
from merge_core.lora import extract, names
from merge_core.lora.bake import patched_weight, plan_patches
from merge_core.lora.decompose import clamp_factors
from merge_core.lora.extract import ExtractOptions, extract_lora
from merge_core.lora.files import LoraFile
from merge_core.run import Threads
from merge_core.sources import open_model
from merge_core.synthetic import write_model

UNET = "model.diffusion_model."


def low_rank_changes(base: dict, family: str, rank: int, seed: int = 7, conv3x3: bool = False,
                     unet_only: bool = False) -> tuple:
    """A copy of `base` whose extraction targets changed by random rank-`rank` differences, and the
    differences (module → ΔW)."""
    g = torch.Generator().manual_seed(seed)
    tuned, deltas = dict(base), {}
    for key, w in base.items():
        if not names.is_target(key, family, conv3x3) or (unet_only and not key.startswith(UNET)):
            continue
        fused = names.fused_modules(key, family)
        parts = list(enumerate(fused)) if fused else [(None, names.module_name(key, family))]
        new = w.float().clone()
        for part, module in parts:
            rows = w.shape[0] // 3 if part is not None else w.shape[0]
            r = min(rank, rows, w.shape[1])
            d = (torch.randn(rows, r, generator=g) @ torch.randn(r, w[0].numel(), generator=g)) * 0.05
            d = d.reshape(rows, *w.shape[1:])
            lo = 0 if part is None else part * rows
            new[lo:lo + rows] += d
            deltas[module] = d
        tuned[key] = new.to(w.dtype)
    return tuned, deltas


def product(tensors: dict, module: str) -> torch.Tensor:
    up = tensors[module + ".lora_up.weight"].float()
    down = tensors[module + ".lora_down.weight"].float()
    scale = float(tensors[module + ".alpha"]) / down.shape[0]
    return (up.reshape(up.shape[0], -1) @ down.reshape(down.shape[0], -1)).reshape(up.shape[0], *down.shape[1:]) * scale


def run(a: dict, b: dict, **options) -> extract.Extraction:
    return extract_lora(DictSource(a, "A"), DictSource(b, "B"), ExtractOptions(**options))


@pytest.mark.parametrize("which", ["sd1", "sdxl"])
def test_a_rank_r_difference_is_recovered(which, sd1, sdxl):
    base = (sd1 if which == "sd1" else sdxl)[0]
    tuned, deltas = low_rank_changes(base, which, rank=3)
    result = run(tuned, base, rank=3, clamp=None, save_dtype=torch.float32)
    assert result.text_encoder and {t.module for t in result.targets} == set(deltas)
    for module, d in deltas.items():
        got = product(result.tensors, module)
        assert got.shape == d.shape
        assert torch.linalg.norm(got - d) / torch.linalg.norm(d) < 1e-4, module


def test_the_lora_baked_into_b_gives_a_back(sdxl):
    # an independent path back: merge_core.lora.bake maps module names to checkpoint keys on its own
    base = sdxl[0]
    tuned, _ = low_rank_changes(base, "sdxl", rank=2)
    result = run(tuned, base, rank=2, clamp=None, save_dtype=torch.float32)
    lora = LoraFile.from_dict(result.tensors, "extracted")
    patches, notes = plan_patches(set(base), [(lora, [1.0] * 26)], "sdxl")
    assert not notes and set(patches) == {k for k in base if names.is_target(k, "sdxl")}
    for key, plist in patches.items():
        baked = patched_weight(key, base[key], plist)
        assert torch.allclose(baked, tuned[key], atol=1e-5), key


def test_a_versus_a_gives_zero_ups_and_drops_the_text_encoder(sd1, sdxl):
    for family, a in (("sd1", sd1[0]), ("sdxl", sdxl[0])):
        result = run(a, a, rank=4)
        assert not result.text_encoder and result.text_encoder_change == 0.0
        assert not any(t.text_encoder for t in result.targets)
        assert not any(k.startswith("lora_te") for k in result.tensors)
        ups = [k for k in result.tensors if k.endswith("lora_up.weight")]
        assert len(ups) == len(result.targets) > 0
        assert all(torch.count_nonzero(result.tensors[k]) == 0 for k in ups), family
        assert any("text encoder did not change" in n for n in result.notes)


def test_text_encoder_kept_only_when_some_module_changed_by_more_than_0_1(sd1):
    a = sd1[0]
    b = dict(a)
    key = "cond_stage_model.transformer.text_model.encoder.layers.1.mlp.fc2.weight"
    for step, kept in ((0.1, False), (0.1001, True)):
        w = a[key].clone()
        w[0, 0] += step
        b[key] = w
        result = run(b, a, rank=2)
        assert result.text_encoder is kept
        assert any(k.startswith("lora_te_text_model_encoder_layers_1_mlp_fc2") for k in result.tensors) is kept
    assert len([t for t in result.targets if t.text_encoder]) == 12  # 2 layers × q, k, v, out, fc1, fc2


def test_kohya_module_counts_names_shapes_and_alphas(sd1, sdxl):
    r1 = run(sd1[1], sd1[0], rank=4)
    unet = [t for t in r1.targets if not t.text_encoder]
    assert len(unet) == 192  # SD1.5's U-Net: 16 transformers
    t = r1.tensors
    m = "lora_unet_down_blocks_0_attentions_0_proj_in"  # a 1×1 conv
    assert t[m + ".lora_up.weight"].shape == (8, 4, 1, 1) and t[m + ".lora_down.weight"].shape == (4, 8, 1, 1)
    assert t[m + ".alpha"].shape == () and float(t[m + ".alpha"]) == 4.0
    assert all(v.dtype == torch.float16 for v in t.values())
    r2 = run(sdxl[1], sdxl[0], rank=40)
    assert len([x for x in r2.targets if not x.text_encoder]) == 722  # SDXL's kohya U-Net modules
    m = "lora_unet_input_blocks_4_1_proj_in"  # linear in SDXL, 16 channels at this width: rank capped
    assert r2.tensors[m + ".lora_up.weight"].shape == (16, 16) and float(r2.tensors[m + ".alpha"]) == 16
    te2 = [x.module for x in r2.targets if x.module.startswith("lora_te2_")]
    assert len(te2) == 60 and "lora_te2_text_model_encoder_layers_0_self_attn_k_proj" in te2


def test_open_clip_q_k_v_are_the_thirds_of_in_proj(sdxl):
    base = sdxl[0]
    key = "conditioner.embedders.1.model.transformer.resblocks.3.attn.in_proj_weight"
    tuned = dict(base)
    w = base[key].clone()
    third = w.shape[0] // 3
    w[third:2 * third] += 0.5 * torch.outer(torch.ones(third), torch.linspace(-1, 1, w.shape[1]))  # k only
    tuned[key] = w
    result = run(tuned, base, rank=2, clamp=None, save_dtype=torch.float32)
    pre = "lora_te2_text_model_encoder_layers_3_self_attn_"
    assert torch.allclose(product(result.tensors, pre + "k_proj"), w[third:2 * third] - base[key][third:2 * third],
                          atol=1e-5)
    assert torch.count_nonzero(result.tensors[pre + "q_proj.lora_up.weight"]) == 0
    assert torch.count_nonzero(result.tensors[pre + "v_proj.lora_up.weight"]) == 0


def test_alpha_and_beta_scale_the_two_models(sd1):
    a, b = sd1[1], sd1[0]
    result = run(a, b, rank=8, alpha=0.5, beta=2.0, clamp=None, save_dtype=torch.float32)
    key = UNET + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
    module = names.module_name(key, "sd1")
    want = 0.5 * a[key] - 2.0 * b[key]
    assert torch.allclose(product(result.tensors, module), want, atol=1e-5)  # rank 8 = full rank here


def test_factors_are_kohyas_truncated_svd_clamped_at_the_quantile():
    g = torch.Generator().manual_seed(1)  # distinct singular values, so the 16 directions are well defined
    spread = torch.logspace(0, -2, 40)
    delta = (torch.randn(300, 40, generator=g) * spread) @ torch.randn(40, 240, generator=g) * 0.01
    up, down = extract.factors(delta, 16)
    u, s, vh = torch.linalg.svd(delta)  # what kohya computes
    ref_up, ref_down = u[:, :16] @ torch.diag(s[:16]), vh[:16]
    dist = torch.cat([ref_up.flatten(), ref_down.flatten()])
    hi = torch.quantile(dist, 0.99)
    assert torch.allclose(hi, extract_quantile(up, down), rtol=0.05)
    assert float(up.abs().max()) <= float(hi) * 1.05 and float(down.abs().max()) <= float(hi) * 1.05
    # the product is the kohya product up to the clamp's effect on directions it chose differently
    ref = ref_up.clamp(-hi, hi) @ ref_down.clamp(-hi, hi)
    assert torch.linalg.norm(up @ down - ref) / torch.linalg.norm(ref) < 0.05


def extract_quantile(up, down):
    return torch.quantile(torch.cat([up.flatten(), down.flatten()]).float(), 0.99)


def test_clamp_is_the_shared_kohya_clamp():
    g = torch.Generator().manual_seed(2)
    delta = torch.randn(40, 30, generator=g)
    up, down = extract.factors(delta, 5)
    raw_up, raw_down = extract.factors(delta, 5, clamp=None)
    c_up, c_down = clamp_factors(raw_up, raw_down)
    assert torch.equal(up, c_up) and torch.equal(down, c_down)
    assert not torch.equal(up, raw_up)


def test_conv_rank_adds_kohya_locon_modules(sd1):
    a, b = sd1[1], sd1[0]
    plain = run(a, b, rank=4)
    locon = run(a, b, rank=4, conv_rank=2)
    extra = {t.module for t in locon.targets} - {t.module for t in plain.targets}
    t = locon.tensors
    conv = "lora_unet_down_blocks_0_resnets_0_conv1"  # a 3×3 conv at the conv rank
    assert conv in extra and t[conv + ".lora_down.weight"].shape == (2, 8, 3, 3)
    assert t[conv + ".lora_up.weight"].shape == (8, 2, 1, 1) and float(t[conv + ".alpha"]) == 2
    emb = "lora_unet_down_blocks_0_resnets_0_time_emb_proj"  # a linear in a ResBlock: the linear rank
    assert emb in extra and t[emb + ".lora_down.weight"].shape[0] == 4
    assert "lora_unet_down_blocks_0_downsamplers_0_conv" in extra
    assert "lora_unet_conv_in" not in extra and not any("norm" in m for m in extra)
    assert json.loads(locon.metadata["ss_network_args"]) == {"conv_dim": 2, "conv_alpha": 2}
    assert json.loads(plain.metadata["ss_network_args"]) == {}


def test_a_3x3_conv_difference_of_low_rank_is_recovered_with_conv_rank(sd1):
    base = sd1[0]
    tuned, deltas = low_rank_changes(base, "sd1", rank=2, conv3x3=True, unet_only=True)
    result = run(tuned, base, rank=2, conv_rank=2, clamp=None, save_dtype=torch.float32)
    module = "lora_unet_up_blocks_1_resnets_2_conv2"
    d = deltas[module]
    assert d.ndim == 4 and d.shape[2:] == (3, 3)
    assert torch.linalg.norm(product(result.tensors, module) - d) / torch.linalg.norm(d) < 1e-4


def test_metadata_names_the_base_model_and_epsilon_for_sd1(sd1, sdxl):
    meta = run(sd1[1], sd1[0], rank=4).metadata
    assert meta["ss_base_model_version"] == "sd_v1" and meta["modelspec.prediction_type"] == "epsilon"
    assert meta["modelspec.architecture"] == "stable-diffusion-v1/lora" and meta["ss_v2"] == "False"
    assert meta["ss_network_module"] == "networks.lora"
    assert meta["ss_network_dim"] == meta["ss_network_alpha"] == "4"
    assert meta["modelspec.resolution"] == "512x512" and meta["modelspec.title"] == "lora_A-B"
    assert json.loads(meta["supermerger_lora_extract"]) == {"model_a": "A", "model_b": "B", "alpha": 1.0,
                                                             "beta": 1.0, "rank": 4, "conv_rank": 0}
    xl = run(sdxl[1], sdxl[0], rank=4).metadata
    assert xl["ss_base_model_version"] == "sdxl_base_v1-0" and xl["modelspec.prediction_type"] == "epsilon"
    assert xl["modelspec.architecture"] == "stable-diffusion-xl-v1-base/lora"
    assert xl["modelspec.resolution"] == "1024x1024"


def test_sd2_metadata_follows_the_prediction_type():
    fam = FAMILIES["sd2"]
    for v, version, pred in ((True, "sd_v2_v", "v"), (False, "sd_v2", "epsilon")):
        meta = extract.extraction_metadata(fam, ExtractOptions(rank=8, v_prediction=v), "t", {})
        assert meta["ss_base_model_version"] == version and meta["modelspec.prediction_type"] == pred
        assert meta["ss_v2"] == "True"


def test_inputs_are_not_modified(sd1):
    a, b = sd1[1], sd1[0]
    before_a, before_b = snapshot(a), snapshot(b)
    run(a, b, rank=4)
    assert_unchanged(before_a, a)
    assert_unchanged(before_b, b)


def test_written_file_matches_the_dict_and_reads_as_a_lora(tmp_path, sd1):
    a, b = sd1[1], sd1[0]
    out = tmp_path / "x.safetensors"
    result = extract_lora(DictSource(a, "A"), DictSource(b, "B"), ExtractOptions(rank=4), out=out)
    in_memory = run(a, b, rank=4).tensors
    with open_model(out) as f:
        assert f.keys() == list(in_memory)
        assert all(torch.equal(f.get(k), v) for k, v in in_memory.items())
        meta = f.metadata()
    assert meta["modelspec.title"] == "x" and meta["ss_base_model_version"] == "sd_v1"
    assert result.path == out
    with LoraFile.open(out) as lora:
        assert set(lora.modules) == {t.module for t in result.targets} and lora.kinds == {"lora"}


def test_existing_file_needs_overwrite_and_interrupt_leaves_nothing(tmp_path, sd1):
    a, b = DictSource(sd1[1], "A"), DictSource(sd1[0], "B")
    out = tmp_path / "x.safetensors"
    out.write_bytes(b"keep me")
    with pytest.raises(MergeError, match="already exists"):
        extract_lora(a, b, ExtractOptions(rank=2), out=out)
    assert out.read_bytes() == b"keep me"
    calls = []
    with pytest.raises(MergeInterrupted):
        extract_lora(a, b, ExtractOptions(rank=2), out=out, overwrite=True,
                     run=RunContext(cancel=lambda: len(calls) > 50 or calls.append(1)))
    assert out.read_bytes() == b"keep me" and list(tmp_path.iterdir()) == [out]
    extract_lora(a, b, ExtractOptions(rank=2), out=out, overwrite=True)
    with open_model(out) as f:
        assert f.keys()


def test_streams_from_memory_mapped_files(tmp_path, sd1):
    write_model(sd1[1], tmp_path / "a.safetensors")
    write_model(sd1[0], tmp_path / "b.safetensors")
    with open_model(tmp_path / "a.safetensors") as a, open_model(tmp_path / "b.safetensors") as b:
        from_files = extract_lora(a, b, ExtractOptions(rank=4)).tensors
    from_dicts = run(sd1[1], sd1[0], rank=4).tensors
    assert from_files.keys() == from_dicts.keys()
    assert all(torch.equal(from_files[k], from_dicts[k]) for k in from_dicts)


@pytest.mark.parametrize("workers", [2, 3])
def test_layers_factorised_side_by_side_give_the_same_file(sd1, workers):
    def extracted(n):
        run = RunContext(threads=Threads(cores=3, workers=n, intra=1))
        return extract_lora(DictSource(sd1[1], "A"), DictSource(sd1[0], "B"), ExtractOptions(rank=4), run=run).tensors

    one, many = extracted(1), extracted(workers)
    assert list(one) == list(many) and all(torch.equal(one[k], many[k]) for k in one)


def test_clear_errors_for_bad_inputs(sd1, sdxl):
    with pytest.raises(MergeError, match="different families"):
        run(sd1[0], sdxl[0])
    b = dict(sd1[0])
    key = UNET + "middle_block.1.proj_in.weight"
    b[key] = torch.zeros(3, 3, 1, 1)
    with pytest.raises(MergeError, match="model B.*proj_in.weight has shape"):
        run(sd1[1], b)
    with pytest.raises(MergeError, match="rank"):
        run(sd1[1], sd1[0], rank=0)
    with pytest.raises(MergeError, match="conv_rank"):
        run(sd1[1], sd1[0], conv_rank=-1)


def test_model_b_without_text_encoder_gives_a_unet_lora(sd1):
    b = {k: v for k, v in sd1[0].items() if k.startswith(UNET)}
    result = run(sd1[1], b, rank=2)
    assert not result.text_encoder and any("model B has no text encoder" in n for n in result.notes)


def test_other_unet_layouts_get_ldm_names():
    from merge_core.synthetic import UNetConfig, random_state_dict, unet_layout

    # one ResBlock per level, as the host's mini SD1.5: kohya's diffusers arithmetic would misname it
    cfg = UNetConfig(channels=8, mult=(1, 2), res_blocks=1, depth=(1, 1), mid_depth=1, context=19,
                     linear_proj=False)
    a = random_state_dict(unet_layout(cfg), 1, torch.float32, extras=False)
    b = random_state_dict(unet_layout(cfg), 2, torch.float32, extras=False)
    result = run(a, b, rank=2)
    assert "lora_unet_input_blocks_3_1_proj_in.lora_up.weight" in result.tensors
    assert any("LDM" in n for n in result.notes)
    assert not any("input_blocks" in k for k in run(a, b, rank=2, style="kohya").tensors)


def _kohya_hashes(path, tmp_path) -> dict:
    """The two hashes as kohya's writer computes them for a file: sha256 of everything after the header,
    and the old web-ui hash (64 KiB at 1 MiB) of the same tensors written with only the ss_* metadata."""
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    with open_model(path) as f:
        tensors = {k: f.get(k).clone() for k in f.keys()}  # copies: the file's map closes with it
        ss_only = {k: v for k, v in f.metadata().items() if k.startswith("ss_")}
    from merge_core.lora.files import save_lora

    save_lora(tensors, tmp_path / "ss_only.safetensors", ss_only, overwrite=True)
    ss = (tmp_path / "ss_only.safetensors").read_bytes()
    return {"sshs_model_hash": hashlib.sha256(raw[8 + n:]).hexdigest(),
            "sshs_legacy_hash": hashlib.sha256(ss[0x100000:0x110000]).hexdigest()[:8]}


def test_extracted_file_carries_the_hashes_lora_info_computes(tmp_path, sd1, capsys):
    from merge_core.cli import main
    from merge_core.lora.metadata import file_hashes

    out = tmp_path / "x.safetensors"
    # float32 with 3×3 convs: 1.8 MB, so the legacy hash's window (64 KiB at 1 MiB) holds tensor bytes
    result = extract_lora(DictSource(sd1[1], "A"), DictSource(sd1[0], "B"),
                          ExtractOptions(save_dtype=torch.float32, conv_rank=8), out=out)
    assert out.stat().st_size > 0x110000
    with open_model(out) as f:
        meta = f.metadata()
    expect = _kohya_hashes(out, tmp_path)
    assert {k: meta[k] for k in expect} == expect == file_hashes(out)
    assert result.metadata == meta  # what the caller is told is what the file says
    assert expect["sshs_legacy_hash"] != hashlib.sha256(b"").hexdigest()[:8]
    assert main(["lora", "info", str(out)]) == 0
    line = capsys.readouterr().out
    assert f"sshs_model_hash {expect['sshs_model_hash']}\tsshs_legacy_hash {expect['sshs_legacy_hash']}" in line
    assert "file says" not in line
    with LoraFile.open(out) as lora:  # the rewritten header still reads as the LoRA it is
        assert lora.kinds == {"lora"} and set(lora.modules) == {t.module for t in result.targets}


def test_in_memory_extraction_has_the_hashes_its_file_would_have(tmp_path, sd1):
    result = run(sd1[1], sd1[0], rank=4)
    out = tmp_path / "x.safetensors"
    extract_lora(DictSource(sd1[1], "A"), DictSource(sd1[0], "B"), ExtractOptions(rank=4), out=out)
    with open_model(out) as f:
        meta = f.metadata()
    assert all(result.metadata[k] == meta[k] for k in ("sshs_model_hash", "sshs_legacy_hash"))


def test_lora_info_marks_hashes_the_file_gets_wrong(tmp_path, sd1, capsys):
    from merge_core.cli import main
    from merge_core.lora.files import save_lora

    result = run(sd1[1], sd1[0], rank=4)
    save_lora(result.tensors, tmp_path / "bad.safetensors", {**result.metadata, "sshs_model_hash": "f" * 64})
    assert main(["lora", "info", str(tmp_path / "bad.safetensors")]) == 0
    assert f"(file says {'f' * 64})" in capsys.readouterr().out


def test_modelspec_implementation_per_family(sd1, sdxl):
    stability = "https://github.com/Stability-AI/generative-models"
    assert run(sd1[1], sd1[0], rank=4).metadata["modelspec.implementation"] == "diffusers"  # kohya: v1/v2 LoRA
    assert run(sdxl[1], sdxl[0], rank=4).metadata["modelspec.implementation"] == stability
    sd2 = extract.extraction_metadata(FAMILIES["sd2"], ExtractOptions(rank=8, v_prediction=True), "t", {})
    assert sd2["modelspec.implementation"] == "diffusers"
    ldm = run(sd1[1], sd1[0], rank=4, style="ldm")  # named by checkpoint paths: Stability's layout
    assert ldm.metadata["modelspec.implementation"] == stability
