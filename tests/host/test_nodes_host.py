"""The merge nodes in a real ComfyUI (issue: ComfyUI nodes). See conftest.py for how to run them."""
import json
import os
import sys

import numpy as np
import pytest

from comfy_host import ROOT, ExecutionFailed, graph

sys.path.insert(0, str(ROOT))
from merge_core import Recipe  # noqa: E402
from merge_core.calcmodes import CALCMODES  # noqa: E402

NODE_IDS = ["SuperMergerWeightSum", "SuperMergerAddDifference", "SuperMergerTripleSum", "SuperMergerSumTwice",
            "SuperMergerBlockWeights", "SuperMergerElemental", "SuperMergerIncludeExclude", "SuperMergerDiceRoll",
            "SuperMergerAdjust", "SuperMergerAnalysis", "SuperMergerElements", "SuperMergerCheckpointMerge",
            "SuperMergerSave", "SuperMergerHistory"]
MODE_OF = {"SuperMergerWeightSum": "weight_sum", "SuperMergerAddDifference": "add_difference",
           "SuperMergerTripleSum": "triple_sum", "SuperMergerSumTwice": "sum_twice"}


def test_pack_loads_without_import_errors_and_all_nodes_appear(host):
    info = host.get("/object_info")
    missing = [n for n in NODE_IDS if n not in info]
    assert not missing, missing
    ours = [line for line in host.log.read_text().splitlines() if "custom_nodes/comfyui-supermerger" in line]
    assert ours and not any("IMPORT FAILED" in line for line in ours), ours
    for n in [n for n in info if n.startswith("SuperMerger")]:  # every node of the pack, not only these
        assert (ROOT / "web" / "docs" / f"{n}.md").is_file(), f"{n} has no help page"
        assert info[n]["category"].startswith("SuperMerger/")
        for section in ("required", "optional"):
            for name, spec in info[n]["input"].get(section, {}).items():
                assert spec[1].get("tooltip"), f"{n}.{name} has no tooltip"


def test_alpha_zero_renders_model_a_and_alpha_one_model_b(host):
    img_a = host.image(host.run(graph(a="mini_a")))
    img_b_with_a_vae = host.image(host.run(graph(a="mini_b", extra={
        "ckVAE": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "mini_a.safetensors"}}}) | {
        "dec": {"class_type": "VAEDecode", "inputs": {"samples": ["ks", 0], "vae": ["ckVAE", 2]}}}))
    assert not np.array_equal(img_a, img_b_with_a_vae)
    zero = host.image(host.run(graph("SuperMergerWeightSum", {"alpha": 0.0})))
    one = host.image(host.run(graph("SuperMergerWeightSum", {"alpha": 1.0})))
    assert np.array_equal(zero, img_a)
    assert np.array_equal(one, img_b_with_a_vae)


@pytest.mark.parametrize("node", list(MODE_OF))
def test_every_calcmode_of_every_mode_renders(host, node):
    mode = MODE_OF[node]
    options = host.get(f"/object_info/{node}")[node]["input"]["required"]["calcmode"][1]["options"]
    assert options == [n for n, cm in CALCMODES.items() if mode in cm.modes]
    for calcmode in options:
        inputs = {"calcmode": calcmode, "alpha": 0.4}
        if calcmode == "extract":
            inputs.update(beta=0.5, gamma=1.0)
        img = host.image(host.run(graph(node, inputs, c=None if mode == "weight_sum" else "mini_c")))
        assert img.shape == (64, 64, 3) and img.std() > 0, (node, calcmode)


