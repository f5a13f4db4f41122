"""The LoRA extraction nodes in a real ComfyUI. See conftest.py for how to run them.

The round trip needs a model B that a LoRA can represent exactly: kohya's extraction covers only the
transformer linears and 1×1 convs (and the text encoder's linears), so a LoRA extracted from two unrelated
random models could never turn one into the other. `tuned` below is a copy of the harness's mini_a in
which exactly those layers changed, each by a random difference of rank 4 — below the extraction rank 8 —
so the LoRA (tuned − mini_a) applied to mini_a at strength 1 must give tuned's picture back, up to fp16
storage and kohya's 0.99-quantile clamp of the factors.
"""
import sys

import numpy as np
import pytest
import torch

from comfy_host import ROOT, ExecutionFailed, build_checkpoint, graph

sys.path.insert(0, str(ROOT))
from merge_core.lora import names  # noqa: E402
from merge_core.lora.metadata import file_hashes  # noqa: E402
from merge_core.sources import SafetensorsFile  # noqa: E402
from merge_core.writer import SafetensorsWriter  # noqa: E402

TUNED = "sm_extract_tuned"
NODE_IDS = ("SuperMergerLoraExtract", "SuperMergerLoraExtractTwo")
CHOSEN_NONE = {"lora_1": "(none)", "ratio_1": 1.0, "blocks_1": "", "lora_2": "(none)", "ratio_2": 1.0, "blocks_2": ""}


def _tuned_copy(src_path, out_path, rank: int = 4, scale: float = 0.5, seed: int = 11) -> int:
    """Write mini_a with every kohya extraction target changed by a rank-`rank` difference whose entries are
    about `scale` × the weight's own spread. Returns the number of changed tensors."""
    g = torch.Generator().manual_seed(seed)
    changed = 0
    with SafetensorsFile(src_path) as src:
        entries = [(k, src.dtype(k), src.shape(k)) for k in src.keys()]
        with SafetensorsWriter(out_path, entries, {"made_by": "test_lora_extract_host"}, overwrite=True) as w:
            for key in src.keys():
                t = src.get(key)
                if names.is_target(key, "sd1") and not names.fused_modules(key, "sd1"):
                    w32 = t.float()
                    out_dim, flat_in = w32.shape[0], w32[0].numel()
                    d = torch.randn(out_dim, rank, generator=g) @ torch.randn(rank, flat_in, generator=g)
                    d *= scale * float(w32.std()) / float(d.std())
                    t = (w32 + d.reshape(w32.shape)).to(t.dtype)
                    changed += 1
                w.write(key, t)
    return changed


@pytest.fixture(scope="module")
def tuned(host):
    out = host.work / "models" / "checkpoints" / f"{TUNED}.safetensors"
    if not out.exists():
        assert _tuned_copy(build_checkpoint("mini_sd15", 1), out) > 100
    return out


def _extract(filename: str, inputs: dict = None, a="ckT", b="ckA", clip=True) -> dict:
    node = {"model_a": [a, 0], "model_b": [b, 0], "alpha": 1.0, "beta": 1.0, "rank": 8, "conv_rank": 0,
            "clamp": True, "save_precision": "fp32", "filename": filename, "overwrite": True}
    if clip:
        node.update(clip_a=[a, 1], clip_b=[b, 1])
    node.update(inputs or {})
    node = {k: v for k, v in node.items() if v is not None}  # None: leave that input unconnected
    return {"ckT": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": f"{TUNED}.safetensors"}},
            "ckA": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "mini_a.safetensors"}},
            "ex": {"class_type": "SuperMergerLoraExtract", "inputs": node},
            "name": {"class_type": "PreviewAny", "inputs": {"source": ["ex", 0]}}}


def _with_core_lora(lora_name) -> dict:
    """mini_a → core LoraLoader (strength 1 for model and CLIP) → sampler."""
    g = graph()
    g["lora"] = {"class_type": "LoraLoader", "inputs": {"model": ["ckA", 0], "clip": ["ckA", 1],
                                                       "lora_name": lora_name, "strength_model": 1.0,
                                                       "strength_clip": 1.0}}
    g["ks"]["inputs"]["model"] = ["lora", 0]
    g["pos"]["inputs"]["clip"] = g["neg"]["inputs"]["clip"] = ["lora", 1]
    return g


def _loras(host):
    return host.work / "models" / "loras"


