"""One precision vocabulary (merge_core/precision.py) for every node and command."""
import pytest
import torch

from merge_core import MergeError, precision
from merge_core.merge import SaveOptions


def test_the_words_their_dtypes_and_supermerger_s_float():
    assert precision.choices() == ["fp16", "bf16", "fp32"]
    assert precision.choices(keep=True) == ["keep", "fp16", "bf16", "fp32"]
    assert [precision.dtype_of(n) for n in ("fp16", "bf16", "fp32", "float")] == [
        torch.float16, torch.bfloat16, torch.float32, torch.float32]
    assert precision.dtype_of("keep", keep=True) is None
    assert precision.lora_word("fp32") == precision.lora_word("float") == "float"
    assert precision.lora_word("bf16") == "bf16"
    assert SaveOptions(precision="float").dtype == torch.float32


@pytest.mark.parametrize("name,keep", [("fp64", False), ("keep", False), ("half", True)])
def test_anything_else_is_refused_naming_the_choices(name, keep):
    with pytest.raises(MergeError, match=f"save_precision: '{name}' is not one of " + ("keep, " if keep else "")
                       + "fp16, bf16, fp32"):
        precision.dtype_of(name, "save_precision", keep)


def test_the_commands_take_the_same_words():
    from merge_core.cli import build_parser

    parser = build_parser()
    for argv in (["lora", "merge", "a:1", "--precision", "fp32"], ["lora", "bake", "m.safetensors", "a:1", "--out",
                                                                  "o", "--precision", "keep"],
                 ["lora", "extract", "a", "b", "--precision", "float"]):
        args = parser.parse_args(argv)
        assert args.precision in ("fp32", "keep")
    with pytest.raises(SystemExit):
        parser.parse_args(["lora", "merge", "a:1", "--precision", "fp64"])
