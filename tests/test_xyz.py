"""SPEC §9: the XYZ plot's value syntaxes (§9.2, §9.4), the cell semantics of every axis type (§9.3), `|` (§9.6)
and the label texts (§9.5). Expected values are written out by hand from SPEC, never computed by merge_core."""
import random

import pytest
from hypothesis import given, strategies as st

from merge_core import MergeError, Recipe
from merge_core.families import FAMILIES
from merge_core.plan import block_alphas
from xyz_cases import BASE_FIELDS, SEMANTICS, check_cells
from merge_core.xyz import (AXIS_TYPES, Base, axis_labels, grid_title, parse_values, plan_plot, split_parts,
                            wrap_label)

SD26 = ("BASE,IN00,IN01,IN02,IN03,IN04,IN05,IN06,IN07,IN08,IN09,IN10,IN11,M00,"
        "OUT00,OUT01,OUT02,OUT03,OUT04,OUT05,OUT06,OUT07,OUT08,OUT09,OUT10,OUT11").split(",")
ZEROS = ",".join(["0"] * 26)


def base(**fields):
    fields.setdefault("model_a", "a.safetensors")
    fields.setdefault("model_b", "b.safetensors")
    return Base(Recipe(**fields), seed=7, prompt="a cat")


def cells(x, y=("none", ""), z=("none", ""), lookup=None, **fields):
    grids = plan_plot(base(**fields), (x, y, z), lookup, random.Random(0))
    assert len(grids) == 1
    return grids[0].cells


def parse(t, text, others=()):
    return parse_values(t, text, "x_values", others, random.Random(0))


# ----------------------------------------------------------------------- §9.2 value syntaxes and oracles


def test_alpha_oracles_three_merges_and_non_numbers_dropped():
    assert parse("alpha", "0.25,0.5,0.75").values == (0.25, 0.5, 0.75)
    assert parse("alpha", "0.1,abc,0.3").values == (0.1, 0.3)
    assert parse("beta", " 0.2 , x, 1").values == (0.2, 1.0)


def test_alpha_and_beta_pairs_and_single_numbers():
    assert parse("alpha and beta", "0, 0.5 0.1, 0.3 0.4, 0.5").values == ((0, 0), (0.5, 0.1), (0.3, 0.4),
                                                                          (0.5, 0.5))
    with pytest.raises(MergeError, match="x_values: 'q' is not a number"):
        parse("alpha and beta", "0.5, q")


def test_effective_checker_baseline_first_and_newlines_are_commas():
    assert parse("effective elemental checker", "IN00:,IN01:\nIN02:").values == ("", "IN00:", "IN01:", "IN02:")


def test_alpha_paired_with_effective_keeps_its_first_value():
    assert parse("alpha", "0.3,0.6,0.9", others=("effective elemental checker", "none")).values == (0.3,)


def test_mbw_alpha_and_beta_lines_pair_up_and_label_as_spec():
    axis = parse("mbw alpha and beta", "a\nb\nc\nd")
    assert axis.values == (("a", "b"), ("c", "d"))
    assert axis.texts == ("alpha:(a),beta(b)", "alpha:(c),beta(d)")
    with pytest.raises(MergeError, match="in pairs"):
        parse("mbw alpha and beta", "a\nb\nc")


def test_line_and_blank_line_and_whole_text_syntaxes():
    assert parse("prompt", "a cat\n\na dog\n").values == ("a cat", "a dog")
    assert parse("mbw alpha", "GRAD_V\nFLAT_25").values == ("GRAD_V", "FLAT_25")
    assert parse("adjust", "1,0,0,0,0,0,0,0\n0,0,0,0,2,0,0,0").values == ("1,0,0,0,0,0,0,0", "0,0,0,0,2,0,0,0")
    assert parse("prompt2", "a cat,\nsitting\n\na dog").values == ("a cat,\nsitting", "a dog")
    assert parse("elemental", "IN01::0.5\nOUT03::1\n\nM00:attn:0").values == ("IN01::0.5\nOUT03::1", "M00:attn:0")
    assert parse("add elemental", "OUT04::0.3").values == ("OUT04::0.3",)
    assert parse("prompt3", "one, two\n\nthree").values == ("one, two\n\nthree",)
    assert parse("calcmode", "normal, cosineA").values == ("normal", "cosineA")
    assert parse("model_B", "x.safetensors , y.ckpt").values == ("x.safetensors", "y.ckpt")
    assert parse("pinpoint element", "IN01:attn\nOUT03:").values == ("IN01:attn", "OUT03:")


