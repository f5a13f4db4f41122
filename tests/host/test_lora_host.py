"""The LoRA nodes (merge, apply with block weights) in a real ComfyUI, and our module names against
ComfyUI's own LoRA key maps. See conftest.py for how to run them."""
import re
import sys

import numpy as np
import pytest

from comfy_host import COMFY, ROOT, ExecutionFailed, build_checkpoint, graph, mini_lora

sys.path.insert(0, str(ROOT))
from merge_core.lora import names  # noqa: E402
from merge_core.sources import SafetensorsFile  # noqa: E402
from merge_core.synthetic import sd1_layout, sdxl_layout  # noqa: E402

LORA = "sm_host_lora"
NODE_IDS = ("SuperMergerLoraToModel", "SuperMergerLoraMerge")


# Our names are ComfyUI's names (in-process, no server) ------------------------------------------

class _Config:
    pass


class _FakeModel:
    """What comfy.lora's key-map builders read: state_dict() keys and model_config.unet_config."""

    def __init__(self, keys, unet_config=None):
        self._keys = keys
        self.model_config = _Config()
        self.model_config.unet_config = unet_config

    def state_dict(self):
        return dict.fromkeys(self._keys)


@pytest.fixture(scope="module")
def comfy_lora():
    sys.path.insert(0, COMFY)
    import comfy.cli_args

    comfy.cli_args.args.cpu = True
    import comfy.lora
    import comfy.model_detection
    return comfy


@pytest.mark.parametrize("family,kind", [("sd1", "sd15"), ("sdxl", "sdxl")])
def test_every_module_name_maps_to_the_same_weight_in_comfyui(comfy_lora, family, kind):
    from make_checkpoints import UNET_CONFIGS
    from merge_core.synthetic import random_state_dict

    comfy = comfy_lora
    layout = (sd1_layout(1 / 40) if family == "sd1" else sdxl_layout(1 / 40))
    unet = ["diffusion_model." + k[len("model.diffusion_model."):] for k in layout
            if k.startswith("model.diffusion_model.")]
    key_map = comfy.lora.model_lora_keys_unet(_FakeModel(unet, UNET_CONFIGS[kind]), {})
    config = comfy.model_detection.model_config_from_unet_config(UNET_CONFIGS[kind])
    te = {k: v for k, v in layout.items() if k.startswith(("cond_stage_model.", "conditioner."))}
    clip_keys = list(config.process_clip_state_dict(random_state_dict(te, 0, extras=False)))
    key_map = comfy.lora.model_lora_keys_clip(_FakeModel(clip_keys), key_map)
    checked = 0
    for key in layout:
        single = names.module_name(key, family)
        for module in [single] if single else names.fused_modules(key, family):
            target = key_map.get(module)
            assert target is not None, f"ComfyUI does not accept {module}"
            if key.startswith("model.diffusion_model."):
                assert target == key[len("model."):], (module, target)
            else:  # text encoders: ComfyUI holds Hugging Face CLIP; the layer path is in the module name
                m = re.fullmatch(r"lora_te\d?_text_model_encoder_layers_(\d+)_(self_attn|mlp)_(\w+)", module)
                clip = "clip_g" if module.startswith("lora_te2_") else "clip_l"
                want = f"{clip}.transformer.text_model.encoder.layers.{m[1]}.{m[2]}.{m[3]}.weight"
                assert target == want, (module, target, want)
            checked += 1
    assert checked > 400


# The nodes in a running ComfyUI -------------------------------------------------------------------

@pytest.fixture(scope="module")
def lora_file(host):
    """A random LoCon for the mini checkpoints in the harness ComfyUI's loras folder."""
    return mini_lora(host.work, LORA)


def with_lora(node_inputs: dict, core: bool = False) -> dict:
    """graph() with a LoRA node between checkpoint A and the sampler / text encoders."""
    g = graph()
    if core:
        g["lora"] = {"class_type": "LoraLoader", "inputs": {"model": ["ckA", 0], "clip": ["ckA", 1],
                                                           "lora_name": f"{LORA}.safetensors",
                                                           "strength_model": 1.0, "strength_clip": 1.0}}
    else:
        g["lora"] = {"class_type": "SuperMergerLoraToModel",
                     "inputs": {"model": ["ckA", 0], "clip": ["ckA", 1], **node_inputs}}
    g["ks"]["inputs"]["model"] = ["lora", 0]
    g["pos"]["inputs"]["clip"] = g["neg"]["inputs"]["clip"] = ["lora", 1]
    return g


def test_nodes_are_listed_with_tooltips(host):
    info = host.get("/object_info")
    for n in NODE_IDS:
        assert info[n]["category"] == "SuperMerger/lora"
        for section in ("required", "optional"):
            for name, spec in info[n]["input"].get(section, {}).items():
                assert spec[1].get("tooltip"), f"{n}.{name} has no tooltip"


