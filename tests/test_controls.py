"""SPEC §5–§8: Include/Exclude, Adjust, elemental merge and the dice roll, all compiled into the plan."""
import pytest
import torch
from hypothesis import given, settings, strategies as st

from helpers import merge
from merge_core import MergeError, Recipe, build_plan
from merge_core.adjust import ADJUST_KEYS, fineman, parse_adjust
from merge_core.dice import DiceSettings, random_table, rewrite
from merge_core.elemental import parse_elemental
from merge_core.families import FAMILIES
from merge_core.inex import compile_inex
from merge_core.plan import MERGE, ModelInfo
from merge_core.synthetic import sd1_layout, sdxl_layout

SD1 = FAMILIES["sd1"]
SD_BLOCKS = SD1.dice_blocks
SDXL = FAMILIES["sdxl"]
D = "model.diffusion_model."


def info(layout, name="m"):
    return ModelInfo(name, list(layout), lambda k: layout[k], lambda k: torch.float16)


SD1_INFO = info(sd1_layout(scale=1 / 40, text_layers=2, vocab=64))
XL_INFO = info(sdxl_layout(scale=1 / 40, text_layers=(2, 10), vocab=64))


def plan(model=SD1_INFO, **fields):
    recipe = Recipe(model_a="A", model_b="B", **fields)
    return build_plan(recipe, model, model, model)


def alphas(p):
    return {s.key: s.alpha for s in p.steps if s.action == MERGE}


def block(family, key):
    return family.block_of(key).coarse


# Include / Exclude (§5) ------------------------------------------------------------------------------

def test_exclude_out03_keeps_out03_as_a_and_merges_the_rest(sd1):
    a, b, _ = sd1
    out = merge(a, b, alpha=1.0, include_exclude={"mode": "exclude", "blocks": ["OUT03"]})
    for k in a:
        if "model" in k and ("weight" in k or "bias" in k) and k in b:
            expect = a[k] if block(SD1, k) == "OUT03" else b[k]
            assert torch.equal(out[k], expect), k


def test_include_out03_and_attn2_elements_merges_only_those(sd1):
    a, b, _ = sd1
    out = merge(a, b, alpha=1.0, include_exclude={"mode": "include", "blocks": ["OUT03"], "elements": ["attn2"]})
    for k in a:
        if "model" in k and ("weight" in k or "bias" in k):
            merged = block(SD1, k) == "OUT03" or "attn2" in k
            assert torch.equal(out[k], b[k] if merged else a[k]), k
    assert torch.equal(out[D + "input_blocks.1.0.in_layers.2.weight"], a[D + "input_blocks.1.0.in_layers.2.weight"])


def test_exclude_vae_keeps_every_vae_key(sd1):
    a, b, _ = sd1
    out = merge(a, b, alpha=1.0, include_exclude={"mode": "exclude", "blocks": ["VAE"]})
    assert all(torch.equal(out[k], a[k]) for k in a if k.startswith("first_stage_model."))
    assert torch.equal(out[D + "out.2.weight"], b[D + "out.2.weight"])


def test_excluded_keys_are_not_adjusted(sd1):
    a, b, _ = sd1
    out = merge(a, b, alpha=0.5, adjust="3,3,3,3,3,3,3,3", include_exclude={"mode": "exclude", "blocks": ["Adjust"]})
    assert all(torch.equal(out[k], a[k]) for k in ADJUST_KEYS)


def test_fine_xl_names_in_elements_address_fine_blocks():
    p = plan(XL_INFO, alpha=1.0, include_exclude={"mode": "include", "elements": ["IN411"]})
    merged = {s.key for s in p.steps if s.action == MERGE}
    assert merged and all(SDXL.block_of(k).fine == "IN411" for k in merged)


def test_unknown_include_block_is_a_clear_error():
    with pytest.raises(MergeError, match="unknown block 'OUT99'"):
        plan(include_exclude={"mode": "exclude", "blocks": ["OUT99"]})


# Adjust (§6) -----------------------------------------------------------------------------------------

