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
