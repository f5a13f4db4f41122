"""The XYZ plot nodes in a real ComfyUI on the mini models (issue: XYZ plot). See conftest.py for how to run them."""
import io
import json
import re
import sys
import urllib.parse
import urllib.request

import numpy as np
import pytest
from PIL import Image

from comfy_host import ROOT, graph, sampler

sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from xyz_cases import SEMANTICS, check_cells  # noqa: E402

SD26 = ("BASE,IN00,IN01,IN02,IN03,IN04,IN05,IN06,IN07,IN08,IN09,IN10,IN11,M00,"
        "OUT00,OUT01,OUT02,OUT03,OUT04,OUT05,OUT06,OUT07,OUT08,OUT09,OUT10,OUT11").split(",")


def plan_node(x, y=("none", ""), z=("none", ""), **inputs):
    node = {"model_a": ["ckA", 0], "model_b": ["ckB", 0], "clip_a": ["ckA", 1], "clip_b": ["ckB", 1],
            "mode": "weight_sum", "calcmode": "normal", "alpha": 0.5, "beta": 0.25, "gamma": 0.3,
            "x_type": x[0], "x_values": x[1], "y_type": y[0], "y_values": y[1], "z_type": z[0], "z_values": z[1],
            "seed": 0, "prompt": "a red apple on a table"}
    node.update(inputs)
    return {"class_type": "SuperMergerXYZPlan", "inputs": node}


def loaders():
    return {"ckA": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "mini_a.safetensors"}},
            "ckB": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "mini_b.safetensors"}}}


def xyz_graph(x, y=("none", ""), z=("none", ""), swap_xy=False, **inputs):
    """Loaders → plan → the same sampler nodes as every host test, fed per cell → grid → save (cells and grids)."""
    g = loaders()
    g["plan"] = plan_node(x, y, z, **inputs)
    g.update(sampler(["plan", 0], ["plan", 1], ["ckA", 2]))
    g["pos"]["inputs"]["text"] = ["plan", 3]
    g["ks"]["inputs"]["seed"] = ["plan", 2]
    g["grid"] = {"class_type": "SuperMergerXYZGrid", "inputs": {"images": ["dec", 0], "plan": ["plan", 5],
                                                                 "swap_xy": swap_xy}}
    g["gsave"] = {"class_type": "SaveImage", "inputs": {"images": ["grid", 0], "filename_prefix": "xyzgrid"}}
    g["summary"] = {"class_type": "PreviewAny", "inputs": {"source": ["grid", 2]}}
    g["recipes"] = {"class_type": "PreviewAny", "inputs": {"source": ["plan", 4]}}
    return g


def images(host, entry, node):
    out = []
    for img in entry["outputs"][node]["images"]:
        query = urllib.parse.urlencode({"filename": img["filename"], "subfolder": img.get("subfolder", ""),
                                        "type": img.get("type", "output")})
        with urllib.request.urlopen(f"{host.url}/view?{query}", timeout=60) as r:
            out.append(np.asarray(Image.open(io.BytesIO(r.read())).convert("RGB")))
    return out


def texts(entry, node):
    return entry["outputs"][node]["text"]


def test_nodes_are_listed_with_list_outputs(host):
    info = host.get("/object_info")
    plan, grid = info["SuperMergerXYZPlan"], info["SuperMergerXYZGrid"]
    assert plan["output_is_list"] == [True, True, True, True, True, False]
    assert plan["output"] == ["MODEL", "CLIP", "INT", "STRING", "STRING", "SUPERMERGER_XYZ_PLAN"]
    assert grid["output_is_list"] == [True, False, False]


def test_alpha_by_seed_renders_six_cells_a_labelled_grid_and_alpha_zero_is_model_a(host, tmp_path):
    entry = host.run(xyz_graph(("alpha", "0,0.5,1"), ("seed", "1,2")))
    cells = images(host, entry, "save")
    assert len(cells) == 6 and all(c.shape == (64, 64, 3) for c in cells)
    (grid,) = images(host, entry, "gsave")
    Image.fromarray(grid).save(tmp_path / "grid.png")
    h, w = grid.shape[:2]
    assert h > 2 * 64 and w > 3 * 64  # the title, X labels above and Y labels left of the 2 × 3 cells
    body = grid[h - 128:, w - 192:]
    for i, cell in enumerate(cells):  # x fastest: alpha 0, 0.5, 1 at seed 1, then at seed 2
        y, x = divmod(i, 3)
        assert np.array_equal(body[y * 64:(y + 1) * 64, x * 64:(x + 1) * 64], cell), i
    summary = texts(entry, "summary")[0]
    assert "grid 1: columns ['alpha = 0', '0.5', '1']; rows ['seed = 1', '2']" in summary
    assert "6 of 6 cells, 3 distinct merges" in summary
    for seed, cell in ((1, cells[0]), (2, cells[3])):
        assert np.array_equal(cell, host.image(host.run(graph(a="mini_a", seed=seed))))
    assert not np.array_equal(cells[0], cells[2])
    recipes = [json.loads(t) for t in texts(entry, "recipes")]
    assert [r["alpha"] for r in recipes] == [0.0, 0.5, 1.0] * 2
    plot_ids = set(re.findall(r"XYZ plot (\d+)", summary))
    listing = host.run({"h": {"class_type": "SuperMergerHistory", "inputs": {
        "id": -1, "search": f"XYZ plot {plot_ids.pop()} ", "match": "and", "listing": 20}},
        "p": {"class_type": "PreviewAny", "inputs": {"source": ["h", 2]}}})
    assert texts(listing, "p")[0].count("XYZ plot") == 3  # each of the three merges, one plot ID