def test_fineman_oracles():
    sd = fineman(parse_adjust("1,2,3,4,5,6,7,8"), "sd1")
    assert sd[:5] == pytest.approx([0.99, 1.02, 0.98, 1.04, 0.97])
    assert sd[5] == pytest.approx([0.08, 0.18, 0.0133333333, 0.0866666667])
    xl = fineman(parse_adjust("1,2,3,4,5,6,7,8"), "sdxl")
    assert xl[:5] == pytest.approx([0.99, 1.02, 0.98, 1.04, 0.97]) and xl[5] == pytest.approx([0.08, -0.18, 0.02, 0.1])
    assert fineman(parse_adjust("0,0,0,0,5,0,0,0"), "sd1")[5] == pytest.approx([0, -0.1, 0.0333333333, 0.0666666667])
    assert fineman(parse_adjust("0,0,0,0,5,0,0,0"), "sdxl")[5] == pytest.approx([0, 0, 0, 0.1])


@pytest.mark.parametrize("text", ["", "0,0,0,0,0,0,0,0", "0,0,0", "5"])
def test_adjust_off(text):
    assert parse_adjust(text) is None


def test_adjust_is_applied_after_the_merge_on_the_six_keys(sd1):
    a, b, _ = sd1
    out = merge(a, b, alpha=0.5, adjust="1,2,3,4,5,6,7,8")
    plain = merge(a, b, alpha=0.5)
    f = fineman(parse_adjust("1,2,3,4,5,6,7,8"), "sd1")
    for i, k in enumerate(ADJUST_KEYS[:5]):
        assert torch.equal(out[k], plain[k] * f[i]), k
    assert torch.allclose(out[ADJUST_KEYS[5]], plain[ADJUST_KEYS[5]] + torch.tensor(f[5]), atol=1e-7)
    other = D + "out.0.weight"
    assert other in ADJUST_KEYS
    untouched = "first_stage_model.decoder.conv_out.weight"
    assert torch.equal(out[untouched], plain[untouched])


def test_adjust_applies_at_alpha_zero_too(sd1):
    a, b, _ = sd1
    out = merge(a, b, alpha=0.0, adjust="0,0,0,0,5,0,0,0")
    assert torch.allclose(out[ADJUST_KEYS[5]], a[ADJUST_KEYS[5]] + torch.tensor([0, -0.1, 1 / 30, 2 / 30]), atol=1e-7)
    assert torch.equal(out[ADJUST_KEYS[0]], a[ADJUST_KEYS[0]])  # factor 1 leaves it as it is


def test_train_difference_b_equals_c_keys_are_not_adjusted(sd1):
    a, b, _ = sd1
    out = merge(a, b, b, calcmode="trainDifference", alpha=1.0, adjust="5,5,5,5,5,5,5,5")
    assert all(torch.equal(out[k], a[k]) for k in ADJUST_KEYS)


# Elemental (§7) --------------------------------------------------------------------------------------

def test_elemental_oracle_later_entries_win():
    p = alphas(plan(alpha=0.0, elemental="OUT03:attn2:0.5,OUT03:attn2.to_k:0.25,NOT OUT03:attn:1"))
    for k, a in p.items():
        blk = block(SD1, k)
        if blk == "OUT03" and "attn2.to_k" in k:
            assert a == 0.25, k
        elif blk == "OUT03" and "attn2" in k:
            assert a == 0.5, k
        elif blk == "OUT03":
            assert a == 0.0, k
        elif "attn" in k:
            assert a == 1.0, k
        else:
            assert a == 0.0, k


def test_elemental_not_elements_and_ranges():
    p = alphas(plan(alpha=0.1, elemental="OUT03:NOT attn proj:0.3"))
    for k, a in p.items():
        hit = block(SD1, k) == "OUT03" and "attn" not in k and "proj" not in k
        assert a == (0.3 if hit else 0.1), k
    p = alphas(plan(alpha=0.1, elemental="OUT04-OUT02::0.5\nIN01::0.7"))
    for k, a in p.items():
        blk = block(SD1, k)
        assert a == (0.5 if blk in ("OUT02", "OUT03", "OUT04") else 0.7 if blk == "IN01" else 0.1), k


def test_elemental_overrides_block_weights_but_never_beta():
    p = plan(mode="sum_twice", weights_alpha="ALL_B", weights_beta="FLAT_25", elemental="M00::0.3")
    for s in p.merged():
        assert s.beta == (0.0 if s.block == "BASE" else 0.25)
        assert s.alpha == (0.3 if s.block == "M00" else 1.0), s.key


