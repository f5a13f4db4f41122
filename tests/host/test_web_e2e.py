"""The editor extension end to end: a real ComfyUI with the pack, driven in headless Chromium by
tests/web/e2e/editor.e2e.mjs (playwright-core from npm, the machine's own chromium). The browser script checks
the UI step by step; this test starts the server, hands it a history to browse, and checks the images: what
the panel wrote renders the same when queued through the API with no browser, and the history entry loaded
into the graph renders the same again.

Needs COMFYUI_PATH (like every host test), Node.js, chromium, and `npm ci` in tests/web (scripts/test-web does
all of it). SUPERMERGER_SCREENSHOTS=docs/images also writes the README's screenshots.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from comfy_host import ROOT, build_checkpoint, launch, sampler, stop

WEB = ROOT / "tests" / "web"
SCRIPT = WEB / "e2e" / "editor.e2e.mjs"


def _chromium():
    return os.environ.get("SUPERMERGER_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def _missing() -> str:
    if shutil.which("node") is None:
        return "Node.js is not installed (scripts/test-web installs what the browser tests need)"
    if not (WEB / "node_modules" / "playwright-core").is_dir():
        return "playwright-core is not installed: run `npm ci` in tests/web (scripts/test-web does)"
    if _chromium() is None:
        return "chromium is not installed (Debian: apt-get install chromium; scripts/test-web does)"
    return ""


pytestmark = pytest.mark.skipif(bool(_missing()), reason=_missing() or "ready")


HEADER_ONLY = {  # a few key names of each family, for checkpoints whose header is all the panel reads
    "tiny_sdxl": ("conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.weight",
                  "model.diffusion_model.label_emb.0.0.weight", "model.diffusion_model.input_blocks.0.0.weight"),
    "tiny_flux": ("model.diffusion_model.double_blocks.0.img_attn.qkv.weight",
                  "model.diffusion_model.single_blocks.0.linear1.weight"),
}


def _header_only(folder: Path, name: str) -> Path:
    """A checkpoint with a family's key names and one-value tensors: the family route reads its header; nothing
    ever loads it."""
    import torch
    from safetensors.torch import save_file

    path = folder / f"{name}.safetensors"
    save_file({k: torch.zeros(1) for k in HEADER_ONLY[name]}, str(path))
    return path


EARLIER = 22  # merges in the history before the browser opens


def _earlier_merges(work: Path) -> None:
    """A few merges recorded before the browser opens, so the history tab has something to page, search and
    chart besides the merge the test runs."""
    sys.path.insert(0, str(ROOT))
    from merge_core import Recipe
    from merge_core.history import History

    h = History(work / "user" / "supermerger" / "history.jsonl")
    for i, (mode, preset, calcmode) in enumerate([("weight_sum", "GRAD_A", "normal"), ("add_difference", "COSINE", "trainDifference"),
                                                  ("weight_sum", "SMOOTHSTEP", "cosineA"), ("sum_twice", "WRAP12", "normal")]):
        r = Recipe(model_a="mini_a.safetensors", model_b="mini_b.safetensors", mode=mode, calcmode=calcmode,
                   model_c="mini_c.safetensors" if mode != "weight_sum" else None, alpha=0.3 + i / 10,
                   weights_alpha=preset)
        h.append(r, f"earlier merge {i + 1}", {"a": {"name": "mini_a.safetensors"}, "b": {"name": "mini_b.safetensors"}},
                 "checkpoint", "sd1")
    for i in range(EARLIER - 4):  # enough for a second page
        h.append(Recipe(model_a="mini_b.safetensors", model_b="mini_a.safetensors", alpha=i / 20), f"plain merge {i + 1}",
                 {}, "checkpoint", "sd1")


@pytest.fixture(scope="module")
def web_host(tmp_path_factory):
    work = tmp_path_factory.mktemp("web")
    checkpoints = {name: build_checkpoint("mini_sd15", seed) for name, seed in (("mini_a", 1), ("mini_b", 2))}
    folder = tmp_path_factory.mktemp("header_only")
    checkpoints.update({name: _header_only(folder, name) for name in HEADER_ONLY})
    _earlier_merges(work)
    host, proc, _ = launch(work, checkpoints)
    try:
        yield host
    finally:
        stop(proc)


def _api_render(weights_alpha: str, weights_beta: str, tag: str) -> dict:
    """The same render as the browser's graph, as an API prompt: no browser involved."""
    g = {"bw": {"class_type": "SuperMergerBlockWeights",
                "inputs": {"weights_alpha": weights_alpha, "preset_alpha": "(none)", "weights_beta": weights_beta,
                           "preset_beta": "(none)"}},
         "m": {"class_type": "SuperMergerCheckpointMerge",
               "inputs": {"model_a": "mini_a.safetensors", "model_b": "mini_b.safetensors", "model_c": "(none)",
                          "mode": "weight_sum", "calcmode": "normal", "alpha": 0.5, "beta": 0.25, "gamma": 0.3,
                          "weights_alpha": "", "weights_beta": "", "elemental": "", "include_exclude": "off",
                          "blocks": "", "elements": "", "adjust": "", "use_old_calc": False, "merge_vae": True,
                          "cache_models": 2, "weights": ["bw", 0]}}}
    g.update(sampler(["m", 0], ["m", 1], ["m", 2], seed=0))
    g["save"]["inputs"]["filename_prefix"] = tag
    return g


def test_editor_end_to_end(web_host, tmp_path):
    out = tmp_path / "e2e"
    cmd = ["node", str(SCRIPT), "--url", web_host.url, "--out", str(out), "--chromium", _chromium()]
    shots = os.environ.get("SUPERMERGER_SCREENSHOTS")
    if shots:
        cmd += ["--shots", str(Path(shots).resolve())]
    res = subprocess.run(cmd, cwd=WEB, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, f"browser run failed:\n{res.stdout[-6000:]}\n{res.stderr[-6000:]}"
    results = json.loads((out / "results.json").read_text())

    first = web_host.get(f"/history/{results['first']}")[results["first"]]
    rerun = web_host.get(f"/history/{results['rerun']}")[results["rerun"]]
    image = web_host.image(first)
    assert image.shape[:2] == (64, 64) and image.std() > 1  # a real picture, not a blank
    # The history entry loaded into the graph renders the same merge again.
    assert np.array_equal(web_host.image(rerun), image)

    # What the panel wrote is all the node needs: the same text queued through the API gives the same image.
    alpha = results["final_alpha"]
    api = web_host.run(_api_render(alpha, alpha, "api"))
    assert np.array_equal(web_host.image(api), image)

    # Saved workflows carry the node's plain text and nothing of the panel.
    bw = next(n for n in results["saved_workflow"]["nodes"] if n["type"] == "SuperMergerBlockWeights")
    assert bw["widgets_values"] == [alpha, "(none)", alpha, "(none)"]
    recipe = web_host.get(f"/supermerger/history/entry?id={results['merge_id']}")["recipe"]
    assert recipe["weights_alpha"] == alpha and recipe["model_a"] == "mini_a.safetensors"
