"""LoRA list syntax `name:ratio[:blocks]`, to26 placement (SPEC §13.2) and prompt tags (§13.12)."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from merge_core import MergeError
from merge_core.lora.syntax import BLOCKID26, SHORT_LISTS, from_prompt, lora_presets, parse_list, to26

PRESETS = lora_presets()


def test_to26_oracle_17_values():
    # SPEC §13.2 [verified]: to26([1]+[0.5]*16)
    expected = [1, 0, 0.5, 0.5, 0, 0.5, 0.5, 0, 0.5, 0.5, 0, 0, 0, 0.5, 0, 0, 0] + [0.5] * 9
    assert to26([1] + [0.5] * 16) == expected


@pytest.mark.parametrize("n", [12, 17, 20])
def test_to26_places_each_value_on_its_block_and_zeroes_the_rest(n):
    values = [float(i + 1) for i in range(n)]
    out = to26(values)
    assert len(out) == 26
    for name, value in zip(SHORT_LISTS[n], values):
        assert out[BLOCKID26.index(name)] == value
    assert sum(1 for v in out if v) == n


def test_to26_keeps_26_and_61_values():
    assert to26(list(range(26))) == list(range(26))
    assert to26(list(range(61))) == list(range(61))


def test_two_fields_give_the_ratio_everywhere():
    (e,) = parse_list("style:0.7")
    assert (e.name, e.ratio, e.ratio_text, e.blocks) == ("style", 0.7, "0.7", None)
    assert e.weights == (0.7,) * 26


def test_preset_values_are_scaled_by_the_ratio_and_placed_by_to26():
    (e,) = parse_list("style:0.5:OUTS")
    outs = PRESETS["OUTS"]
    assert e.weights == tuple(to26([v * 0.5 for v in outs]))
    assert e.weights[BLOCKID26.index("OUT07")] == 0.5 and e.weights[BLOCKID26.index("IN04")] == 0


def test_explicit_list_is_not_scaled_by_the_ratio_and_may_follow_with_commas():
    text = "a:0.3:1,0,0,0,1,1,1,0,0,0,0,0,0,0,0,0,0, b:1"
    a, b = parse_list(text)
    assert a.weights == tuple(to26([1.0, 0, 0, 0, 1, 1, 1] + [0.0] * 10))
    assert a.blocks == "1,0,0,0,1,1,1,0,0,0,0,0,0,0,0,0,0"
    assert (b.name, b.weights) == ("b", (1.0,) * 26)


def test_new_lines_separate_entries_like_commas():
    entries = parse_list("a:1\n  b:0.5:ALL0.5\n\n")
    assert [e.name for e in entries] == ["a", "b"]
    assert entries[1].weights == tuple(to26([0.25] * 17))


@pytest.mark.parametrize("text,needle", [
    ("a:1:NOPE", "unknown block-weight preset 'NOPE'"),
    ("a:1:1,2,3", "3 block value(s)"),
    ("a:1:1", "1 block value(s)"),
    ("a:x", "ratio 'x' is not a number"),
    ("a:1:" + ",".join(["1"] * 16) + ",y", "block value 17 'y' is not a number"),
    ("lonely", "has no ratio"),
    (":1", "no LoRA name"),
    ("", "no LoRA given"),
    ("a:nan", "finite"),
])
def test_bad_lists_are_refused_with_the_reason(text, needle):
    with pytest.raises(MergeError) as e:
        parse_list(text, where="SuperMergerLoraToModel: loras")
    assert needle in str(e.value)
    assert str(e.value).startswith("SuperMergerLoraToModel: loras")


def test_flux_padding_and_61_values_on_sd_refused():
    (e,) = parse_list("a:0.5")
    assert e.weights_for("flux") == (0.5,) * 61
    (e,) = parse_list("a:1:" + ",".join(str(i) for i in range(17)))
    padded = e.weights_for("flux")
    assert len(padded) == 61 and padded[:26] == e.weights and set(padded[26:]) == {e.weights[0]}
    (f,) = parse_list("a:1:" + ",".join(["1"] * 61))
    assert f.weights_for("flux") == (1.0,) * 61
    with pytest.raises(MergeError, match="Flux list"):
        f.weights_for("sdxl")


def test_user_presets_file_adds_presets(tmp_path):
    extra = tmp_path / "lbw.txt"
    extra.write_text("MINE:" + ",".join(["0.25"] * 26) + "\nBAD:1,2\n")
    presets = lora_presets(extra)
    assert presets["MINE"] == [0.25] * 26 and "BAD" not in presets and "OUTS" in presets
    (e,) = parse_list("a:2:MINE", presets)
    assert e.weights == (0.5,) * 26


names = st.text(alphabet=st.characters(whitelist_categories=("L", "N"), whitelist_characters="_-. "),
                min_size=1, max_size=12).map(str.strip).filter(bool)
ratios = st.floats(-3, 3, allow_nan=False).map(lambda x: round(x, 4))
blocks = st.one_of(st.none(), st.sampled_from(sorted(PRESETS)),
                   st.sampled_from([12, 17, 20, 26]).flatmap(lambda n: st.lists(ratios, min_size=n, max_size=n)))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(names, ratios, blocks), min_size=1, max_size=5), st.sampled_from([",", ", ", "\n"]))
def test_any_written_list_parses_back(items, sep):
    parts = []
    for name, ratio, blk in items:
        text = f"{name}:{ratio}"
        if isinstance(blk, str):
            text += f":{blk}"
        elif blk is not None:
            text += ":" + ",".join(str(v) for v in blk)
        parts.append(text)
    entries = parse_list(sep.join(parts))
    assert len(entries) == len(items)
    for e, (name, ratio, blk) in zip(entries, items):
        assert e.name == name and e.ratio == ratio and len(e.weights) == 26
        if blk is None:
            assert e.weights == (ratio,) * 26
        elif isinstance(blk, str):
            assert e.weights == tuple(to26([v * ratio for v in PRESETS[blk]]))
        else:
            assert e.weights == tuple(to26(blk))


@settings(max_examples=100, deadline=None)
@given(st.lists(ratios, min_size=1, max_size=40))
def test_lists_of_other_lengths_are_always_refused(values):
    if len(values) in (12, 17, 20, 26):
        return
    with pytest.raises(MergeError):
        parse_list("a:1:" + ",".join(map(str, values)))


@pytest.mark.parametrize("prompt,expected", [
    ("a girl <lora:style:0.8> smiling", "style:0.8"),
    ("<lora:style:0.8:OUTS>, <lyco:loha:0.5:lbw=1,0,0,0,1,1,1,0,0,0,0,0,0,0,0,0,0>",
     "style:0.8:OUTS,loha:0.5:1,0,0,0,1,1,1,0,0,0,0,0,0,0,0,0,0"),
    ("<lora:x:te=0.3:unet=0.6>", "x:0.6"),
    ("<lora:x:te=0.3>", "x:0.3"),
    ("<lora:x:@0.4>", "x:1.0"),
    ("<lora:x>", "x:1.0"),
    ("<lora:x:1:stop=10>", "x:1.0"),
    ("<hypernet:h:1> no loras", ""),
])
def test_prompt_tags(prompt, expected):
    assert from_prompt(prompt) == expected


def test_prompt_result_parses_as_a_list():
    entries = parse_list(from_prompt("<lora:style:0.8:OUTS> <lora:b:1>"))
    assert [e.name for e in entries] == ["style", "b"]
