"""The node layer's own logic, without ComfyUI: parameter chaining, validation, recipes, key names."""
import pytest

from merge_core import MergeError, Recipe
from merge_core.families import FAMILIES
from merge_core.synthetic import sd1_layout, sdxl_layout
from nodes import messages, params


def test_each_mode_offers_the_calcmodes_declared_for_it():
    assert params.calcmodes_for("weight_sum") == ["normal", "cosineA", "cosineB", "tensor", "tensor2", "self",
                                                   "plus random"]
    assert params.calcmodes_for("add_difference") == ["normal", "trainDifference", "smoothAdd", "smoothAdd MT",
                                                       "extract"]
    assert params.calcmodes_for("triple_sum") == ["normal"] == params.calcmodes_for("sum_twice")


def test_preset_choices_are_the_26_value_presets():
    choices = params.preset_choices()
    assert choices[0] == params.NO_PRESET and "GRAD_V" in choices and "ALL_R" in choices and len(choices) == 42


def test_parameter_nodes_chain_and_keep_each_others_fields():
    w = params.block_weights(None, "", "", "GRAD_V", params.NO_PRESET)
    w = params.elemental(w, "OUT03:attn2:0.5")
    w = params.elemental(w, "IN01::0.2", extended=False)
    w = params.include_exclude(w, "exclude", "VAE OUT11", "attn1, ff.net")
    w = params.dice(w, "U", 42, alpha=False, beta=True)
    assert w["weights_alpha"] == "GRAD_V"
    assert w["elemental"] == "OUT03:attn2:0.5,IN01::0.2"
    assert w["include_exclude"] == {"mode": "exclude", "blocks": ["VAE", "OUT11"], "elements": ["attn1", "ff.net"]}
    assert w["dice"]["mode"] == "U" and w["dice"]["beta"] is True and w["seed"] == 42
    recipe = params.build_recipe("sum_twice", "normal", 0.3, 0.4, params=w)
    assert Recipe.from_json(recipe.to_json()) == recipe


def test_a_chosen_preset_wins_over_the_text_box():
    w = params.block_weights(None, "1,1,1", "", "FLAT_25", params.NO_PRESET)
    assert w["weights_alpha"] == "FLAT_25"


@pytest.mark.parametrize("call,field", [
    (lambda: params.block_weights(None, "NOT_A_PRESET", ""), "weights_alpha"),
    (lambda: params.include_exclude(None, "sometimes", "", ""), "include_exclude.mode"),
    (lambda: params.dice(None, "Q", 1), "dice.mode"),
    (lambda: params.build_recipe("weight_sum", "trainDifference_typo", 0.5), "calcmode"),
])
def test_bad_inputs_fail_at_the_parameter_node_with_the_input_named(call, field):
    with pytest.raises(MergeError) as e:
        call()
    assert e.value.where.startswith(field)
    message = str(messages.node_error("SuperMergerBlockWeights", e.value))
    assert message.startswith(f"Block Weights (SuperMerger) · {field}") and "SuperMergerBlockWeights" not in message


def test_forced_calcmodes_are_accepted_where_supermerger_switches_the_mode():
    recipe = params.build_recipe("add_difference", "extract", 0.5, 0.5, 1.0)
    assert recipe.calcmode == "extract"


def test_a_foreign_value_on_the_weights_input_is_refused():
    with pytest.raises(MergeError, match="not a SuperMerger parameters value"):
        params.build_recipe("weight_sum", "normal", 0.5, params={"lora": 1})


def test_checkpoint_panel_fields_win_over_the_chain_and_elemental_adds_up():
    chain = params.include_exclude(params.elemental(params.block_weights(None, "", "", "GRAD_V"), "IN01::0.2"),
                                   "exclude", "OUT11", "")
    panel = params.panel(chain, "FLAT_25", "", "OUT03:attn2:0.5", "include", "BASE IN00", "attn1")
    assert panel["weights_alpha"] == "FLAT_25" and panel["elemental"] == "IN01::0.2,OUT03:attn2:0.5"
    assert panel["include_exclude"] == {"mode": "include", "blocks": ["BASE", "IN00"], "elements": ["attn1"]}
    untouched = params.panel(chain)
    assert untouched == chain
    r = params.build_recipe("weight_sum", "normal", 0.3, params=panel, names=("a.safetensors", "b.safetensors", None),
                            adjust=" 1,0,0,0,0,0,0,0 ")
    assert r.adjust == "1,0,0,0,0,0,0,0" and r.model_a == "a.safetensors"
    with pytest.raises(MergeError, match="NOPE"):
        params.panel(None, "NOPE")


def test_loader_names_are_the_checkpoints_wired_straight_into_the_model_inputs():
    prompt = {"1": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sub/a.safetensors"}},
              "2": {"class_type": "LoraLoader", "inputs": {"model": ["1", 0], "lora_name": "x.safetensors"}},
              "3": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "c.safetensors"}},
              "9": {"class_type": "SuperMergerAddDifference",
                    "inputs": {"model_a": ["1", 0], "model_b": ["2", 0], "model_c": ["3", 0], "alpha": 0.5}}}
    # model_b comes through a LoRA: it is not the checkpoint file any more, so it has no name
    assert params.loader_names(prompt, "9") == {"model_a": "sub/a.safetensors", "model_c": "c.safetensors"}
    assert params.loader_names(prompt, 9) == params.loader_names(prompt, "9")
    assert params.loader_names(None, "9") == {} == params.loader_names(prompt, "404")


def test_adjust_joins_the_chain_and_all_zeros_leaves_it_out():
    chain = params.adjust(params.elemental(None, "OUT03:attn2:0.5"), [1, 0, 0, 0, 2, 0, 0, 0])
    assert chain == {"elemental": "OUT03:attn2:0.5", "adjust": "1.0,0.0,0.0,0.0,2.0,0.0,0.0,0.0"}
    assert "adjust" not in params.adjust(chain, [0] * 8)
    recipe = params.build_recipe("weight_sum", "normal", 0.5, params=chain)
    assert recipe.adjust == "1.0,0.0,0.0,0.0,2.0,0.0,0.0,0.0"
    assert params.build_recipe("weight_sum", "normal", 0.5, params=chain, adjust="0,1,0,0,0,0,0,0").adjust == \
        "0,1,0,0,0,0,0,0"  # Checkpoint Merge's own field wins


def test_beta_and_gamma_are_offered_where_a_calcmode_reads_them_and_say_which():
    # from the calcmodes' own declarations: SuperMerger's tensor modes slice at β, extract uses β and γ
    assert params.readers("weight_sum", "beta") == ["tensor", "tensor2"]
    assert params.readers("weight_sum", "gamma") == []
    assert params.readers("add_difference", "beta") == ["extract"] == params.readers("add_difference", "gamma")
    assert params.only_read_by("weight_sum", "beta") == (" Read only by calcmode tensor and tensor2; the others "
                                                         "ignore it.")
    assert params.only_read_by("weight_sum", "gamma") == ""
