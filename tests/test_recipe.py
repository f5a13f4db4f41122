"""The Recipe JSON contract (DESIGN "Public contracts"): round trip, strict fields, SuperMerger mode names."""
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from merge_core import MODES, MergeError, Recipe
from merge_core.calcmodes import CALCMODES

BASE = {"model_a": "a.safetensors", "model_b": "b.safetensors"}


def from_fields(**fields):
    return Recipe.from_json(json.dumps({**BASE, **fields}))


# Round trip ---------------------------------------------------------------------------------------

_finite = st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-10**6, 10**6))
_name = st.text(min_size=1, max_size=30).filter(lambda s: s.strip())
# Dice settings named in SPEC §8.1 (mode, the alpha/beta checkboxes, Round); the dice module owns the rest.
_dice = st.one_of(st.none(), st.fixed_dictionaries(
    {}, optional={"mode": st.sampled_from(["off", "R", "U", "X", "D", "ER", "EU", "EX", "custom"]),
                  "alpha": st.booleans(), "beta": st.booleans(), "round": st.integers(0, 6)}))
_inex = st.fixed_dictionaries(
    {"mode": st.sampled_from(["off", "include", "exclude", "Include", "EXCLUDE"]),
     "blocks": st.one_of(st.lists(st.text(max_size=8), max_size=5), st.text(max_size=20)),
     "elements": st.lists(st.text(max_size=8), max_size=5)})

_recipes = st.builds(
    Recipe,
    model_a=_name, model_b=_name, model_c=st.one_of(st.none(), _name),
    mode=st.sampled_from(list(MODES) + ["Weight sum", "Add difference:A+(B-C)*alpha", "sum Twice",
                                        "Triple sum:A*(1-alpha-beta)+B*alpha+C*beta"]),
    calcmode=st.sampled_from(list(CALCMODES)),
    alpha=_finite, beta=_finite, gamma=_finite,
    weights_alpha=st.one_of(st.none(), st.text(max_size=40)), weights_beta=st.one_of(st.none(), st.text(max_size=40)),
    elemental=st.text(max_size=30), include_exclude=st.one_of(st.none(), _inex), adjust=st.text(max_size=20),
    seed=st.integers(-1, 2**40), dice=_dice, use_old_calc=st.booleans(),
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_recipes)
def test_recipe_json_round_trip(r):
    assert Recipe.from_json(r.to_json()) == r
    assert Recipe.from_json(r.to_json(indent=None)) == r
    assert Recipe.from_dict(json.loads(r.to_json())).to_dict() == r.to_dict()


def test_defaults_round_trip_and_are_the_documented_ones():
    r = Recipe.from_json(json.dumps(BASE))
    assert (r.mode, r.calcmode, r.alpha, r.beta, r.gamma, r.seed, r.version) == \
        ("weight_sum", "normal", 0.5, 0.25, 0.3, -1, 1)
    assert r.model_c is None and r.weights_alpha is None and r.use_old_calc is False
    assert r.include_exclude == {"mode": "off", "blocks": [], "elements": []}
    assert Recipe.from_json(r.to_json()) == r


def test_to_json_is_strict_json_with_every_field():
    data = json.loads(Recipe(**BASE).to_json(), parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert set(data) >= {"version", "mode", "calcmode", "model_a", "model_b", "model_c", "alpha", "beta", "gamma",
                         "weights_alpha", "weights_beta", "elemental", "include_exclude", "adjust", "seed", "dice"}


def test_integer_alpha_is_read_as_a_float():
    r = from_fields(alpha=1, beta=0)
    assert r.alpha == 1.0 and isinstance(r.alpha, float) and isinstance(r.beta, float)


def test_blank_weights_mean_none():
    assert from_fields(weights_alpha="  ").weights_alpha is None


# SuperMerger's mode names ----------------------------------------------------------------------

@pytest.mark.parametrize("name, mode", [
    ("Weight sum", "weight_sum"),
    ("Weight sum:A*(1-alpha)+B*alpha", "weight_sum"),
    ("Add difference", "add_difference"),
    ("Add difference:A+(B-C)*alpha", "add_difference"),
    ("Triple sum:A*(1-alpha-beta)+B*alpha+C*beta", "triple_sum"),
    ("sum Twice", "sum_twice"),
    ("sum Twice:(A*(1-alpha)+B*alpha)*(1-beta)+C*beta", "sum_twice"),
    ("add_difference", "add_difference"),
])
def test_supermerger_mode_names_are_accepted(name, mode):
    r = from_fields(mode=name)
    assert r.mode == mode
    assert json.loads(r.to_json())["mode"] == mode


# Refusals ---------------------------------------------------------------------------------------

def test_unknown_field_is_refused_naming_it():
    with pytest.raises(MergeError, match="alpah"):
        from_fields(alpah=0.3)


def test_unknown_include_exclude_field_is_refused_naming_it():
    with pytest.raises(MergeError, match="blokcs"):
        from_fields(include_exclude={"mode": "include", "blokcs": ["IN01"]})


def test_missing_model_a_is_refused():
    with pytest.raises(MergeError, match="model_a"):
        Recipe.from_json(json.dumps({"model_b": "b.safetensors"}))


@pytest.mark.parametrize("value", ["", "   ", None, 3])
def test_empty_or_non_text_model_b_is_refused(value):
    with pytest.raises(MergeError, match="model_b"):
        from_fields(model_b=value)


@pytest.mark.parametrize("field, value", [
    ("alpha", "x"), ("alpha", True), ("alpha", None), ("beta", [0.5]), ("gamma", "0.3"),
    ("seed", -2), ("seed", 1.5), ("seed", "7"), ("seed", True),
    ("use_old_calc", "yes"), ("dice", "R"), ("elemental", 5), ("weights_alpha", 0.5),
    ("model_c", 7), ("mode", "Wieght sum"), ("mode", 3), ("calcmode", "cosineC"),
])
def test_bad_values_are_refused_naming_the_field(field, value):
    with pytest.raises(MergeError) as e:
        from_fields(**{field: value})
    assert field in str(e.value)


@pytest.mark.parametrize("text", ['{"alpha": NaN}', '{"alpha": Infinity}', '{"beta": -Infinity}', '{"gamma": NaN}'])
def test_non_finite_numbers_in_json_are_refused(text):
    data = json.loads(text)
    with pytest.raises(MergeError) as e:
        Recipe.from_json(json.dumps({**BASE, **data}))
    assert next(iter(data)) in str(e.value)


def test_nan_alpha_in_python_is_refused():
    with pytest.raises(MergeError, match="alpha"):
        Recipe(**BASE, alpha=float("nan"))


def test_include_exclude_mode_maybe_is_refused():
    with pytest.raises(MergeError, match="maybe"):
        from_fields(include_exclude={"mode": "maybe", "blocks": [], "elements": []})


@pytest.mark.parametrize("value", [["IN01", 3], 5])
def test_include_exclude_blocks_must_be_texts(value):
    with pytest.raises(MergeError, match="include_exclude"):
        from_fields(include_exclude={"mode": "exclude", "blocks": value})


@pytest.mark.parametrize("version", [2, 0])
def test_unknown_recipe_version_is_refused(version):
    with pytest.raises(MergeError, match="version"):
        from_fields(version=version)


@pytest.mark.parametrize("text", ["[1, 2]", '"a"', "{", "", "null"])
def test_non_object_or_invalid_json_is_refused(text):
    with pytest.raises(MergeError):
        Recipe.from_json(text)
