"""SPEC §4: MBW weight lists, presets, the XL conversion and per-key weight selection in a merge."""
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import merge
from merge_core import FAMILIES, MergeError
from merge_core.presets import load_presets
from merge_core.synthetic import tiny_sd1
from merge_core.weights import BlockWeights, expand_preset, parse_block_weights

SD1, SD2, SDXL, FLUX = (FAMILIES[n] for n in ("sd1", "sd2", "sdxl", "flux"))

# SPEC Appendix A.1, in file order.
SPEC_PRESETS = [
    "GRAD_V", "GRAD_A", "FLAT_25", "FLAT_75", "WRAP08", "WRAP12", "WRAP14", "WRAP16", "MID12_50", "OUT07", "OUT12",
    "OUT12_5", "RING08_SOFT", "RING08_5", "RING10_5", "RING10_3", "SMOOTHSTEP", "REVERSE-SMOOTHSTEP", "SMOOTHSTEP*2",
    "R_SMOOTHSTEP*2", "SMOOTHSTEP*3", "R_SMOOTHSTEP*3", "SMOOTHSTEP*4", "R_SMOOTHSTEP*4", "SMOOTHSTEP/2",
    "R_SMOOTHSTEP/2", "SMOOTHSTEP/3", "R_SMOOTHSTEP/3", "SMOOTHSTEP/4", "R_SMOOTHSTEP/4", "COSINE",
    "REVERSE_COSINE", "TRUE_CUBIC_HERMITE", "TRUE_REVERSE_CUBIC_HERMITE", "FAKE_CUBIC_HERMITE",
    "FAKE_REVERSE_CUBIC_HERMITE", "ALL_A", "ALL_B",
]
GRAD_V = ("0,1,0.9166666667,0.8333333333,0.75,0.6666666667,0.5833333333,0.5,0.4166666667,0.3333333333,0.25,"
          "0.1666666667,0.0833333333,0,0.0833333333,0.1666666667,0.25,0.3333333333,0.4166666667,0.5,0.5833333333,"
          "0.6666666667,0.75,0.8333333333,0.9166666667,1.0")
WRAP08 = "0,1,1,1,1,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,1,1,1,1"


def csv(values):
    return ",".join(repr(float(v)) for v in values)


def one_hot(n, index):
    return csv([1.0 if i == index else 0.0 for i in range(n)])


# Parsing (§4.1) -----------------------------------------------------------------------------------

def test_26_values_parse_with_base_first():
    w = parse_block_weights(csv(range(26)), SD1, "weights_alpha")
    assert w.base == 0.0
    assert w.values == tuple(float(i) for i in range(1, 26))
    assert w.as_list() == [float(i) for i in range(26)] and not w.extended


def test_spaces_around_values_are_ignored():
    w = parse_block_weights(" 0.5 , " + ", ".join(["1"] * 25) + " ", SD1, "weights_alpha")
    assert w.base == 0.5 and w.values == (1.0,) * 25


@pytest.mark.parametrize("text", [None, "", "   "])
def test_empty_weights_mean_no_mbw(text):
    assert parse_block_weights(text, SD1, "weights_alpha") is None


def test_sd2_takes_the_same_26_values_as_sd1():
    assert parse_block_weights(GRAD_V, SD2, "w").as_list() == [float(x) for x in GRAD_V.split(",")]


def test_flux_takes_61_values():
    w = parse_block_weights(csv(range(61)), FLUX, "weights_alpha")
    assert w.base == 0.0 and len(w.values) == 60


# XL conversion (§4.3) -----------------------------------------------------------------------------

def test_xl_conversion_oracle_without_the_trailing_vae_zero():
    assert SDXL.from_sd_list(list(range(26)))[1:] == list(range(1, 10)) + list(range(13, 23))


def test_26_values_on_sdxl_are_converted():
    w = parse_block_weights(csv(range(26)), SDXL, "weights_alpha")
    assert w.base == 0.0
    assert w.values == tuple(float(i) for i in list(range(1, 10)) + list(range(13, 23)))
    assert len(w.as_list()) == 20 and not w.extended


def test_20_values_on_sdxl_are_used_as_given():
    w = parse_block_weights(csv(range(20)), SDXL, "weights_alpha")
    assert w.as_list() == [float(i) for i in range(20)] and not w.extended


