"""Merge history (SPEC §11): sequential IDs, −1/−2 lookup, search, concurrent appends, SuperMerger's CSV."""
import csv
import json
import multiprocessing
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from merge_core import MergeError, Recipe
from merge_core.history import History, table

SM_HEADER = ["ID", "time", "name", "weights alpha", "weights beta", "model A", "model B", "model C", "alpha",
             "beta", "mode", "use MBW", "plus lora", "custum name", "save setting", "use ID"]


def recipe(**kw):
    return Recipe(model_a=kw.pop("a", "a.safetensors"), model_b=kw.pop("b", "b.safetensors"), **kw)


def test_ids_are_sequential_and_minus_one_is_the_last(tmp_path):
    h = History(tmp_path / "h.jsonl")
    first = h.append(recipe(alpha=0.3), "A x 0.7 + B x 0.3")
    second = h.append(recipe(alpha=0.6), "A x 0.4 + B x 0.6")
    assert (first.id, second.id) == (1, 2)  # SPEC §11 oracle: two merges → IDs 1, 2
    assert h.get(-1).id == 2 and h.get(-1).recipe.alpha == 0.6
    assert h.get(-2).id == 1 and h.get(1).recipe == first.recipe
    assert h.get(2).name == "A x 0.4 + B x 0.6"


@pytest.mark.parametrize("merge_id, words", [(-3, "further"), (7, "no merge with ID 7"), (0, "no merge")])
def test_unknown_ids_are_clear_errors(tmp_path, merge_id, words):
    h = History(tmp_path / "h.jsonl")
    h.append(recipe())
    h.append(recipe())
    with pytest.raises(MergeError, match=words):
        h.get(merge_id)


def test_empty_history(tmp_path):
    h = History(tmp_path / "none.jsonl")
    assert h.entries() == [] and h.search("x") == []
    with pytest.raises(MergeError, match="empty"):
        h.get(-1)


def test_full_recipe_round_trips(tmp_path):
    r = recipe(mode="add_difference", calcmode="trainDifference", model_c="c.safetensors", weights_alpha="GRAD_V",
               elemental="IN05:attn2:0.2", include_exclude={"mode": "exclude", "blocks": ["OUT11"], "elements": []},
               adjust="1,0,0,0,0,0,0,0", seed=123, dice={"mode": "R", "alpha": True})
    h = History(tmp_path / "h.jsonl")
    h.append(r, "n", {"a": {"name": "a.safetensors", "sha256": "ab" * 32}}, "node")
    back = History(tmp_path / "h.jsonl").get(-1)
    assert back.recipe == r and back.models["a"]["sha256"] == "ab" * 32 and back.origin == "node"


def test_a_torn_last_line_is_ignored_and_the_next_append_starts_clean(tmp_path):
    path = tmp_path / "h.jsonl"
    h = History(path)
    h.append(recipe())
    with open(path, "a", encoding="utf-8") as f:
        f.write('{"id": 2, "time": "x", "na')  # a crash mid-write
    assert [e.id for e in h.entries()] == [1]
    assert h.append(recipe(alpha=0.9)).id == 2
    assert [e.id for e in h.entries()] == [1, 2] and h.get(-1).recipe.alpha == 0.9


def test_a_corrupt_middle_line_names_the_line(tmp_path):
    path = tmp_path / "h.jsonl"
    h = History(path)
    h.append(recipe())
    with open(path, "a", encoding="utf-8") as f:
        f.write("garbage\n")
    h.append(recipe())
    with pytest.raises(MergeError, match="line 2"):
        h.entries()


def _append_many(path, n, tag):
    h = History(path)
    for i in range(n):
        h.append(recipe(alpha=0.01 * i), f"{tag}-{i}")


def test_concurrent_appends_never_share_an_id(tmp_path):
    path = tmp_path / "h.jsonl"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_append_many, args=(path, 15, f"p{p}")) for p in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    entries = History(path).entries()
    assert [e.id for e in entries] == list(range(1, 61))
    assert sorted(e.name for e in entries) == sorted(f"p{p}-{i}" for p in range(4) for i in range(15))