def test_nodes_are_listed_with_tooltips(host):
    info = host.get("/object_info")
    for n in NODE_IDS:
        assert info[n]["category"] == "SuperMerger/lora"
        for section in ("required", "optional"):
            for name, spec in info[n]["input"].get(section, {}).items():
                assert spec[1].get("tooltip"), f"{n}.{name} has no tooltip"


def test_extracted_lora_applied_to_a_renders_the_tuned_model(host, tuned):
    _loras(host).mkdir(parents=True, exist_ok=True)
    exact = host.text(host.run(_extract("sm_extract_roundtrip", {"clamp": False})), "name")
    assert exact == "sm_extract_roundtrip.safetensors"
    with SafetensorsFile(_loras(host) / exact) as f:
        keys = f.keys()
        meta = f.metadata()
    assert any(k.startswith("lora_te_") for k in keys) and any(k.startswith("lora_unet_") for k in keys)
    assert meta["ss_base_model_version"] == "sd_v1" and meta["modelspec.prediction_type"] == "epsilon"
    # the mini U-Net's layout is not the released one, so its modules carry checkpoint (LDM) names: Stability's
    # layout, where kohya's diffusers-named SD1/SD2 LoRAs say "diffusers"
    assert any(k.startswith("lora_unet_input_blocks_") for k in keys)
    assert meta["modelspec.implementation"] == "https://github.com/Stability-AI/generative-models"
    hashes = file_hashes(_loras(host) / exact)  # what `lora info` computes; ComfyUI loads the file below
    assert {k: meta[k] for k in hashes} == hashes
    clamped = host.text(host.run(_extract("sm_extract_clamped")), "name")

    plain = host.image(host.run(graph())).astype(int)
    target = host.image(host.run(graph(a=TUNED, extra={
        "ckVAE": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "mini_a.safetensors"}}}) | {
        "dec": {"class_type": "VAEDecode", "inputs": {"samples": ["ks", 0], "vae": ["ckVAE", 2]}}})).astype(int)
    gap = np.abs(target - plain).mean()
    assert gap > 0.5, f"the tuned model should render differently from mini_a (mean |Δ| {gap:.2f})"
    # without the clamp the LoRA is the difference itself (up to fp16 storage of the tuned model)
    error = np.abs(host.image(host.run(_with_core_lora(exact))).astype(int) - target)
    assert error.mean() < 0.05 * gap and error.max() <= 2, (error.mean(), error.max(), gap)
    # kohya's clamp trims the factors' outliers: the picture moves most of the way, not all of it
    error = np.abs(host.image(host.run(_with_core_lora(clamped))).astype(int) - target)
    assert error.mean() < 0.75 * gap, (error.mean(), gap)


def test_a_versus_a_gives_zero_ups_and_no_text_encoder(host, tuned):
    entry = host.run(_extract("sm_extract_same", a="ckA", b="ckA"))
    with SafetensorsFile(_loras(host) / host.text(entry, "name")) as f:
        ups = [k for k in f.keys() if k.endswith("lora_up.weight")]
        assert ups and not any(k.startswith("lora_te") for k in f.keys())
        assert all(torch.count_nonzero(f.get(k)) == 0 for k in ups)


def test_refuses_to_overwrite_and_names_leaving_the_folder(host, tuned):
    _loras(host).mkdir(parents=True, exist_ok=True)
    existing = _loras(host) / "sm_extract_keep.safetensors"
    existing.write_bytes(b"keep")
    with pytest.raises(ExecutionFailed) as e:
        host.run(_extract("sm_extract_keep", {"overwrite": False}))
    assert "already exists" in str(e.value) and existing.read_bytes() == b"keep"
    with pytest.raises(ExecutionFailed) as e:
        host.run(_extract("../escaped", clip=False))
    assert "Extract LoRA from Models (SuperMerger) · filename" in str(e.value)
    assert not (host.work / "models" / "escaped.safetensors").exists()
    with pytest.raises(ExecutionFailed) as e:
        host.run(_extract("sm_extract_x", {"clip_b": None}))
    assert "Extract LoRA from Models (SuperMerger) · clip inputs" in str(e.value)


def test_interrupt_stops_extraction_and_leaves_no_file(host, tuned):
    g = _extract("sm_extract_interrupted", {"rank": 320, "conv_rank": 320})  # slow enough to catch it running
    target = _loras(host) / "sm_extract_interrupted.safetensors"
    _stopped, messages = host.interrupt(g, after=4.0, limit=10.0)
    assert "execution_interrupted" in messages, messages
    assert not target.exists() and not list(_loras(host).glob(".sm_extract_interrupted*"))