def test_a_chain_merge_of_a_merge_renders_and_differs(host):
    g = graph("SuperMergerWeightSum", {"alpha": 0.5})
    g["ckC"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "mini_c.safetensors"}}
    g["merge2"] = {"class_type": "SuperMergerAddDifference",
                   "inputs": {"model_a": ["merge", 0], "model_b": ["ckC", 0], "model_c": ["ckA", 0],
                              "clip_a": ["merge", 1], "clip_b": ["ckC", 1], "clip_c": ["ckA", 1],
                              "alpha": 0.5, "beta": 0.25, "gamma": 0.3, "calcmode": "trainDifference"}}
    g["pos"]["inputs"]["clip"] = g["neg"]["inputs"]["clip"] = ["merge2", 1]
    g["ks"]["inputs"]["model"] = ["merge2", 0]
    chained = host.image(host.run(g))
    single = host.image(host.run(graph("SuperMergerWeightSum", {"alpha": 0.5})))
    assert chained.shape == (64, 64, 3) and not np.array_equal(chained, single)


def test_recipe_output_parses_as_a_recipe_and_parameter_nodes_chain(host):
    extra = {
        "bw": {"class_type": "SuperMergerBlockWeights",
               "inputs": {"weights_alpha": "", "preset_alpha": "GRAD_V", "weights_beta": "", "preset_beta": "(none)"}},
        "el": {"class_type": "SuperMergerElemental",
               "inputs": {"elemental": "OUT03:attn2:0.9", "extended_xl": False, "weights": ["bw", 0]}},
        "ie": {"class_type": "SuperMergerIncludeExclude",
               "inputs": {"mode": "exclude", "blocks": "VAE", "elements": "", "weights": ["el", 0]}},
    }
    entry = host.run(graph("SuperMergerWeightSum", {"weights": ["ie", 0]}, extra=extra, text_out=True))
    recipe = Recipe.from_json(host.text(entry))
    assert recipe.weights_alpha == "GRAD_V" and recipe.elemental == "OUT03:attn2:0.9"
    assert recipe.include_exclude == {"mode": "exclude", "blocks": ["VAE"], "elements": []}
    assert host.image(entry).shape == (64, 64, 3)


def test_dice_roll_records_its_seed_and_reproduces(host):
    extra = {"dice": {"class_type": "SuperMergerDiceRoll",
                      "inputs": {"mode": "U", "seed": 1234, "alpha": True, "beta": False, "custom": "",
                                 "upper": "1", "lower": "0", "clamp_upper": "", "clamp_lower": "", "round": 3,
                                 "extend_xl": False}}}
    one = host.run(graph("SuperMergerWeightSum", {"weights": ["dice", 0]}, extra=extra, text_out=True))
    assert json.loads(host.text(one))["seed"] == 1234
    two = host.run(graph("SuperMergerWeightSum", {"weights": ["dice", 0]}, extra=extra, text_out=True, seed=0))
    assert np.array_equal(host.image(one), host.image(two))