def test_xl_elemental_addresses_xl_blocks_directly_and_extended_names():
    p = alphas(plan(XL_INFO, alpha=0.0, elemental="OUT02::1"))
    assert p and all((a == 1.0) == (block(SDXL, k) == "OUT02") for k, a in p.items())
    p = alphas(plan(XL_INFO, alpha=0.0, elemental="IN411 TIME::1", elemental_extended=True))
    hits = {k for k, a in p.items() if a == 1.0}
    assert hits and all(SDXL.block_of(k).fine in ("IN411", "TIME") for k in hits)


def test_entries_that_are_not_blocks_elements_ratio_and_bad_blocks_are_errors():
    for text in ("OUT03:0.5", "hello world", "IN01:a:b:0.5"):
        with pytest.raises(MergeError, match=f"elemental entry '{text}': is not BLOCKS:ELEMENTS:RATIO"):
            parse_elemental(f"IN02::0.1,{text}", SD1, False)
    assert len(parse_elemental("IN02::0.1,,\n", SD1, False)) == 1  # empty entries are no entries
    with pytest.raises(MergeError, match="unknown block IN99"):
        parse_elemental("IN99::0.5", SD1, False)
    with pytest.raises(MergeError, match="range 'IN01-ZZ'"):
        parse_elemental("IN01-ZZ::0.5", SD1, False)
    with pytest.raises(MergeError, match="ratio 'abc'"):
        parse_elemental("IN01::abc", SD1, False)
    with pytest.raises(MergeError, match="elemental entry 'IN01:foo:bar': ratio 'bar' is not a number or R, U, X"):
        parse_elemental("IN01:foo:bar", SD1, False)  # SuperMerger would call any text holding R/U/X random
    assert [r.ratio for r in parse_elemental("IN01::R,IN02::u, IN03 :: X ", SD1, False)] == ["R", "u", "X"]


def test_elemental_and_include_exclude_entries_that_match_no_key_are_noted():
    p = plan(alpha=0.2, elemental="OUT03-OUT05:atn2:0.8\nOUT03:attn2:0.5",
             include_exclude={"mode": "exclude", "blocks": ["IN05"], "elements": ["atn1", "attn1"]})
    assert [n for n in p.notes if "matches no key" in n] == [
        "include/exclude element 'atn1' matches no key of this model (key names: see the Model Elements node or "
        "`keys`)",
        "elemental entry 'OUT03-OUT05:atn2:0.8' matches no key of this model (its blocks and element names: see "
        "the Model Elements node or `keys`)"]


# Dice roll (§8) --------------------------------------------------------------------------------------

def test_dice_table_and_rewrite_oracles_seed_12345():
    t = random_table(12345)
    assert t[:4].tolist() == pytest.approx([0.92961609, 0.31637555, 0.18391881, 0.20456028])
    roll = rewrite("R,U,X,D,ER,EU,0.5," + ",".join(["0"] * 19), t, 0, DiceSettings(), SD_BLOCKS, 12345, "w")
    assert roll.text.split(",")[:8] == ["0.93", "0.867", "0.816", "1.0", "0", "0", "0.5", "0"]
    assert roll.elemental == "IN03::R,IN04::U"
    assert rewrite("R,U,X", t, 50, DiceSettings(), SD_BLOCKS, 12345, "w").text == "0.531,1.165,0.231"


def test_u_is_unclamped_by_default_and_clamped_when_asked():
    t = random_table(12345)
    assert rewrite("U", t, 51, DiceSettings(), SD_BLOCKS, 1, "w").text == "1.165"
    clamped = DiceSettings(clamp_upper="1", clamp_lower="0")
    assert rewrite("U", t, 51, clamped, SD_BLOCKS, 1, "w").text == "1.0"


def test_dice_mode_fills_the_weights_and_records_a_drawn_seed():
    p = plan(dice={"mode": "R"})
    assert p.recipe.seed >= 0
    again = plan(dice={"mode": "R"}, seed=p.recipe.seed)
    assert alphas(p) == alphas(again)
    assert len(set(alphas(p).values())) > 10
    assert all(0 <= a <= 1 for a in alphas(p).values())  # R is in [0, 1); rounding can give 1.0


def test_dice_on_xl_uses_supermerger_positions_then_converts():
    p = plan(XL_INFO, dice={"mode": "R"}, seed=12345)
    t = random_table(12345)
    w = p.weights_alpha
    assert w.base == round(t[0], 3) and w.values[9] == round(t[13], 3)  # M00 is position 13 of the 26-list