def test_extract_two_chained_from_two_extractions(host, tuned):
    # two LoRAs with the same modules and ranks, tuned − A and A − tuned, linked straight into the node
    g = {}
    for node, name, a, b in (("ex1", "sm_two_1", "ckT", "ckA"), ("ex2", "sm_two_2", "ckA", "ckT")):
        part = _extract(name, {"save_precision": "fp16", "clamp": False}, a=a, b=b)
        g.update({k: v for k, v in part.items() if k.startswith("ck")})
        g[node] = part["ex"]
    g["two"] = {"class_type": "SuperMergerLoraExtractTwo",
                "inputs": {**CHOSEN_NONE, "entry_1": ["ex1", 1], "entry_2": ["ex2", 1], "alpha": 0.0, "beta": 0.0, "gamma": 0.0,
                           "same_to_strength": False, "save_precision": "fp32", "filename": "",
                           "overwrite": True}}
    g["name"] = {"class_type": "PreviewAny", "inputs": {"source": ["two", 0]}}
    name = host.text(host.run(g), "name")
    assert name == "sm_two_1_1+sm_two_2_1.safetensors"
    # alpha = beta = gamma = 0 keeps the first LoRA's factors (merged alone at ratio 1) as they are
    with SafetensorsFile(_loras(host) / name) as out, SafetensorsFile(_loras(host) / "sm_two_1.safetensors") as one:
        assert set(out.keys()) == set(one.keys())
        for k in one.keys():
            assert torch.equal(out.get(k).float(), one.get(k).float()), k


def test_extract_two_bad_entries_are_clear_errors(host, tuned):
    base = {"alpha": 0.5, "beta": 0.5, "gamma": 1.0, "same_to_strength": False, "save_precision": "fp16",
            "filename": "sm_two_bad", "overwrite": True, **CHOSEN_NONE}
    two = "Extract LoRA from two LoRAs (SuperMerger)"
    for inputs, needle in (({"entry_1": "sm_two_1:1:1,2,3", "entry_2": "sm_two_2:1"}, f"{two} · lora_1: "),
                           ({"entry_1": "sm_two_1:1", "entry_2": "no_such_lora:1"},
                            f"{two} · lora_2: no LoRA named 'no_such_lora' in the loras folder"),
                           ({"entry_1": "sm_two_1:1,sm_two_2:1", "entry_2": "sm_two_2:1"}, f"{two} · lora_1: one"),
                           ({"lora_1": "sm_two_1.safetensors", "blocks_1": "BOGUS", "entry_2": "sm_two_2:1"},
                            f"{two} · lora_1: sm_two_1.safetensors: unknown block-weight preset 'BOGUS'"),
                           ({"entry_2": "sm_two_2:1"}, f"{two} · lora_1: choose a LoRA from the list, or link an "
                                                       "entry")):
        g = {"two": {"class_type": "SuperMergerLoraExtractTwo", "inputs": {**base, **inputs}}}
        with pytest.raises(ExecutionFailed) as e:
            host.run(g)
        assert needle in str(e.value), str(e.value)


def test_extract_two_takes_loras_chosen_from_the_folder_list(host, tuned):
    info = host.get("/object_info/SuperMergerLoraExtractTwo")["SuperMergerLoraExtractTwo"]["input"]["required"]
    options = info["lora_1"][1]["options"]
    assert "sm_two_1.safetensors" in options and options[0] == "(none)"
    g = {"two": {"class_type": "SuperMergerLoraExtractTwo",
                 "inputs": {**CHOSEN_NONE, "lora_1": "sm_two_1.safetensors", "lora_2": "sm_two_2.safetensors",
                            "alpha": 0.0, "beta": 0.0, "gamma": 0.0, "same_to_strength": False,
                            "save_precision": "fp32", "filename": "sm_two_chosen", "overwrite": True}},
         "name": {"class_type": "PreviewAny", "inputs": {"source": ["two", 0]}}}
    assert host.text(host.run(g), "name") == "sm_two_chosen.safetensors"
    with SafetensorsFile(_loras(host) / "sm_two_chosen.safetensors") as out, \
            SafetensorsFile(_loras(host) / "sm_two_1.safetensors") as one:
        for k in one.keys():
            assert torch.equal(out.get(k).float(), one.get(k).float()), k
