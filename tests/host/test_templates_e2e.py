"""The templates and the node search as a new user meets them: ComfyUI's frontend in headless Chromium
(tests/web/e2e/templates.e2e.mjs) loads every template of example_workflows from the server's template list,
checks that no two nodes overlap, runs it on the mini checkpoints, and checks again once its outputs are
drawn; the search finds the merge nodes by "merge", "mbw", "block" and "supermerger".

Needs what tests/host/test_web_e2e.py needs (scripts/test-web installs it). SUPERMERGER_TEMPLATE_THUMBS=1 also
rewrites the templates' thumbnails (example_workflows/<name>.jpg) from the screenshots of their runs;
SUPERMERGER_NODE_SIZES=1 rewrites scripts/node_sizes.json, the sizes the template generator lays nodes out by.
"""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from comfy_host import ROOT, build_checkpoint, launch, mini_lora, stop
from test_web_e2e import WEB, _chromium, _missing

SCRIPT = WEB / "e2e" / "templates.e2e.mjs"
TEMPLATES = ROOT / "example_workflows"
pytestmark = pytest.mark.skipif(bool(_missing()), reason=_missing() or "ready")


THUMB = (512, 320)


def _thumbnails(shots) -> None:
    """ComfyUI's template browser shows <name>.jpg beside a custom template: the screenshot of its run, small."""
    from PIL import Image

    for shot in shots.glob("*.jpg"):
        with Image.open(shot) as im:
            im = im.convert("RGB")
            im.thumbnail(THUMB)
            im.save(TEMPLATES / shot.name, quality=80, optimize=True)


@pytest.fixture(scope="module")
def templates_host(tmp_path_factory):
    work = tmp_path_factory.mktemp("templates")
    checkpoints = {name: build_checkpoint("mini_sd15", seed) for name, seed in (("mini_a", 1), ("mini_b", 2),
                                                                                ("mini_c", 3))}
    host, proc, _ = launch(work, checkpoints)
    for seed, lora in enumerate(("lora_a", "lora_b"), 5):  # the LoRA names the LoRA template uses
        mini_lora(work, lora, seed)
    try:
        yield host
    finally:
        stop(proc)


def test_templates_load_without_overlap_run_on_minis_and_search_finds_the_merge_nodes(templates_host, tmp_path):
    out = tmp_path / "templates"
    cmd = ["node", str(SCRIPT), "--url", templates_host.url, "--out", str(out), "--chromium", _chromium()]
    if os.environ.get("SUPERMERGER_NODE_SIZES"):
        cmd += ["--measure"]
    res = subprocess.run(cmd, cwd=WEB, capture_output=True, text=True, timeout=1500)
    results = json.loads((out / "results.json").read_text()) if (out / "results.json").exists() else {}
    if os.environ.get("SUPERMERGER_NODE_SIZES") and results.get("sizes"):
        (ROOT / "scripts" / "node_sizes.json").write_text(json.dumps(dict(sorted(results["sizes"].items())),
                                                                     indent=1) + "\n")
    assert res.returncode == 0, f"browser run failed:\n{res.stdout[-6000:]}\n{res.stderr[-6000:]}"
    if os.environ.get("SUPERMERGER_TEMPLATE_THUMBS"):
        _thumbnails(out)

    names = sorted(p.stem for p in TEMPLATES.glob("*.json"))
    assert sorted(results["templates"]) == names  # every template, as the server lists them
    for name, info in results["templates"].items():
        assert info["title"] and info["description"], name
        assert (TEMPLATES / f"{name}.jpg").is_file(), f"{name} has no thumbnail"
        entry = templates_host.get(f"/history/{info['prompt']}")[info["prompt"]]
        assert entry["status"]["status_str"] == "success"
    assert results["search"]["mbw"][:5] == ["SuperMergerCheckpointMerge", "SuperMergerWeightSum",
                                            "SuperMergerAddDifference", "SuperMergerTripleSum", "SuperMergerSumTwice"]