def test_adjust_node_changes_the_image_and_zero_is_identity(host):
    base = host.image(host.run(graph(a="mini_a")))
    values = dict(in_=0.0)
    adj = {"adj": {"class_type": "SuperMergerAdjust",
                   "inputs": {"model": ["ckA", 0], "in": 0.0, "out": 0.0, "out2": 0.0, "cont": 0.0, "bri": 4.0,
                              "col1": 0.0, "col2": 0.0, "col3": 0.0}}}
    g = graph(a="mini_a", extra=adj)
    g["ks"]["inputs"]["model"] = ["adj", 0]
    assert not np.array_equal(host.image(host.run(g)), base)
    adj["adj"]["inputs"]["bri"] = 0.0
    g = graph(a="mini_a", extra=adj)
    g["ks"]["inputs"]["model"] = ["adj", 0]
    assert np.array_equal(host.image(host.run(g)), base)
    del values


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "example_workflows").glob("*.json")))
def test_example_workflows_run_as_saved(host, name):
    from comfy_host import mini_lora, ui_to_api

    for seed, lora in enumerate(("lora_a", "lora_b"), 5):  # the LoRAs the templates name
        if not (host.work / "models" / "loras" / f"{lora}.safetensors").exists():
            mini_lora(host.work, lora, seed)
    workflow = json.loads((ROOT / "example_workflows" / f"{name}.json").read_text())
    prompt = ui_to_api(workflow, host.get("/object_info"))
    minis = iter(["mini_a.safetensors", "mini_b.safetensors", "mini_c.safetensors"])
    for node in prompt.values():  # the same graph on the small test models, small and fast
        if node["class_type"] == "CheckpointLoaderSimple":
            node["inputs"]["ckpt_name"] = next(minis)
        elif node["class_type"] in ("SuperMergerElements", "SuperMergerMetadata"):
            node["inputs"]["ckpt_name"] = "mini_a.safetensors"
        elif node["class_type"] == "SuperMergerCheckpointMerge":
            node["inputs"].update(model_a="mini_a.safetensors", model_b="mini_b.safetensors")
        elif node["class_type"] == "EmptyLatentImage":
            node["inputs"].update(width=64, height=64)
        elif node["class_type"] == "KSampler":
            node["inputs"]["steps"] = 4
    entry = host.run(prompt)
    if name == "similarity_chart":
        assert host.image(entry).shape[0] > 200 and "OUT" in host.text(entry)
        return
    # the render's own save node (a template may also save a chart, and outputs come in no fixed order)
    render = next(nid for nid, node in prompt.items() if node["class_type"] in ("SaveImage", "SuperMergerSaveImage")
                  and prompt[node["inputs"]["images"][0]]["class_type"] == "VAEDecode")
    assert host.image(entry, render).shape == (64, 64, 3)
    recipe_slot = {**{node_id: 2 for node_id in MODE_OF}, "SuperMergerCheckpointMerge": 3}
    recipe_views = [nid for nid, node in prompt.items() if node["class_type"] == "PreviewAny" and
                    recipe_slot.get(prompt[node["inputs"]["source"][0]]["class_type"]) == node["inputs"]["source"][1]]
    assert recipe_views or not any(node["class_type"] in recipe_slot for node in prompt.values())
    for nid in recipe_views:
        Recipe.from_json(host.text(entry, nid))


def test_interrupt_stops_the_node_time_prepass_promptly_and_leaves_inputs_intact(host):
    reference = host.image(host.run(graph(a="mini_a", seed=5)))
    host.run(graph("SuperMergerWeightSum", {"alpha": 0.45}, seed=5))  # B loaded: next time the merge runs first
    g = graph("SuperMergerWeightSum", {"calcmode": "cosineA", "alpha": 0.45}, seed=5)
    stopped, messages = host.interrupt(g, after=0.5, limit=5.0)  # the pre-pass takes ~2 s on the mini models
    assert messages.get("execution_interrupted", {}).get("node_id") == "merge", messages
    assert stopped < 2.0, f"stopped after {stopped:.2f} s"
    # the loaded models were not touched: model A still renders its own image
    assert np.array_equal(host.image(host.run(graph(a="mini_a", seed=5))), reference)


def test_interrupt_stops_a_costly_merge_while_the_sampler_loads_it_and_leaves_inputs_intact(host):
    """smoothAdd runs when the sampler loads the model (minutes on a full model); Interrupt stops it within a
    key, and ComfyUI's loader puts back the weights patched so far: model A renders as before."""
    def unet_only(calcmode):  # ~30 s of smoothAdd for the mini U-Net, none for the text encoder
        g = graph("SuperMergerAddDifference", {"calcmode": calcmode, "alpha": 0.5}, c="mini_c", seed=6)
        for name in ("clip_a", "clip_b", "clip_c"):
            del g["merge"]["inputs"][name]
        for prompt in ("pos", "neg"):
            g[prompt]["inputs"]["clip"] = ["ckA", 1]
        return g

    reference = host.image(host.run(graph(a="mini_a", seed=6)))
    host.run(unet_only("normal"))  # loads B and C: next time only the merge node and the sampler run
    # the merge node returns at once; Interrupt a few seconds into the sampler's loading
    stopped, messages = host.interrupt(unet_only("smoothAdd"), after=4.0, limit=60.0)
    assert messages.get("execution_interrupted", {}).get("node_id") == "ks", messages  # while it loaded the model
    assert stopped < 5.0, f"stopped after {stopped:.2f} s"
    assert np.array_equal(host.image(host.run(graph(a="mini_a", seed=6))), reference)