def test_zero_block_weights_render_model_a_and_ratio_one_renders_core_lora_loader(host, lora_file):
    plain = host.image(host.run(graph()))
    zeros = host.image(host.run(with_lora({"loras": f"{LORA}:1:" + ",".join(["0"] * 26)})))
    assert np.array_equal(zeros, plain)
    none_preset = host.image(host.run(with_lora({"loras": f"{LORA}:0.8:NONE"})))
    assert np.array_equal(none_preset, plain)
    ours = host.image(host.run(with_lora({"loras": f"{LORA}:1"})))
    core = host.image(host.run(with_lora({}, core=True)))
    assert not np.array_equal(core, plain)  # the LoRA does change the picture
    assert np.array_equal(ours, core)  # the same patches at the same strength: the same pixels
    assert np.array_equal(host.image(host.run(graph())), plain)  # checkpoint A itself was not modified


def test_block_weights_change_only_their_blocks(host, lora_file):
    plain = host.image(host.run(graph()))
    only_base = host.image(host.run(with_lora({"loras": f"{LORA}:1:1," + ",".join(["0"] * 25)})))
    only_unet = host.image(host.run(with_lora({"loras": f"{LORA}:1:0," + ",".join(["1"] * 25)})))
    full = host.image(host.run(with_lora({"loras": f"{LORA}:1"})))
    for img in (only_base, only_unet):
        assert not np.array_equal(img, plain) and not np.array_equal(img, full)


def test_merge_node_writes_a_lora_that_renders_like_its_input(host, lora_file):
    g = with_lora({"loras": ["merge", 1]})
    g["merge"] = {"class_type": "SuperMergerLoraMerge",
                  "inputs": {"loras": f"{LORA}:1", "rank": "no", "same_to_strength": False,
                             "metadata": "create new", "save_precision": "fp32", "filename": "sm_host_merged",
                             "overwrite": True}}
    g["name"] = {"class_type": "PreviewAny", "inputs": {"source": ["merge", 0]}}
    entry = host.run(g)
    assert host.text(entry, "name") == "sm_host_merged.safetensors"
    merged = lora_file.parent / "sm_host_merged.safetensors"
    with SafetensorsFile(merged) as f:
        assert f.metadata()["ss_output_name"] == "sm_host_merged" and "sshs_model_hash" in f.metadata()
    # a LoRA merged alone at ratio 1 in float keeps its factors: same picture as the original LoRA
    original = host.image(host.run(with_lora({"loras": f"{LORA}:1"})))
    assert np.array_equal(host.image(entry), original)


@pytest.mark.parametrize("node,inputs,needle", [
    ("SuperMergerLoraToModel", {"loras": "no_such_lora:1"}, "LoRA to Model (SuperMerger) · loras: no LoRA named"),
    ("SuperMergerLoraToModel", {"loras": f"{LORA}:1:1,2,3"}, "3 block value(s)"),
    ("SuperMergerLoraToModel", {"loras": f"{LORA}:1:BOGUS"}, "unknown block-weight preset 'BOGUS'"),
    ("SuperMergerLoraMerge", {"loras": f"{LORA}:1", "filename": "../escape"}, "Merge LoRAs (SuperMerger) · filename"),
])
def test_bad_input_is_one_clear_message(host, lora_file, node, inputs, needle):
    if node == "SuperMergerLoraToModel":
        g = with_lora(inputs)
    else:
        g = {"merge": {"class_type": node, "inputs": {"rank": "no", "same_to_strength": False,
                                                      "metadata": "create new", "save_precision": "fp16",
                                                      "overwrite": False, **inputs}}}
    with pytest.raises(ExecutionFailed) as e:
        host.run(g)
    assert needle in str(e.value)
    assert not (host.work / "models" / "escape.safetensors").exists()


def test_a_checkpoint_baked_by_the_engine_renders_like_the_lazy_node(host, lora_file):
    """Our bake-in formula (SPEC §13.7) against ComfyUI's own LoRA maths, end to end."""
    from merge_core.lora.bake import bake_to_file
    from merge_core.lora.files import LoraFile
    from merge_core.lora.syntax import parse_list

    (entry,) = parse_list(f"{LORA}:0.7:OUTALL")
    out = host.work / "models" / "checkpoints" / "sm_host_baked.safetensors"
    with LoraFile.open(lora_file) as lf:
        # float: ComfyUI holds the fp16 checkpoint in float32 on the CPU and patches it there
        bake_to_file(build_checkpoint("mini_sd15", 1), [(lf, entry)], out, precision="float", overwrite=True)
    lazy = host.image(host.run(with_lora({"loras": f"{LORA}:0.7:OUTALL"})))
    baked = host.image(host.run(graph(a="sm_host_baked")))
    plain = host.image(host.run(graph()))
    assert not np.array_equal(lazy, plain)
    assert np.array_equal(baked, lazy)  # measured: pixel-identical