def test_seed_minus_one_is_drawn_once_and_reused_on_every_row():
    got = cells(("seed", "-1,-1,5"), ("alpha", "0,1"))
    seeds = [c.seed for c in got]
    assert seeds[0] != seeds[1] and seeds[2] == 5 and all(0 <= s < 4294967294 for s in seeds)
    assert seeds[:3] == seeds[3:]
    with pytest.raises(MergeError, match="is not a seed"):
        parse("seed", "1,-5")


def test_random_axis_draws_n_dice_seeds():
    axis = parse("random", "4")
    assert len(axis.values) == 4 and len(set(axis.values)) == 4
    with pytest.raises(MergeError, match="number of dice rolls"):
        parse("random", "0.5")


def test_include_exclude_not_means_all_other_choices():
    (value,) = parse("exclude blocks", "NOT IN01 Adjust").values
    assert value == tuple(b for b in SD26 if b != "IN01") + ("VAE",)
    assert parse("include blocks", "IN01 OUT03,M00").values == (("IN01", "OUT03"), ("M00",))
    with pytest.raises(MergeError, match="'IN99' is not a block id"):
        parse("exclude blocks", "IN99")


def test_pinpoint_adjust_all_leaves_out_bri_and_colour_names_label():
    grids = plan_plot(base(), (("pinpoint adjust", "ALL"), ("alpha", "1"), ("none", "")), rng=random.Random(0))
    axis = grids[0].axes[0]
    assert axis.values == ("IN", "OUT", "OUT2", "CONT", "COL1", "COL2", "COL3")
    assert axis.texts[4:] == ("COL1 cyan-red", "COL2 magenta-green", "COL3 yellow-blue")


# ----------------------------------------------------------------------- §9.4 pinpoint blocks


def _positions(weights: str, value: str = "1.0") -> list:
    return [i for i, v in enumerate(weights.split(",")) if v == value]


def test_pinpoint_oracles_on_a_zero_list():
    got = cells(("pinpoint blocks", "IN01, NOT M00 OUT03-OUT06"), ("alpha", "1"), weights_alpha=ZEROS)
    assert _positions(got[0].recipe.weights_alpha) == [2]
    assert _positions(got[1].recipe.weights_alpha) == [i for i in range(26) if i not in (13, 17, 18, 19, 20)]


def test_pinpoint_readme_example_gives_five_columns_and_ranges_work_either_way():
    got = cells(("pinpoint blocks", "IN01, OUT10 OUT11, OUT03-OUT06, OUT07-OUT11, NOT M00 OUT03-OUT06"),
                ("alpha", "1"), weights_alpha=ZEROS)
    assert len(got) == 5
    assert _positions(got[1].recipe.weights_alpha) == [24, 25]
    assert _positions(got[2].recipe.weights_alpha) == [17, 18, 19, 20]
    reverse = cells(("pinpoint blocks", "OUT06-OUT03"), ("alpha", "1"), weights_alpha=ZEROS)
    assert _positions(reverse[0].recipe.weights_alpha) == [17, 18, 19, 20]


def test_pinpoint_without_weights_starts_from_the_slider_alpha_and_each_alpha_value_is_a_row():
    got = cells(("pinpoint blocks", "IN05"), ("alpha", "0.25,1"), alpha=0.0)
    assert [c.recipe.weights_alpha.split(",")[6] for c in got] == ["0.25", "1.0"]
    assert all(_positions(c.recipe.weights_alpha, "0.0") == [i for i in range(26) if i != 6] for c in got)


def test_pinpoint_on_a_beta_axis_sets_the_beta_list():
    (cell,) = cells(("pinpoint blocks", "OUT11"), ("beta", "1"), mode="sum_twice", beta=0.0)
    assert _positions(cell.recipe.weights_beta) == [25] and cell.recipe.weights_alpha is None