def test_110_values_on_sdxl_are_extended():
    w = parse_block_weights(csv(range(110)), SDXL, "weights_alpha")
    assert w.extended and w.base == 0.0 and len(w.values) == 109


# Presets (§4.5, Appendix A) -----------------------------------------------------------------------

def test_every_spec_preset_and_the_random_ones_exist_with_26_values():
    presets = load_presets()
    for name in SPEC_PRESETS + ["ALL_R", "ALL_U", "ALL_X"]:
        assert name in presets, name
        assert len(presets[name].split(",")) == 26, name
    assert len(SPEC_PRESETS) == 38


@pytest.mark.parametrize("name", SPEC_PRESETS)
def test_every_spec_preset_parses_to_its_26_file_values(name):
    w = parse_block_weights(name, SD1, "weights_alpha")
    assert w.as_list() == [float(x) for x in load_presets()[name].split(",")]
    assert len(w.as_list()) == 26


def test_grad_v_values_equal_the_spec_text():
    assert expand_preset("GRAD_V", "w") == GRAD_V
    assert parse_block_weights("GRAD_V", SD1, "w").as_list() == [float(x) for x in GRAD_V.split(",")]


def test_wrap08_all_a_all_b_values_equal_the_spec_text():
    assert parse_block_weights("WRAP08", SD1, "w").as_list() == [float(x) for x in WRAP08.split(",")]
    assert parse_block_weights("ALL_A", SD1, "w").as_list() == [0.0] * 26
    assert parse_block_weights("ALL_B", SD1, "w").as_list() == [1.0] * 26


def test_preset_name_is_stripped_before_lookup():
    assert expand_preset("  GRAD_V \n", "w") == GRAD_V


def test_a_text_with_a_comma_is_returned_unchanged():
    assert expand_preset("1,2", "w") == "1,2"


def test_a_26_value_preset_on_sdxl_is_converted():
    values = [float(x) for x in GRAD_V.split(",")]
    w = parse_block_weights("GRAD_V", SDXL, "w")
    assert w.base == values[0] and list(w.values) == SDXL.from_sd_list(values)[1:]


def test_unknown_preset_is_refused_naming_it_and_the_input():
    with pytest.raises(MergeError) as e:
        parse_block_weights("NO_SUCH_PRESET", SD1, "weights_alpha")
    assert "NO_SUCH_PRESET" in str(e.value) and "weights_alpha" in str(e.value)
    assert "GRAD_V" in str(e.value)  # the message lists the presets


def test_a_single_number_is_not_a_weight_list():
    with pytest.raises(MergeError, match="weights_beta"):
        parse_block_weights("0.5", SD1, "weights_beta")


def test_unknown_preset_is_refused_through_a_merge(sd1):
    a, b, _ = sd1
    with pytest.raises(MergeError, match="NOPE"):
        merge(a, b, weights_alpha="NOPE")


# Wrong counts, bad tokens ------------------------------------------------------------------------

@pytest.mark.parametrize("family, n", [(SD1, 20), (SD1, 25), (SD1, 27), (SD1, 110), (SD1, 61), (SD2, 20)])
def test_sd_lists_of_the_wrong_length_are_refused_stating_26(family, n):
    with pytest.raises(MergeError) as e:
        parse_block_weights(csv([0.5] * n), family, "weights_alpha")
    msg = str(e.value)
    assert "26" in msg and f"got {n}" in msg and "weights_alpha" in msg


@pytest.mark.parametrize("n", [19, 21, 25, 27, 61, 109, 111])
def test_sdxl_lists_of_the_wrong_length_are_refused_stating_20_26_110(n):
    with pytest.raises(MergeError) as e:
        parse_block_weights(csv([0.5] * n), SDXL, "weights_alpha")
    msg = str(e.value)
    assert "20" in msg and "26" in msg and "110" in msg and f"got {n}" in msg


@pytest.mark.parametrize("n", [20, 26, 60, 62, 110])
def test_flux_lists_of_the_wrong_length_are_refused_stating_61(n):
    with pytest.raises(MergeError) as e:
        parse_block_weights(csv([0.5] * n), FLUX, "weights_alpha")
    assert "61" in str(e.value) and f"got {n}" in str(e.value)