def test_analysis_chart_shows_a_drop_in_the_merged_block_alone(host):
    weights = ",".join(["0"] * 15 + ["1"] + ["0"] * 10)  # OUT01 only; the mini U-Net has OUT00…OUT03
    g = {
        "ckA": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "mini_a.safetensors"}},
        "ckB": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "mini_b.safetensors"}},
        "bw": {"class_type": "SuperMergerBlockWeights", "inputs": {"weights_alpha": weights, "preset_alpha": "(none)",
                                                                    "weights_beta": "", "preset_beta": "(none)"}},
        "merge": {"class_type": "SuperMergerWeightSum",
                  "inputs": {"model_a": ["ckA", 0], "model_b": ["ckB", 0], "clip_a": ["ckA", 1], "clip_b": ["ckB", 1],
                             "alpha": 0.5, "beta": 0.25, "calcmode": "normal", "weights": ["bw", 0]}},
        "an": {"class_type": "SuperMergerAnalysis",
               "inputs": {"model_a": ["ckA", 0], "model_b": ["merge", 0], "clip_a": ["ckA", 1], "clip_b": ["merge", 1],
                          "mode": "block", "block_method": "mean"}},
        "txt": {"class_type": "PreviewAny", "inputs": {"source": ["an", 0]}},
        "save": {"class_type": "SaveImage", "inputs": {"images": ["an", 1], "filename_prefix": "similarity_chart"}},
    }
    entry = host.run(g)
    table = host.text(entry, "txt")
    scores = {line.split()[0]: float(line.split()[1]) for line in table.splitlines()}
    assert scores["OUT01"] < 90, scores
    if not all(v == 100.0 for k, v in scores.items() if k != "OUT01"):
        g["an"]["inputs"]["mode"] = "element"
        rows = [r for r in host.text(host.run(g), "txt").splitlines() if "OUT01" not in r and "100.000" not in r]
        raise AssertionError(f"{scores}\nchanged keys outside OUT01:\n" + "\n".join(rows[:20]))
    chart = host.image(entry, "save")
    assert chart.shape[0] >= 300 and chart.shape[1] >= 300 and chart.std() > 10
    keep = os.environ.get("SUPERMERGER_KEEP_CHART")
    if keep:  # for a person to look at
        from PIL import Image

        Image.fromarray(chart).save(keep)


def test_elements_node_lists_keys_with_their_blocks(host):
    g = {"el": {"class_type": "SuperMergerElements",
                "inputs": {"ckpt_name": "mini_a.safetensors", "filter": "attn1.to_q"}},
         "txt": {"class_type": "PreviewAny", "inputs": {"source": ["el", 0]}}}
    text = host.text(host.run(g), "txt")
    key = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"
    assert f"{key}\tIN01\tIN01\t[320, 320]" in text
    assert all("attn1.to_q" in line for line in text.splitlines())


def test_merge_nodes_show_beta_and_gamma_only_where_a_calcmode_reads_them(host):
    info = host.get("/object_info")

    def inputs(node):
        spec = info[node]["input"]
        return {**spec.get("required", {}), **spec.get("optional", {})}

    ws, ad = inputs("SuperMergerWeightSum"), inputs("SuperMergerAddDifference")
    assert "gamma" not in ws
    assert ws["beta"][1]["tooltip"].endswith("Read only by calcmode tensor and tensor2; the others ignore it.")
    assert ad["gamma"][1]["tooltip"].endswith("Read only by calcmode extract; the others ignore it.")
    assert "Read only" not in inputs("SuperMergerTripleSum")["beta"][1]["tooltip"]  # the mode's own β