def test_pinpoint_all_is_two_grids_in_out():
    grids = plan_plot(base(weights_alpha=ZEROS), (("pinpoint blocks", "ALL"), ("alpha", "1"), ("none", "")))
    assert [len(g.cells) for g in grids] == [14, 12]
    assert _positions(grids[1].cells[0].recipe.weights_alpha) == [14]


def test_pinpoint_errors_name_the_axis():
    with pytest.raises(MergeError, match="pinpoint blocks: needs an alpha or beta axis"):
        cells(("pinpoint blocks", "IN01"), ("seed", "1"))
    with pytest.raises(MergeError, match="x_values: 'IN77' is not a block"):
        cells(("pinpoint blocks", "IN77"), ("alpha", "1"))
    with pytest.raises(MergeError, match="x_values: pinpoint blocks changes a 26-value"):
        cells(("pinpoint blocks", "IN01"), ("alpha", "1"), weights_alpha="0,1")


def test_pinpoint_on_sdxl_uses_its_20_blocks():
    xl = FAMILIES["sdxl"].blocks
    b = Base(Recipe(model_a="a", model_b="b"), 1, "", xl)
    (g,) = plan_plot(b, (("pinpoint blocks", "M00"), ("alpha", "1"), ("none", "")))
    assert _positions(g.cells[0].recipe.weights_alpha) == [xl.index("M00")] and len(xl) == 20


def test_pinpoint_cell_merges_exactly_the_named_blocks():
    """The recipe of a pinpoint cell, planned: IN01 and OUT03…OUT06 at the axis α, every other block at 0."""
    (cell,) = cells(("pinpoint blocks", "IN01 OUT03-OUT06"), ("alpha", "0.7"), weights_alpha=ZEROS)
    alphas = block_alphas(cell.recipe, FAMILIES["sd1"])
    assert [SD26[i] for i, a in enumerate(alphas) if a != 0] == ["IN01", "OUT03", "OUT04", "OUT05", "OUT06"]
    assert {a for a in alphas if a} == {0.7}


# ----------------------------------------------------------------------- §9.3 semantics of every axis type


def test_every_axis_type_has_a_semantics_case():
    assert set(SEMANTICS) == set(AXIS_TYPES) - {"none"}


@pytest.mark.parametrize("axis_type", sorted(SEMANTICS))
def test_axis_type_sets_what_spec_9_3_says(axis_type):
    text, other, _expected = SEMANTICS[axis_type]
    history = {-1: Recipe(model_a="hist_a", model_b="hist_b", alpha=0.9, calcmode="cosineB")}
    got = cells((axis_type, text), other or ("none", ""), lookup=history.__getitem__, **BASE_FIELDS,
                **({"dice": {"mode": "R"}} if axis_type == "random" else {}))
    check_cells(axis_type, [(c.recipe.to_dict(), c.seed, c.prompt) for c in got], base_seed=7, base_prompt="a cat")


def test_beta_axis_keeps_triple_sum_and_tensor_modes():
    assert cells(("beta", "0.4"), mode="triple_sum")[0].recipe.mode == "triple_sum"
    assert cells(("beta", "0.4"), calcmode="tensor")[0].recipe.mode == "weight_sum"


def test_a_later_axis_wins_and_elemental_additions_accumulate_z_y_x():
    got = cells(("add elemental", "OUT01::1"), ("add elemental", "IN02::0"), ("alpha", "0.1"), elemental="M00::0.5")
    assert got[0].recipe.elemental == "M00::0.5,IN02::0,OUT01::1" and got[0].recipe.alpha == 0.1
    got = cells(("alpha", "0.9"), ("merge ID", "3"), lookup={3: Recipe(model_a="h", model_b="i", alpha=0.1)}.get)
    assert got[0].recipe.alpha == 0.9 and got[0].recipe.model_a == "h"


def test_cells_run_x_fastest_then_y_then_z():
    got = cells(("alpha", "0,1"), ("seed", "1,2,3"), ("prompt", "p\nq"))
    assert [c.index for c in got[:3]] == [(0, 0, 0), (1, 0, 0), (0, 1, 0)]
    assert [(c.recipe.alpha, c.seed, c.prompt) for c in got[-2:]] == [(0.0, 3, "q"), (1.0, 3, "q")]
    assert len(got) == 12


