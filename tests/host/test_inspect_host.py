"""Metadata viewer, history weight analysis and the analysis CSV export, in a real ComfyUI."""
import csv
import json

import pytest

from comfy_host import ExecutionFailed, graph
from merge_core.presets import load_presets


def test_metadata_of_a_saved_merge_shows_its_recipe(host):
    from test_checkpoint_host import merged, save_node

    g = merged(alpha=0.4, weights_alpha="GRAD_A")
    g["keep"] = save_node("m", "meta_probe", overwrite=True)
    host.run(g)
    out = host.run({"meta": {"class_type": "SuperMergerMetadata",
                             "inputs": {"ckpt_name": "meta_probe.safetensors", "lora_name": "(none)"}},
                    "show": {"class_type": "PreviewAny", "inputs": {"source": ["meta", 0]}}})
    meta = json.loads(host.text(out, "show"))
    assert meta["supermerger_recipe"]["weights_alpha"] == "GRAD_A"
    assert meta["sd_merge_recipe"]["type"] == "sd-webui-supermerger"


def test_history_weights_of_three_block_weight_merges(host, tmp_path):
    presets = ["GRAD_V", "GRAD_A", "FLAT_75"]
    for name in presets:  # three in-graph merges, recorded in the history
        host.run(graph("SuperMergerWeightSum", {"weights": ["bw", 0]}, extra={
            "bw": {"class_type": "SuperMergerBlockWeights",
                   "inputs": {"weights_alpha": "", "preset_alpha": name, "weights_beta": "",
                              "preset_beta": "(none)"}}}))
    out = host.run({"hw": {"class_type": "SuperMergerHistoryWeights",
                           "inputs": {"ids": "-3--1", "csv_filename": "stats/weights"}},
                    "show": {"class_type": "PreviewAny", "inputs": {"source": ["hw", 0]}},
                    "img": {"class_type": "SaveImage", "inputs": {"images": ["hw", 1], "filename_prefix": "hw"}}})
    chart = host.image(out, "img")
    assert chart.shape[0] > 300 and chart.shape[1] > 26 * 30
    rows = list(csv.reader(open(host.work / "output" / "stats" / "weights.csv", encoding="utf-8")))
    assert rows[0] == ["block", "mean", "sigma", "2sigma", "3sigma"] and len(rows) == 27
    lists = [[float(x) for x in load_presets()[p].split(",")] for p in presets]
    for i, row in enumerate(rows[1:]):
        mean = sum(col[i] for col in lists) / 3
        assert float(row[1]) == pytest.approx(round(mean, 3), abs=1e-9)
    assert "IN00" in host.text(out, "show")


def test_analysis_table_as_csv_and_a_path_outside_refused(host):
    g = {"ckA": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "mini_a.safetensors"}},
         "ckB": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "mini_b.safetensors"}},
         "an": {"class_type": "SuperMergerAnalysis",
                "inputs": {"model_a": ["ckA", 0], "model_b": ["ckB", 0], "mode": "block", "block_method": "mean",
                           "csv_filename": "similarity"}},
         "show": {"class_type": "PreviewAny", "inputs": {"source": ["an", 0]}}}
    host.run(g)
    rows = list(csv.reader(open(host.work / "output" / "similarity.csv", encoding="utf-8")))
    assert rows[0][0] == "BASE" or rows[0][0].startswith("IN")
    assert all(len(r) == 3 and float(r[2]) < 100 for r in rows)
    g["an"]["inputs"]["csv_filename"] = "../escape"
    with pytest.raises(ExecutionFailed) as err:
        host.run(g)
    assert "SuperMergerAnalysis" in err.value.info["exception_message"]
    assert "csv_filename" in err.value.info["exception_message"]


