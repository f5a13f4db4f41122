"""The editor routes' logic without ComfyUI (nodes/web_api.py, merge_core/editor.py): the block tables and
presets the panel is built from, a checkpoint's family from its header, and the history browser's pages,
records and charts with their input checks. The JavaScript side of the same data is tested in tests/web."""
import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from merge_core import MergeError, Recipe
from merge_core.editor import editor_data, family_of_file, family_tables, preset_list
from merge_core.families import FAMILIES, XL_CLIPG_KEY
from merge_core.history import History
from merge_core.presets import load_presets
from merge_core.synthetic import sd1_layout, sdxl_layout
from merge_core.weights import parse_block_weights
from nodes import web_api

ROOT = Path(__file__).resolve().parent.parent
CONTEXT_KEY = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"


# ---------------------------------------------------------------------------------------------- block tables

def test_tables_give_every_family_its_blocks_and_list_lengths():
    t = family_tables()
    assert set(t) == {"sd1", "sd2", "sdxl", "flux"}
    assert t["sd1"]["blocks"][:2] == ["BASE", "IN00"] and len(t["sd1"]["blocks"]) == 26
    assert t["sdxl"]["weight_counts"] == [20, 26, 110]
    assert t["flux"]["weight_counts"] == [61] and t["flux"]["blocks"][:3] == ["CLIP", "T5", "IN"]
    assert "extended" not in t["sd1"] and len(t["sdxl"]["extended"]) == 110
    assert json.loads(json.dumps(t)) == t  # plain JSON


def test_sdxl_keeps_the_sd_positions_supermerger_keeps():
    # SPEC §4.3 oracle: weighttoxl([1..25]) = [1..9, 13..22] (BASE, position 0, kept in front).
    assert family_tables()["sdxl"]["from_sd26"] == [0, *range(1, 10), *range(13, 23)]


def test_fine_blocks_belong_to_the_blocks_spec_names():
    fine = family_tables()["sdxl"]["fine_coarse"]
    # SPEC §3.3 examples: IN411 → IN04, IN41 → IN04, MID103 → M00, OUT22 → OUT02; fixed names of rules 2–5.
    assert [fine[n] for n in ("IN411", "IN41", "MID103", "OUT22")] == ["IN04", "IN04", "M00", "OUT02"]
    assert [fine[n] for n in ("CLIPL", "CLIPG", "VAE", "TIME", "LABEL", "OUT9", "IN0")] == \
        ["BASE", "BASE", "BASE", "IN00", "IN00", "OUT08", "IN00"]
    assert list(fine) == list(FAMILIES["sdxl"].extended)
    assert set(fine.values()) == set(FAMILIES["sdxl"].blocks)


def test_presets_are_served_in_file_order_with_their_length_and_randomness():
    listed = preset_list()
    shipped = load_presets()
    assert [p["name"] for p in listed] == list(shipped)
    assert all(p["text"] == shipped[p["name"]].strip() and p["count"] == 26 for p in listed)
    assert [p["name"] for p in listed if p["random"]] == ["ALL_R", "ALL_U", "ALL_X"]
    own = preset_list({"MINE": "1,2,3", "RND": "R,0"})
    assert own == [{"name": "MINE", "text": "1,2,3", "count": 3, "random": False},
                   {"name": "RND", "text": "R,0", "count": 2, "random": True}]


def test_the_js_fixture_is_what_the_route_serves():
    """tests/web/fixtures/editor.json feeds the JavaScript unit tests; regenerate it with
    `.venv/bin/python tests/web/make_fixture.py` when block tables or presets change."""
    fixture = json.loads((ROOT / "tests" / "web" / "fixtures" / "editor.json").read_text(encoding="utf-8"))
    assert fixture == json.loads(json.dumps(editor_data())), "stale fixture: run tests/web/make_fixture.py"