def test_errors_empty_x_same_types_bad_values_and_missing_dice():
    with pytest.raises(MergeError, match="x_values: is empty"):
        cells(("alpha", "abc"))
    with pytest.raises(MergeError, match="x_type, y_type: both are 'alpha'"):
        cells(("alpha", "1"), ("alpha", "0"))
    assert len(cells(("add elemental", "IN01::1"), ("add elemental", "IN02::1"))) == 1
    with pytest.raises(MergeError, match="random: needs Dice Roll settings"):
        cells(("random", "2"))
    with pytest.raises(MergeError, match=r"cell \(calcmode = nope\): calcmode: unknown calcmode 'nope'"):
        cells(("calcmode", "nope"))
    with pytest.raises(MergeError, match="x_values: unknown preset 'NOPE'"):
        cells(("mbw alpha", "NOPE"))
    with pytest.raises(MergeError, match="x_type: is none"):
        cells(("none", ""))


def test_empty_y_or_z_turns_the_axis_off():
    got = cells(("alpha", "0,1"), ("seed", " "), ("prompt", ""))
    assert len(got) == 2 and all(c.seed == 7 for c in got)


# ----------------------------------------------------------------------- §9.6 `|`


def test_bar_splits_into_plots_first_segments_first():
    assert split_parts(("a|b", "c", "")) == [("a", "c", ""), ("b", "c", "")]
    assert split_parts(("a|b", "c|d", "e")) == [("a", "c", "e"), ("b", "c", "e"), ("a", "d", "e")]
    grids = plan_plot(base(), (("alpha", "0,0.5|1"), ("seed", "1,2"), ("none", "")))
    assert [[c.recipe.alpha for c in g.cells] for g in grids] == [[0, 0.5, 0, 0.5], [1.0, 1.0]]
    assert [g.part for g in grids] == [0, 1]


@given(st.lists(st.lists(st.text("ab,", max_size=4), min_size=1, max_size=3), min_size=3, max_size=3))
def test_bar_parts_count_and_each_segment_appears(segments):
    texts = tuple("|".join(s) for s in segments)
    parts = split_parts(texts)
    assert len(parts) == 1 + sum(len(s) - 1 for s in segments)
    for axis, segs in enumerate(segments):
        assert {p[axis] for p in parts} == set(segs)


# ----------------------------------------------------------------------- §9.5 labels


def test_first_label_names_the_type_the_others_show_values():
    grids = plan_plot(base(), (("alpha", "0,0.5"), ("effective elemental checker", "IN01:"), ("none", "")))
    x, y, _ = grids[0].axes
    assert axis_labels(x) == ["alpha = 0"]  # α paired with the checker keeps one value
    assert axis_labels(y) == ["effective = ", "IN01:"]
    grids = plan_plot(base(), (("seed", "1,2"), ("none", ""), ("none", "")))
    assert axis_labels(grids[0].axes[0]) == ["seed = 1", "2"]


def test_long_labels_wrap_after_a_comma():
    text = "mbw alpha = 0,1,1,1,1,0,0,0,0,0,0,0,0,0"
    assert wrap_label(text) == "mbw alpha = 0,1,1,1,1,0,\n0,0,0,0,0,0,0,0"
    assert wrap_label("short, label") == "short, label"
    assert wrap_label("a" * 30) == "a" * 30  # no comma: nothing to break at


@given(st.text(alphabet="ab, ", max_size=80))
def test_wrapping_only_adds_line_breaks_after_commas(text):
    wrapped = wrap_label(text)
    assert wrapped.replace(",\n", ",") == text


def test_title_shows_the_formula_with_the_axes_as_x_and_y():
    grids = plan_plot(base(mode="sum_twice"), (("alpha", "0,1"), ("beta", "0,1"), ("none", "")))
    assert grid_title(grids[0].cells[0].recipe, grids[0].axes) == (
        "(a x (1-alpha) + b x alpha) x (1-beta) + a x beta\nalpha = X, beta = Y")