def _supermerger_asimilarity(a: dict, b: dict) -> list:
    """SuperMerger's asimilarity over the attention blocks the mini U-Net has (IN01, IN03, M00, OUT00–03):
    the global generator seeded once, then per block an input and six real nn.Linear probes, whose
    initialisation draws from the same generator, loaded with the weights."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    shells = sorted({k.split(".1.transformer_blocks.0.attn1.")[0] for k in a if ".transformer_blocks.0.attn1.to_q" in k},
                    key=lambda p: ("input" not in p, "output" in p, int(p.rsplit(".", 1)[1]) if "middle" not in p else 0))
    rows = []
    with torch.random.fork_rng():
        torch.manual_seed(2244096)
        for shell in shells:
            p = shell + ".1.transformer_blocks.0.attn1."
            h, e = a[p + "to_q.weight"].shape
            x = torch.randn([e, h])
            outs = []
            for m in (a, b):
                probes = []
                for w in "qkv":
                    probe = nn.Linear(h, e, bias=False)
                    probe.load_state_dict({"weight": m[p + f"to_{w}.weight"].float()})
                    probes.append(probe)
                with torch.no_grad():
                    q, k, v = (probe(x) for probe in probes)
                    outs.append(torch.einsum("ik, jk -> ik", F.softmax(torch.einsum("ij, kj -> ik", q, k), dim=-1), v))
            block = shell.replace("model.diffusion_model.", "")
            block = "M00" if block == "middle_block" else ("IN" if "input" in block else "OUT") + \
                f"{int(block.rsplit('.', 1)[1]):02}"
            rows.append((block, round(torch.mean(torch.cosine_similarity(outs[0], outs[1])).item() * 100, 3)))
    return rows


def _unet_block_means(a: dict, b: dict) -> list:
    """Per-block means of the U-Net keys' cosine similarities ×100 (each rounded to 3 decimals first), in
    block order — what SuperMerger's "Both" lists above the keys, whatever the block method."""
    import re
    from statistics import mean

    import torch

    per = {}
    for key in a:
        if not key.startswith("model.diffusion_model."):
            continue
        sim = torch.nn.functional.cosine_similarity(a[key].double().reshape(1, -1), b[key].double().reshape(1, -1))
        m = re.search(r"\.(input|middle|output)_blocks?\.(\d+)\.", key)
        block = ("IN00" if "time_embed" in key else "OUT11" if ".out." in key else
                 "M00" if m.group(1) == "middle" else f"{'IN' if m.group(1) == 'input' else 'OUT'}{int(m.group(2)):02}")
        per.setdefault(block, []).append(round(sim.item() * 100, 3))
    order = ["IN00", "IN01", "IN02", "IN03", "M00", "OUT00", "OUT01", "OUT02", "OUT03", "OUT11"]
    return [(blk, round(mean(per[blk]), 3)) for blk in order if blk in per]


def _chart_as_saved(rows, title):
    """The chart the node should draw, through the same float round trip as IMAGE → SaveImage."""
    import numpy as np

    from nodes.chart import bar_chart

    return np.clip(255.0 * (np.asarray(bar_chart(rows, title), dtype=np.float32) / 255.0), 0, 255).astype(np.uint8)


def test_analysis_table_and_chart_show_supermergers_values(host):
    import numpy as np
    from test_checkpoint_host import tensors

    folder = host.work / "models" / "checkpoints"
    a, b = tensors(folder / "mini_a.safetensors")[0], tensors(folder / "mini_b.safetensors")[0]
    asim, means = _supermerger_asimilarity(a, b), _unet_block_means(a, b)
    ck = {"ckA": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "mini_a.safetensors"}},
          "ckB": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "mini_b.safetensors"}}}
    for mode, method, expect, title in (
            ("asimilarity", "mean", asim, "ASimilarity per attention block"),
            ("both", "min", means, "Stable Diffusion 1.x: cosine similarity (mean per block)")):
        entry = host.run({**ck, "an": {"class_type": "SuperMergerAnalysis",
                                       "inputs": {"model_a": ["ckA", 0], "model_b": ["ckB", 0], "mode": mode,
                                                  "block_method": method}},
                          "txt": {"class_type": "PreviewAny", "inputs": {"source": ["an", 0]}},
                          "save": {"class_type": "SaveImage",
                                   "inputs": {"images": ["an", 1], "filename_prefix": f"an_{mode}"}}})
        lines = host.text(entry, "txt").splitlines()
        table = [(line.split()[0], float(line.split()[1])) for line in lines[:len(expect)]]
        # "both": SuperMerger inserts each block's mean at the top, so they come in reverse block order
        assert table == (expect if mode == "asimilarity" else expect[::-1]), (mode, table, expect)
        if mode == "both":
            assert len(lines) == len(expect) + sum(k.startswith("model.diffusion_model.") for k in a)
        assert np.array_equal(host.image(entry, "save"), _chart_as_saved(expect, title)), mode