def test_wrong_count_is_refused_through_a_merge(sd1):
    a, b, _ = sd1
    with pytest.raises(MergeError, match="26"):
        merge(a, b, weights_alpha=csv([0.5] * 20))


@pytest.mark.parametrize("token", ["R", "U", "X", "r", "D", "ER"])
def test_random_tokens_without_dice_are_refused(token):
    text = ",".join([token] + ["0"] * 25)
    with pytest.raises(MergeError, match="random"):
        parse_block_weights(text, SD1, "weights_alpha")


@pytest.mark.parametrize("name", ["ALL_R", "ALL_U", "ALL_X"])
def test_random_presets_without_dice_are_refused(name):
    with pytest.raises(MergeError):
        parse_block_weights(name, SD1, "weights_alpha")


@pytest.mark.parametrize("token", ["nan", "inf", "-inf", "1e999", "abc", ""])
def test_non_finite_or_non_numeric_values_are_refused(token):
    text = ",".join(["0"] * 12 + [token] + ["0"] * 13)
    with pytest.raises(MergeError, match="value 13"):
        parse_block_weights(text, SD1, "weights_alpha")


# Per-key selection in a merge (§4.2) ------------------------------------------------------------

@pytest.mark.parametrize("index", [0, 12, 13, 25])
def test_one_hot_list_gives_b_in_that_block_and_a_elsewhere(sd1, index):
    a, b, _ = sd1
    target = SD1.blocks[index]
    out = merge(a, b, alpha=0.5, weights_alpha=one_hot(26, index))  # the slider α is replaced by the list
    hits = 0
    for k in a:
        ref = SD1.block_of(k)
        selected = ref is not None and "model" in k and ("weight" in k or "bias" in k)
        if selected and ref.coarse == target:
            assert torch.equal(out[k], b[k]), k
            hits += 1
        else:
            assert torch.equal(out[k], a[k]), k
    assert hits > 0


def test_one_hot_out03_list_on_tiny_sd1_changes_exactly_the_output_blocks_3_keys():
    a, b = tiny_sd1(1), tiny_sd1(2)
    out = merge(a, b, alpha=0.9, weights_alpha=one_hot(26, SD1.blocks.index("OUT03")))
    changed = {k for k in a if not torch.equal(out[k], a[k])}
    assert changed == {k for k in a if k.startswith("model.diffusion_model.output_blocks.3.")}
    assert all(torch.equal(out[k], b[k]) for k in changed)


def _zeros_and_ones(sd):
    return {k: torch.zeros_like(v) for k, v in sd.items()}, {k: torch.ones_like(v) for k, v in sd.items()}


def _slot_values(n):
    # distinct dyadic values below 0.5: lerp(0, 1, w) == w exactly, so every key shows the slot it used
    return [(i + 1) / 256 for i in range(n)]


def _assert_every_key_used(out, a, expected_of):
    for k, v in out.items():
        want = expected_of(k)
        if want is None:
            assert torch.equal(v, a[k]), k
        else:
            assert v.dtype == a[k].dtype and bool((v == want).all()), (k, want, v.flatten()[:3])


def test_every_sd1_key_takes_its_blocks_value(sd1):
    a, b = _zeros_and_ones(sd1[0])
    values = _slot_values(26)
    out = merge(a, b, weights_alpha=csv(values))

    def expected(k):
        ref = SD1.block_of(k)
        if ref is None or "model" not in k or ("weight" not in k and "bias" not in k):
            return None
        return values[SD1.blocks.index(ref.coarse)]
    _assert_every_key_used(out, a, expected)


def _xl_selected(k):
    return "model" in k and ("weight" in k or "bias" in k) and SDXL.block_of(k) is not None


def test_every_sdxl_key_takes_its_20_value_block_and_vae_follows_base(sdxl):
    a, b = _zeros_and_ones(sdxl[0])
    values = _slot_values(20)
    out = merge(a, b, weights_alpha=csv(values))
    _assert_every_key_used(out, a, lambda k: values[SDXL.blocks.index(SDXL.block_of(k).coarse)]
                           if _xl_selected(k) else None)
    assert bool((out["first_stage_model.decoder.conv_out.weight"] == values[0]).all())
    assert bool((out["model.diffusion_model.time_embed.0.weight"] == values[1]).all())  # IN00


