"""Messages in a real ComfyUI: the exact text, on the node whose input is wrong (its id in ComfyUI's
node_errors before a run, or in the execution_error of a run)."""
import pytest

from comfy_host import ExecutionFailed, graph

BW = "Block Weights (SuperMerger)"


def _weights(alpha="", preset="(none)", beta="", preset_beta="(none)") -> dict:
    return {"bw": {"class_type": "SuperMergerBlockWeights",
                   "inputs": {"weights_alpha": alpha, "preset_alpha": preset, "weights_beta": beta,
                              "preset_beta": preset_beta}}}


def _refusal(host, extra, node="bw") -> str:
    errors = host.refused(graph("SuperMergerWeightSum", {"weights": [node, 0]}, extra=extra))
    assert list(errors) == [node], errors  # on that node only, not on the merge node
    details = set(errors[node])
    # ComfyUI repeats a node's validation message once per input it checked, prefixed with that input
    texts = {d.split(" - ", 1)[1] for d in details}
    assert len(texts) == 1, details
    return texts.pop()


def test_an_unknown_preset_is_refused_on_block_weights_with_the_closest_names(host):
    text = _refusal(host, _weights(preset="GRAD_V2"))
    assert text.startswith(f"{BW} · preset_alpha: unknown preset 'GRAD_V2'; did you mean 'GRAD_V' or 'GRAD_A'? "
                           "Presets: GRAD_V, GRAD_A,")


@pytest.mark.parametrize("alpha,expected", [
    ("0.5,abc", f"{BW} · weights_alpha: value 2 ('abc') is not a number"),
    ("1,2,3", f"{BW} · weights_alpha: 3 values; a block-weight list has 20, 26, 61 or 110 (BASE first)"),
])
def test_block_weight_typos_are_refused_on_block_weights(host, alpha, expected):
    assert _refusal(host, _weights(alpha)) == expected


@pytest.mark.parametrize("text,expected", [
    ("hello world", "Elemental Merge (SuperMerger) · elemental entry 'hello world': is not BLOCKS:ELEMENTS:RATIO"),
    ("IN01:attn2:bar", "Elemental Merge (SuperMerger) · elemental entry 'IN01:attn2:bar': ratio 'bar' is not a "
                       "number or R, U, X (a random ratio)"),
])
def test_elemental_typos_are_refused_on_the_elemental_node(host, text, expected):
    extra = {"el": {"class_type": "SuperMergerElemental", "inputs": {"elemental": text, "extended_xl": False}}}
    assert _refusal(host, extra, "el").startswith(expected)


def test_what_only_the_model_shows_is_reported_by_the_merge_node_once(host):
    """20 values are an SDXL list: only the merge node knows the model is SD1."""
    with pytest.raises(ExecutionFailed) as e:
        host.run(graph("SuperMergerWeightSum", {"weights": ["bw", 0]}, extra=_weights(",".join(["0.5"] * 20))))
    assert e.value.info["node_id"] == "merge"
    assert e.value.info["exception_message"].strip() == (
        "Weight Sum (SuperMerger) · weights_alpha: Stable Diffusion 1.x takes 26 (BASE,IN00…IN11,M00,OUT00…OUT11) block weights "
        "(BASE first); got 20")


def test_display_names_in_messages_are_the_nodes_titles(host):
    from nodes.messages import DISPLAY

    info = host.get("/object_info")
    ours = {k: v["display_name"] for k, v in info.items() if k.startswith("SuperMerger")}
    assert ours == DISPLAY