def test_er_mode_gives_per_key_elemental_randoms():
    p = plan(dice={"mode": "ER"}, seed=7)
    vals = alphas(p)
    t = random_table(7, len(SD1_INFO.keys) + 101)
    for num, key in enumerate(SD1_INFO.keys):
        if key in vals and block(SD1, key) != "BASE":
            assert vals[key] == round(t[num + 100], 3), key


def test_random_preset_names_work_when_typed():
    p = plan(weights_alpha="ALL_R", seed=3)
    assert p.weights_alpha.base == round(random_table(3)[0], 3)


def test_unknown_dice_setting_is_refused():
    with pytest.raises(MergeError, match="unknown setting"):
        Recipe(model_a="A", model_b="B", dice={"mode": "R", "sparkle": 1})
    with pytest.raises(MergeError, match="dice.mode"):
        plan(dice={"mode": "Q"})


def test_dice_merge_round_trips_through_the_recipe(sd1):
    a, b, _ = sd1
    p = plan(dice={"mode": "U", "beta": True}, mode="sum_twice")
    again = build_plan(Recipe.from_json(p.recipe.to_json()), SD1_INFO, SD1_INFO, SD1_INFO)
    assert [(s.key, s.alpha, s.beta) for s in again.merged()] == [(s.key, s.alpha, s.beta) for s in p.merged()]


# Properties ------------------------------------------------------------------------------------------

@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("INOUTM0123456789:,- \nNOTRUXab.")), max_size=60))
def test_elemental_parser_accepts_or_names_the_bad_entry(text):
    try:
        parse_elemental(text, SD1, False)
    except MergeError as e:
        assert "elemental entry" in str(e)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(alphabet=st.sampled_from(list("INOUTM0123456789AdjustVAE")), max_size=8), max_size=5),
       st.lists(st.text(max_size=8), max_size=3), st.sampled_from(["off", "include", "exclude"]))
def test_include_exclude_parser_accepts_or_names_the_bad_block(blocks, elements, mode):
    try:
        inex = compile_inex(Recipe(model_a="A", model_b="B", include_exclude={
            "mode": mode, "blocks": blocks, "elements": elements}).include_exclude, SD1)
    except MergeError as e:
        assert "include_exclude" in str(e)
        return
    if inex is not None:
        for key in SD1_INFO.keys[:50]:
            ref = SD1.block_of(key)
            assert inex.skips(ref, key) in (True, False)


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 2**32 - 2), st.sampled_from(["R", "U", "X", "D", "ER", "EU", "EX", "custom"]))
def test_plan_is_deterministic_for_a_seed(seed, mode):
    one = plan(dice={"mode": mode, "beta": True}, mode="sum_twice", seed=seed)
    two = plan(dice={"mode": mode, "beta": True}, mode="sum_twice", seed=seed)
    assert [(s.key, s.alpha, s.beta) for s in one.steps] == [(s.key, s.alpha, s.beta) for s in two.steps]


def test_all_controls_round_trip_through_a_saved_files_metadata(tmp_path, sd1):
    from merge_core import SafetensorsFile, SaveOptions, make_plan, merge_to_file, open_inputs
    from merge_core.synthetic import write_model

    for name, sd in zip("abc", sd1):
        write_model(sd, tmp_path / f"{name}.safetensors")
    recipe = Recipe(model_a=str(tmp_path / "a.safetensors"), model_b=str(tmp_path / "b.safetensors"),
                    model_c=str(tmp_path / "c.safetensors"), mode="sum_twice", alpha=0.3, beta=0.2,
                    elemental="OUT03:attn2:R\nIN01::0.7", adjust="1,0,0,0,2,0,0,0",
                    include_exclude={"mode": "exclude", "blocks": ["OUT11"], "elements": ["ff.net"]},
                    dice={"mode": "X", "beta": True, "upper": "0.8", "lower": "0.2"})
    inputs = open_inputs(recipe)
    try:
        first = merge_to_file(recipe, inputs, tmp_path / "m.safetensors", SaveOptions())
    finally:
        inputs.close()
    with SafetensorsFile(tmp_path / "m.safetensors") as f:
        stored = Recipe.from_json(f.metadata()["supermerger_recipe"])
    assert stored.seed == first.plan.recipe.seed >= 0
    again = open_inputs(stored)
    try:
        replay = make_plan(stored, again)
    finally:
        again.close()
    assert [(s.key, s.action, s.alpha, s.beta, s.adjust) for s in replay.steps] == \
           [(s.key, s.action, s.alpha, s.beta, s.adjust) for s in first.plan.steps]