@pytest.mark.skipif(shutil.which("node") is None, reason="Node.js is not installed: the JavaScript side is not checked")
def test_the_panel_reads_lists_as_the_engine_does(tmp_path):
    """Every text the engine accepts the panel reads to the same numbers, and every text it refuses the panel
    shows as an error (web/js/weights.js against merge_core.weights.parse_block_weights)."""
    texts = {
        "sd1": ["GRAD_V", " 0, 1., .5,1e-1 ," + ",".join(["0.25"] * 22), ",".join(["1"] * 26) + ",",
                ",".join(["0"] * 25 + ["R"]), ",".join(["0x1"] * 26), "1.5", "NOPE", ",".join(["-2"] * 26),
                ",".join(["1"] * 20)],
        "sdxl": ["COSINE", ",".join(map(str, range(20))), ",".join(map(str, range(26))), ",".join(["0.5"] * 110),
                 ",".join(["1"] * 61)],
        "flux": [",".join(["0.1"] * 61), "GRAD_A"],
    }
    script = tmp_path / "read.mjs"
    script.write_text(
        "import * as W from %s;\n"
        "import { readFileSync } from 'node:fs';\n"
        "const data = JSON.parse(readFileSync(%s, 'utf8'));\n"
        "const cases = JSON.parse(readFileSync(0, 'utf8'));\n"
        "const out = {};\n"
        "for (const [fam, list] of Object.entries(cases)) out[fam] = list.map((t) => {\n"
        "  const r = W.readList(t, W.NO_PRESET, W.familyTable(data, fam), data.presets);\n"
        "  return r.status === 'ok' ? (r.layout === 'fine' ? ['fine', r.tokens.map(Number)]\n"
        "    : ['coarse', r.tokens.map(Number)]) : [r.status, null];\n"
        "});\n"
        "console.log(JSON.stringify(out));\n" % (json.dumps((ROOT / "web" / "js" / "weights.js").as_uri()),
                                                 json.dumps(str(ROOT / "tests" / "web" / "fixtures" / "editor.json"))))
    res = subprocess.run(["node", str(script)], input=json.dumps(texts), capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    js = json.loads(res.stdout)
    for fam, cases in texts.items():
        for text, (status, values) in zip(cases, js[fam]):
            try:
                bw = parse_block_weights(text, FAMILIES[fam], "w")
            except MergeError:
                assert status == "error", f"{fam} {text!r}: engine refuses, panel reads {status}"
                continue
            assert status in ("coarse", "fine"), f"{fam} {text!r}: engine reads it, panel says {status}"
            assert values == bw.as_list(), f"{fam} {text!r}"


# ---------------------------------------------------------------------------------------------- family of a file

def _write(path, keys, shapes=None):
    shapes = shapes or {}
    save_file({k: torch.zeros(shapes.get(k, (1,)), dtype=torch.float16) for k in keys}, str(path))
    return path


@pytest.mark.parametrize("name, keys, shapes, family", [
    ("sd1", list(sd1_layout())[:5] + ["model.diffusion_model.input_blocks.0.0.weight"], {}, "sd1"),
    ("sd2_unet_only", ["model.diffusion_model.input_blocks.0.0.weight", CONTEXT_KEY], {CONTEXT_KEY: (4, 1024)}, "sd2"),
    ("sd1_unet_only", ["model.diffusion_model.input_blocks.0.0.weight", CONTEXT_KEY], {CONTEXT_KEY: (4, 768)}, "sd1"),
    ("sdxl", [XL_CLIPG_KEY, "model.diffusion_model.input_blocks.0.0.weight"], {}, "sdxl"),
    ("flux", ["model.diffusion_model.double_blocks.0.img_attn.qkv.weight"], {}, "flux"),
])
def test_family_from_the_header(tmp_path, name, keys, shapes, family):
    assert family_of_file(_write(tmp_path / f"{name}.safetensors", keys, shapes)) == family


def test_family_reads_the_header_only(tmp_path):
    """A 5 GB checkpoint (sparse here: its data region holds nothing) is classified in well under a second."""
    keys = list(sdxl_layout())
    header = {}
    offset = 0
    for k in keys:
        header[k] = {"dtype": "F16", "shape": [1024, 1024], "data_offsets": [offset, offset + 2 * 1024 * 1024]}
        offset += 2 * 1024 * 1024
    raw = json.dumps(header).encode()
    path = tmp_path / "big_xl.safetensors"
    with open(path, "wb") as f:
        f.write(len(raw).to_bytes(8, "little") + raw)
        f.truncate(8 + len(raw) + offset)
    assert path.stat().st_size > 5e9
    t0 = time.perf_counter()
    assert family_of_file(path) == "sdxl"
    assert time.perf_counter() - t0 < 1.0


def test_unreadable_files_say_why(tmp_path):
    ckpt = tmp_path / "old.ckpt"
    ckpt.write_bytes(b"PK")
    with pytest.raises(MergeError, match="not a .safetensors file.*choose the family on the panel"):
        family_of_file(ckpt)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x05\x00\x00\x00\x00\x00\x00\x00{nope")
    with pytest.raises(MergeError, match="not JSON"):
        family_of_file(bad)
    other = _write(tmp_path / "vae.safetensors", ["encoder.conv_in.weight"])
    with pytest.raises(MergeError, match="not a Stable Diffusion"):
        family_of_file(other)
    answer = web_api.model_family(str(other), "vae.safetensors")
    assert answer["family"] is None and "not a Stable Diffusion" in answer["reason"]
    assert web_api.model_family(str(_write(tmp_path / "x.safetensors", [XL_CLIPG_KEY])), "x.safetensors") == \
        {"name": "x.safetensors", "family": "sdxl", "label": "SDXL"}


def test_a_model_is_named_from_comfyuis_list_never_by_path():
    names = {"checkpoints": ["a.safetensors", "sub/b.safetensors"], "diffusion_models": ["flux.safetensors"]}
    pick = lambda **q: web_api.listed_name(q, names.__getitem__)  # noqa: E731
    assert pick(name="sub/b.safetensors") == ("checkpoints", "sub/b.safetensors")
    assert pick(name="flux.safetensors", folder="diffusion_models") == ("diffusion_models", "flux.safetensors")
    for query, status, words in [({"name": "../a.safetensors"}, 404, "not in ComfyUI's checkpoints list"),
                                 ({"name": "/etc/passwd"}, 404, "not in"),
                                 ({"name": "a.safetensors", "folder": "../../"}, 400, "folder must be one of"),
                                 ({"name": "a.safetensors", "folder": "loras"}, 400, "folder must be one of"),
                                 ({}, 400, "name is required"),
                                 ({"name": "x" * 2000}, 400, "longer than")]:
        with pytest.raises(web_api.ApiError, match=words) as e:
            pick(**query)
        assert e.value.status == status


# ---------------------------------------------------------------------------------------------- history routes

@pytest.fixture
def history(tmp_path):
    h = History(tmp_path / "history.jsonl")
    for i in range(1, 31):
        recipe = Recipe(model_a=f"model_{i}.safetensors", model_b="shared_b.safetensors",
                        mode="add_difference" if i % 3 == 0 else "weight_sum", alpha=i / 100,
                        model_c="c.safetensors" if i % 3 == 0 else None,
                        weights_alpha="GRAD_V" if i % 5 == 0 else None)
        h.append(recipe, f"merge {i}", {"a": {"name": f"model_{i}.safetensors", "sha256": "ab" * 32}},
                 "in-graph" if i % 4 == 0 else "checkpoint", "sd1")
    return h


def test_pages_are_newest_first_and_bounded(history):
    entries = history.entries()
    first = web_api.history_page(entries, {})
    assert first["total"] == first["all"] == 30 and first["limit"] == web_api.PAGE_DEFAULT
    assert [e["id"] for e in first["entries"]] == list(range(30, 30 - web_api.PAGE_DEFAULT, -1))
    second = web_api.history_page(entries, {"offset": "25", "limit": "25"})
    assert [e["id"] for e in second["entries"]] == [5, 4, 3, 2, 1]
    assert web_api.history_page(entries, {"offset": "40"})["entries"] == []
    row = web_api.history_page(entries, {"limit": "1"})["entries"][0]
    assert row == {"id": 30, "time": entries[-1].time, "name": "merge 30", "origin": "checkpoint", "family": "sd1",
                   "models": {"a": "model_30.safetensors", "b": "shared_b.safetensors", "c": "c.safetensors"},
                   "mode": "add_difference", "calcmode": "normal", "alpha": 0.3, "beta": 0.25,
                   "weights_alpha": "GRAD_V", "weights_beta": None, "rerunnable": True}


@pytest.mark.parametrize("query, words", [
    ({"limit": "0"}, "limit must be between 1 and 100"), ({"limit": "101"}, "limit must be between 1 and 100"),
    ({"limit": "ten"}, "limit must be a whole number"), ({"offset": "-1"}, "offset must be between"),
    ({"offset": "1.5"}, "offset must be a whole number"), ({"match": "xor"}, "match must be 'and' or 'or'"),
    ({"q": "x" * 201}, "q is longer than 200"), ({"files_only": "maybe"}, "files_only must be true or false"),
])
def test_bad_page_requests_are_refused_with_a_reason(history, query, words):
    with pytest.raises(web_api.ApiError, match=words) as e:
        web_api.history_page(history.entries(), query)
    assert e.value.status == 400


def test_search_takes_supermergers_words_with_and_or(history):
    entries = history.entries()
    ids = lambda **q: [e["id"] for e in web_api.history_page(entries, {"limit": "100", **q})["entries"]]  # noqa: E731
    assert ids(q="add_difference GRAD_V") == [30, 15]
    assert ids(q="model_7.safetensors model_8.", match="or") == [8, 7]
    assert ids(q="MODEL_7.") == [7]
    assert ids(q="add_difference", files_only="true") == [i for i in range(30, 0, -1) if i % 3 == 0 and i % 4]
    assert ids(q="nothing-like-this") == []


def test_one_record_by_id_with_its_full_recipe(history):
    entries = history.entries()
    got = web_api.history_entry(entries, {"id": "15"})
    assert got["id"] == 15 and Recipe.from_dict(got["recipe"]) == history.get(15).recipe
    assert got["models"]["a"]["sha256"] == "ab" * 32 and got["summary"]["weights_alpha"] == "GRAD_V"
    assert web_api.history_entry(entries, {"id": "-1"})["id"] == 30
    for query, status, words in [({"id": "31"}, 404, "no merge with ID 31"), ({"id": "-31"}, 404, "further back"),
                                 ({}, 400, "id is required"), ({"id": "0"}, 400, "id is required"),
                                 ({"id": "1; rm"}, 400, "whole number"), ({"id": "1e3"}, 400, "whole number"),
                                 ({"id": str(10 ** 12)}, 400, "between")]:
        with pytest.raises(web_api.ApiError, match=words.replace("further back", "goes back further")) as e:
            web_api.history_entry(entries, query)
        assert e.value.status == status
    with pytest.raises(web_api.ApiError, match="history is empty"):
        web_api.history_entry([], {"id": "1"})


def test_chart_series_are_the_alphas_each_merge_gave_its_blocks(history):
    data = web_api.block_weight_series(history.entries(), {"ids": "5, 6,5"})
    assert data["labels"] == list(FAMILIES["sd1"].blocks)
    grad_v = [float(x) for x in load_presets()["GRAD_V"].split(",")]
    assert data["series"] == [{"id": 5, "name": "merge 5", "values": grad_v},
                              {"id": 6, "name": "merge 6", "values": [0.06] * 26}]
    for ids, words in [("", "ids is required"), ("1,x", "whole number"), (",".join(map(str, range(1, 22))),
                       "at most 20 merges")]:
        with pytest.raises(web_api.ApiError, match=words):
            web_api.block_weight_series(history.entries(), {"ids": ids})


def test_chart_of_merges_of_two_families_is_refused(tmp_path):
    h = History(tmp_path / "h.jsonl")
    h.append(Recipe(model_a="a", model_b="b"), "sd", family="sd1")
    h.append(Recipe(model_a="a", model_b="b"), "xl", family="sdxl")
    with pytest.raises(web_api.ApiError, match="compare merges of one kind") as e:
        web_api.block_weight_series(h.entries(), {"ids": "1,2"})
    assert e.value.status == 400


def test_the_reader_parses_the_file_again_only_when_it_changed(history, monkeypatch):
    reader = web_api.HistoryReader(lambda: history)
    calls = []
    real = History.entries
    monkeypatch.setattr(History, "entries", lambda self: calls.append(1) or real(self))
    assert len(reader.entries()) == 30 and len(reader.entries()) == 30
    assert len(calls) == 1
    history.append(Recipe(model_a="a", model_b="b"), "new")
    calls.clear()
    assert len(reader.entries()) == 31 and len(reader.entries()) == 31 and len(calls) == 1
    assert web_api.HistoryReader(lambda: History(history.path.with_name("none.jsonl"))).entries() == []
