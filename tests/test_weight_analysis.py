"""History weight analysis (SPEC §14.3): per-block mean and population σ of the α merges really used."""
import statistics

import pytest

from merge_core import DictSource, Inputs, MergeError, Recipe, make_plan
from merge_core.history import History
from merge_core.presets import load_presets
from merge_core.synthetic import tiny_sd1
from merge_core.weight_analysis import parse_ids, weight_stats


def preset(name):
    return [float(x) for x in load_presets()[name].split(",")]


def test_mean_and_population_sigma_of_two_presets_and_a_plain_merge(tmp_path):
    h = History(tmp_path / "h.jsonl")
    h.append(Recipe(model_a="a", model_b="b", weights_alpha="GRAD_V"), family="sd1")
    h.append(Recipe(model_a="a", model_b="b", weights_alpha="FLAT_25"), family="sd1")
    h.append(Recipe(model_a="a", model_b="b", alpha=0.7), family="sd1")  # no block weights: α everywhere
    stats = weight_stats(h.entries())
    cols = list(zip(preset("GRAD_V"), preset("FLAT_25"), [0.7] * 26))
    assert stats.labels[0] == "BASE" and stats.labels[-1] == "OUT11" and len(stats.labels) == 26
    assert stats.mean == pytest.approx([statistics.fmean(c) for c in cols])
    assert stats.std == pytest.approx([statistics.pstdev(c) for c in cols])
    assert stats.rows()[1] == ("IN00",) + tuple(round(x, 3) for x in (stats.mean[1], stats.std[1], 2 * stats.std[1],
                                                                      3 * stats.std[1]))
    assert stats.table_text().startswith("merges 1, 2, 3\nblock\tmean")


def test_dice_merges_give_the_weights_their_merge_used(sd1):
    recipe = Recipe(model_a="a", model_b="b", dice={"mode": "R", "alpha": True}, seed=777)
    plan = make_plan(recipe, Inputs(DictSource(sd1[0], "A"), DictSource(sd1[1], "B")))
    from merge_core.history import Entry

    stats = weight_stats([Entry(1, "t", "n", recipe, family="sd1")])
    assert list(stats.mean) == plan.weights_alpha.as_list() and set(stats.std) == {0.0}


def test_sdxl_26_lists_become_its_20_blocks_and_families_do_not_mix(tmp_path):
    h = History(tmp_path / "h.jsonl")
    h.append(Recipe(model_a="a", model_b="b", weights_alpha="GRAD_V"), family="sdxl")
    h.append(Recipe(model_a="a", model_b="b", weights_alpha=",".join(["0.5"] * 20)))  # family from the count
    stats = weight_stats(h.entries())
    assert len(stats.labels) == 20 and "IN09" not in stats.labels
    h.append(Recipe(model_a="a", model_b="b", weights_alpha="GRAD_V"), family="sd1")
    with pytest.raises(MergeError, match="merge 3.*one kind"):
        weight_stats(h.entries())


def test_an_unrun_random_merge_is_refused_by_id():
    from merge_core.history import Entry

    entry = Entry(9, "t", "n", Recipe(model_a="a", model_b="b", dice={"mode": "U", "alpha": True}), family="sd1")
    with pytest.raises(MergeError, match="merge 9.*seed"):
        weight_stats([entry])


@pytest.mark.parametrize("text, ids", [("3", [3]), ("1-3, 7", [1, 2, 3, 7]), ("-1 -2", [-1, -2]), ("2,,4", [2, 4]),
                                        ("-3--1", [-3, -2, -1])])
def test_id_lists(text, ids):
    assert parse_ids(text) == ids


@pytest.mark.parametrize("text", ["", "x", "5-3", "0-2", "1-x", "-2-3", "-1--3"])
def test_bad_id_lists(text):
    with pytest.raises(MergeError, match="ids"):
        parse_ids(text)


def test_real_merge_recorded_by_the_cli_path_is_analysed(tmp_path):
    from merge_core.history import record
    from merge_core.synthetic import write_model

    write_model(tiny_sd1(1), tmp_path / "a.safetensors")
    write_model(tiny_sd1(2), tmp_path / "b.safetensors")
    recipe = Recipe(model_a=str(tmp_path / "a.safetensors"), model_b=str(tmp_path / "b.safetensors"),
                    weights_alpha="GRAD_A")
    from merge_core.merge import open_inputs

    inputs = open_inputs(recipe)
    try:
        entry = record(History(tmp_path / "h.jsonl"), make_plan(recipe, inputs), inputs, "n", "cli")
    finally:
        inputs.close()
    assert entry.family == "sd1"
    assert list(weight_stats([entry]).mean) == preset("GRAD_A")