def test_search_and_or(tmp_path):
    h = History(tmp_path / "h.jsonl")
    h.append(recipe(a="dreamy.safetensors", b="real.safetensors"), "dreamy x 0.5 + real x 0.5")
    h.append(recipe(a="anime.safetensors", b="real.safetensors", calcmode="cosineA"), "anime x 0.5 + real x 0.5")
    h.append(recipe(a="anime.safetensors", b="toon.safetensors"), "anime x 0.5 + toon x 0.5")
    assert [e.id for e in h.search("anime real")] == [2]
    assert [e.id for e in h.search("anime real", "or")] == [3, 2, 1]  # newest first
    assert [e.id for e in h.search("COSINEA")] == [2]  # case-insensitive
    assert [e.id for e in h.search("")] == [3, 2, 1]
    with pytest.raises(MergeError, match="'xor'"):
        h.search("a", "xor")
    assert "anime x 0.5 + toon x 0.5" in table(h.search("toon"))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.text(alphabet="abcxyz _-.", min_size=1, max_size=12), min_size=1, max_size=4))
def test_every_word_of_a_name_finds_its_entry(tmp_path_factory, names):
    h = History(tmp_path_factory.mktemp("h") / "h.jsonl")
    for n in names:
        h.append(recipe(), n)
    for i, n in enumerate(names, 1):
        for word in n.split():
            assert i in [e.id for e in h.search(word)]


def write_sm_csv(path: Path, rows):
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(SM_HEADER)
        w.writerows(rows)


def test_import_supermerger_mergehistory_csv(tmp_path):
    wa = ",".join(["0.5"] * 26)
    rows = [
        ["1", "2024.01.02 03.04.05", "a x 0.7 + b x 0.3", "", "", "abcdef1234", "1234abcdef", "", "0.3", "0.25",
         "Weight sum:A*(1-alpha)+B*alpha", "False", "", "['safetensors']", "[]", "", "normal", "12345", "", "0.3",
         "Off", "[]", ""],
        ["2", "2024.01.02 03.05.00", "a + (b - c) x alpha", wa, "", "abcdef1234", "1234abcdef", "fedcba4321",
         "0.5", "0.2", "Add difference:A+(B-C)*alpha", "True", "", "['safetensors', 'use old calc method']", "[]",
         "IN05:attn2:0.2", "trainDifference", "-1", "1,0,0,0,0,0,0,0", "0.4", "Exclude", "['OUT11', 'VAE']",
         "attn1,ff"],
    ]
    write_sm_csv(tmp_path / "mergehistory.csv", rows)
    h = History(tmp_path / "h.jsonl")
    h.append(recipe())
    new = h.import_supermerger_csv(tmp_path / "mergehistory.csv")
    assert [e.id for e in new] == [2, 3]
    one, two = h.get(2), h.get(3)
    assert one.recipe.mode == "weight_sum" and one.recipe.alpha == 0.3 and one.recipe.seed == 12345
    assert one.recipe.weights_alpha is None and one.models["a"]["sha256"] == "abcdef1234"
    assert "SuperMerger ID 1" in one.name and one.origin == "supermerger" and one.time == "2024.01.02 03.04.05"
    r = two.recipe
    assert (r.mode, r.calcmode, r.model_c, r.weights_alpha) == ("add_difference", "trainDifference", "fedcba4321", wa)
    assert (r.gamma, r.elemental, r.adjust, r.use_old_calc) == (0.4, "IN05:attn2:0.2", "1,0,0,0,0,0,0,0", True)
    assert r.include_exclude == {"mode": "exclude", "blocks": ["OUT11", "VAE"], "elements": ["attn1", "ff"]}


def test_import_rejects_a_bad_row_naming_the_line(tmp_path):
    write_sm_csv(tmp_path / "m.csv", [["1", "t", "n", "", "", "a", "b", "", "zero", "0.2", "Weight sum", "False"]])
    with pytest.raises(MergeError, match="m.csv line 2"):
        History(tmp_path / "h.jsonl").import_supermerger_csv(tmp_path / "m.csv")
    assert not (tmp_path / "h.jsonl").exists() or History(tmp_path / "h.jsonl").entries() == []


def test_entries_are_plain_json_lines(tmp_path):
    path = tmp_path / "h.jsonl"
    History(path).append(recipe(), "x")
    data = json.loads(path.read_text().splitlines()[0])
    assert set(data) == {"id", "time", "name", "recipe", "models", "origin", "family"}