def test_every_sdxl_key_takes_its_converted_26_value_block(sdxl):
    a, b = _zeros_and_ones(sdxl[0])
    values = _slot_values(26)
    xl = SDXL.from_sd_list(values)
    out = merge(a, b, weights_alpha=csv(values))
    _assert_every_key_used(out, a, lambda k: xl[SDXL.blocks.index(SDXL.block_of(k).coarse)]
                           if _xl_selected(k) else None)


def test_every_sdxl_key_takes_its_fine_block_value_in_the_110_list(sdxl):
    a, b = _zeros_and_ones(sdxl[0])
    values = _slot_values(110)
    ext = list(SDXL.extended)
    out = merge(a, b, weights_alpha=csv(values))
    _assert_every_key_used(out, a, lambda k: values[ext.index(SDXL.block_of(k).fine)] if _xl_selected(k) else None)
    # the named slots: VAE uses the VAE slot (not CLIPL's, docs/compatibility.md), CLIPG its own
    assert bool((out["first_stage_model.decoder.conv_out.weight"] == values[ext.index("VAE")]).all())
    assert bool((out["conditioner.embedders.1.model.ln_final.weight"] == values[ext.index("CLIPG")]).all())
    assert bool((out["conditioner.embedders.0.transformer.text_model.final_layer_norm.bias"] == values[0]).all())
    assert bool((out["model.diffusion_model.time_embed.2.bias"] == values[ext.index("TIME")]).all())
    assert bool((out["model.diffusion_model.label_emb.0.0.weight"] == values[ext.index("LABEL")]).all())
    assert bool((out["model.diffusion_model.out.0.weight"] == values[ext.index("OUT9")]).all())


@pytest.mark.parametrize("fine", ["IN411", "MID103", "VAE", "CLIPG"])
def test_one_hot_110_list_gives_b_in_exactly_that_fine_block(sdxl, fine):
    a, b, _ = sdxl
    out = merge(a, b, weights_alpha=one_hot(110, SDXL.extended.index(fine)))
    changed = {k for k in a if not torch.equal(out[k], a[k])}
    assert changed and changed == {k for k in a if _xl_selected(k) and SDXL.block_of(k).fine == fine}
    assert all(torch.equal(out[k], b[k]) for k in changed)


def test_26_value_list_on_sdxl_drops_in09_to_in11_and_out09_to_out11(sdxl):
    a, b, _ = sdxl
    values = [0.0] * 26
    for name in ("IN09", "IN10", "IN11", "OUT09", "OUT10", "OUT11"):
        values[SD1.blocks.index(name)] = 1.0
    out = merge(a, b, weights_alpha=csv(values))
    assert all(torch.equal(out[k], a[k]) for k in a)


# Properties -------------------------------------------------------------------------------------

_token = st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), st.integers(-5, 5).map(str),
                   st.sampled_from(["R", "U", "X", "", " ", "GRAD_V", "1e999", "nan", "0x10", "1_0"]),
                   st.text(max_size=4))
_texts = st.one_of(
    st.text(max_size=60),
    st.lists(_token, min_size=0, max_size=120).map(",".join),
    st.sampled_from([20, 26, 61, 110]).flatmap(lambda n: st.lists(_token, min_size=n, max_size=n).map(",".join)),
    st.sampled_from(list(load_presets())),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=_texts, family=st.sampled_from([SD1, SD2, SDXL, FLUX]))
def test_parse_returns_weights_of_the_family_size_or_raises_merge_error(text, family):
    try:
        w = parse_block_weights(text, family, "weights_alpha")
    except MergeError:
        return
    if not text.strip():
        assert w is None
        return
    assert isinstance(w, BlockWeights)
    sizes = {len(family.blocks)} | ({len(family.extended)} if family.extended else set())
    assert len(w.as_list()) in sizes
    assert all(math.isfinite(x) for x in w.as_list())
    assert w.extended == (len(w.as_list()) == 110)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=26, max_size=26))
def test_26_finite_floats_round_trip_exactly(values):
    w = parse_block_weights(",".join(repr(v) for v in values), SD1, "weights_alpha")
    assert w.as_list() == values
    assert [math.copysign(1, x) for x in w.as_list()] == [math.copysign(1, x) for x in values]
