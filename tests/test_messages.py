"""Every node's message for bad input: `<Display name> · <input>: <reason>`, from the node whose input is wrong,
with the closest match where a name was mistyped."""
import pytest

from merge_core import MergeError
from merge_core.errors import suggest
from nodes import messages, params


def _message(node_id, call):
    with pytest.raises(MergeError) as e:
        call()
    return messages.message(node_id, e.value)


def test_an_unknown_preset_is_reported_on_its_own_input_with_the_closest_names():
    text = _message("SuperMergerBlockWeights", lambda: params.block_weights(None, "", "", "GRAD_V2"))
    assert text.startswith("Block Weights (SuperMerger) · preset_alpha: unknown preset 'GRAD_V2'; did you mean "
                           "'GRAD_V' or 'GRAD_A'? Presets: GRAD_V, GRAD_A, FLAT_25,")
    assert "(41 in all)" in text  # a long list is cut, its length said
    beta = _message("SuperMergerBlockWeights", lambda: params.block_weights(None, "", "", "GRAD_V", "flat_25"))
    assert beta.startswith("Block Weights (SuperMerger) · preset_beta: unknown preset 'flat_25'")


@pytest.mark.parametrize("alpha,beta,expected", [
    ("0.5,abc", "", "Block Weights (SuperMerger) · weights_alpha: value 2 ('abc') is not a number"),
    ("", "1,0.5,R", "Block Weights (SuperMerger) · weights_beta: value 3 is the random token 'R'; random weights "
                    "need the Dice Roll settings (a recipe 'dice' entry or the Dice Roll node)"),
    (",".join(["0.5"] * 25), "", "Block Weights (SuperMerger) · weights_alpha: 25 values; a block-weight list has "
                                 "20, 26, 61 or 110 (BASE first)"),
    ("NOT_A_PRESET", "", "Block Weights (SuperMerger) · weights_alpha: unknown preset 'NOT_A_PRESET'. Presets: "),
])
def test_block_weight_text_is_checked_by_the_block_weights_node(alpha, beta, expected):
    assert _message("SuperMergerBlockWeights", lambda: params.block_weights(None, alpha, beta)).startswith(expected)


def test_the_block_weights_node_accepts_every_list_length_some_model_takes():
    for n in (20, 26, 61, 110):
        assert params.block_weights(None, ",".join(["0.1"] * n), "")["weights_alpha"].count(",") == n - 1


@pytest.mark.parametrize("text,expected", [
    ("hello world", "Elemental Merge (SuperMerger) · elemental entry 'hello world': is not BLOCKS:ELEMENTS:RATIO"),
    ("IN01:attn2:bar", "Elemental Merge (SuperMerger) · elemental entry 'IN01:attn2:bar': ratio 'bar' is not a "
                       "number or R, U, X (a random ratio)"),
])
def test_elemental_typos_are_reported_by_the_elemental_node(text, expected):
    assert _message("SuperMergerElemental", lambda: params.elemental(None, text)).startswith(expected)


def test_a_node_id_is_never_doubled_nor_shown():
    err = MergeError("SuperMergerWeightSum: SuperMergerWeightSum: clip inputs", "connect clip_a and clip_b")
    assert messages.message("SuperMergerWeightSum", err) == ("Weight Sum (SuperMerger) · clip inputs: connect "
                                                             "clip_a and clip_b")
    assert messages.message("SuperMergerSave", MergeError("", "nothing to save")) == (
        "Save Checkpoint (SuperMerger) · nothing to save")


def test_only_merge_errors_become_messages():
    bug = RuntimeError("CUDA out of memory")
    assert messages.node_error("SuperMergerWeightSum", bug) is bug
    out = messages.node_error("SuperMergerWeightSum", MergeError("alpha", "is not finite"))
    assert isinstance(out, ValueError) and str(out) == "Weight Sum (SuperMerger) · alpha: is not finite"


def test_validation_gives_true_or_the_message():
    assert messages.validation("SuperMergerBlockWeights", params.block_weights, None, "0.5," * 25 + "1", "") is True
    assert messages.validation("SuperMergerBlockWeights", params.block_weights, None, "y,1", "") == (
        "Block Weights (SuperMerger) · weights_alpha: value 1 ('y') is not a number")


def test_suggest_names_close_matches_and_lists_the_choices():
    assert suggest("lora_stlye", ["lora_style.safetensors", "other.safetensors"], "LoRAs") == (
        "; did you mean 'lora_style.safetensors'? LoRAs: lora_style.safetensors, other.safetensors")
    assert suggest("zzz", ["a", "b"]) == ". Choices: a, b"
    assert suggest("zzz", []) == "; there are none to choose from"


def test_an_unknown_lora_lists_the_closest_and_the_files_there():
    from merge_core.lora.files import find_lora

    available = ["style_a.safetensors", "sub/style_b.safetensors", "detail.pt"]
    with pytest.raises(MergeError) as e:
        find_lora("stlye_a", available, "lora_1")
    assert messages.message("SuperMergerLoraToModel", e.value) == (
        "LoRA to Model (SuperMerger) · lora_1: no LoRA named 'stlye_a' in the loras folder; did you mean "
        "'style_a' or 'sub/style_b'? LoRAs there: detail, style_a, sub/style_b")


def test_extract_from_two_loras_takes_chosen_files_or_linked_entries():
    assert params.two_entries("a.safetensors", 0.5, "", "b.safetensors", 1.0, " INS ") == [
        "a.safetensors:0.5", "b.safetensors:1:INS"]
    assert params.two_entries(params.NO_LORA, 1.0, "", "b.safetensors", 1.0, "", entry_1="x:2:ALL") == [
        "x:2:ALL", "b.safetensors:1"]
    with pytest.raises(MergeError) as e:
        params.two_entries("a.safetensors", 1.0, "", params.NO_LORA, 1.0, "")
    assert messages.message("SuperMergerLoraExtractTwo", e.value) == (
        "Extract LoRA from two LoRAs (SuperMerger) · lora_2: choose a LoRA from the list, or link an entry")


def test_the_readme_node_table_lists_every_node():
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    table = readme[readme.index("| node | what it does |"):].split("\n\n", 1)[0]
    listed = {name.strip() for row in table.splitlines()[2:] for name in row.split("|")[1].split("(`")[0].split("·")}
    assert listed == {d.replace(" (SuperMerger)", "") for d in messages.DISPLAY.values()}