def test_a_seed_only_axis_computes_the_merged_weights_once(host):
    entry = host.run(xyz_graph(("seed", "3,4,5")))
    assert len(images(host, entry, "save")) == 3
    summary = texts(entry, "summary")[0]
    assert "3 of 3 cells, 1 distinct merges, merged weights computed 1 times" in summary, summary


def test_a_bar_plan_gives_two_grids_in_one_prompt(host):
    entry = host.run(xyz_graph(("alpha", "0,1|0.5"), ("seed", "1,2")))
    assert len(images(host, entry, "save")) == 6
    grids = images(host, entry, "gsave")
    assert len(grids) == 2
    cells = images(host, entry, "save")
    for grid, part, (nx, ny) in ((grids[0], cells[:4], (2, 2)), (grids[1], cells[4:], (1, 2))):
        h, w = grid.shape[:2]
        body = grid[h - ny * 64:, w - nx * 64:]
        for i, cell in enumerate(part):
            y, x = divmod(i, nx)
            assert np.array_equal(body[y * 64:(y + 1) * 64, x * 64:(x + 1) * 64], cell)
    summary = texts(entry, "summary")[0]
    assert "columns ['alpha = 0', '1']" in summary and "columns ['alpha = 0.5']" in summary


def test_pinpoint_blocks_change_exactly_the_named_blocks(host):
    g = loaders()
    g["plan"] = plan_node(("pinpoint blocks", "IN01, OUT03-OUT04"), ("alpha", "1"), alpha=0.0)
    g["recipes"] = {"class_type": "PreviewAny", "inputs": {"source": ["plan", 4]}}
    g["sim"] = {"class_type": "SuperMergerAnalysis", "inputs": {"model_a": ["ckA", 0], "model_b": ["plan", 0],
                                                                "mode": "block", "block_method": "mean"}}
    g["table"] = {"class_type": "PreviewAny", "inputs": {"source": ["sim", 0]}}
    entry = host.run(g)
    recipes = [json.loads(t) for t in texts(entry, "recipes")]
    changed = [[SD26[i] for i, v in enumerate(r["weights_alpha"].split(",")) if float(v) != 0] for r in recipes]
    assert changed == [["IN01"], ["OUT03", "OUT04"]]
    for table, named in zip(texts(entry, "table"), changed):  # each cell's merged weights against model A
        scores = {}
        for line in table.splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] in SD26:
                scores[parts[0]] = float(parts[1])
        moved = sorted(b for b, s in scores.items() if s < 100.0)
        assert moved and moved == sorted(b for b in named if b in scores), table  # the mini model lacks OUT04


@pytest.mark.parametrize("axis_type", sorted(SEMANTICS))
def test_every_axis_type_gives_the_cell_recipes_spec_9_3_says(host, axis_type):
    text, other, _ = SEMANTICS[axis_type]
    if axis_type == "merge ID":  # the merge the axis reads: the history's last
        host.run(graph("SuperMergerWeightSum", {"alpha": 0.9, "calcmode": "cosineB"}))
    g = loaders()
    g["el"] = {"class_type": "SuperMergerElemental", "inputs": {"elemental": "IN01::0.1", "extended_xl": False}}
    g["ie"] = {"class_type": "SuperMergerIncludeExclude", "inputs": {"mode": "exclude", "blocks": "VAE",
                                                                     "elements": "attn2", "weights": ["el", 0]}}
    weights = ["ie", 0]
    if axis_type == "random":
        g["dice"] = {"class_type": "SuperMergerDiceRoll", "inputs": {
            "mode": "R", "seed": 1, "alpha": True, "beta": False, "custom": "", "upper": "1", "lower": "0",
            "clamp_upper": "", "clamp_lower": "", "round": 3, "extend_xl": False, "weights": weights}}
        weights = ["dice", 0]
    g["plan"] = plan_node((axis_type, text), other or ("none", ""), seed=7, prompt="a cat", weights=weights)
    g["recipes"] = {"class_type": "PreviewAny", "inputs": {"source": ["plan", 4]}}
    g["seeds"] = {"class_type": "PreviewAny", "inputs": {"source": ["plan", 2]}}
    g["prompts"] = {"class_type": "PreviewAny", "inputs": {"source": ["plan", 3]}}
    entry = host.run(g)
    cells = list(zip([json.loads(t) for t in texts(entry, "recipes")], [int(s) for s in texts(entry, "seeds")],
                     texts(entry, "prompts")))
    check_cells(axis_type, cells, base_seed=7, base_prompt="a cat")
