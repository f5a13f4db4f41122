"""`python -m merge_core lora extract | extract-two` on small files."""
import pytest
import torch

from merge_core.cli import main
from merge_core.lora import extract
from merge_core.sources import open_model
from merge_core.synthetic import write_model


@pytest.fixture
def models(tmp_path, sd1):
    write_model(sd1[1], tmp_path / "tuned.safetensors")
    write_model(sd1[0], tmp_path / "base.safetensors")
    return tmp_path


def test_extract_writes_the_automatic_name_and_refuses_to_overwrite(models, capsys):
    a, b = str(models / "tuned.safetensors"), str(models / "base.safetensors")
    assert main(["lora", "extract", a, b, "--out", str(models), "--rank", "4"]) == 0
    out = models / "lora_tuned-base.safetensors"
    with open_model(out) as f:
        assert f.metadata()["ss_network_dim"] == "4" and f.metadata()["modelspec.title"] == "lora_tuned-base"
        assert f.dtype("lora_unet_mid_block_attentions_0_proj_in.lora_up.weight") == torch.float16
    assert "wrote" in capsys.readouterr().out
    before = out.read_bytes()
    assert main(["lora", "extract", a, b, "--out", str(out), "--rank", "8"]) == 2
    assert "already exists" in capsys.readouterr().err and out.read_bytes() == before
    assert main(["lora", "extract", a, b, "--out", str(out), "--rank", "8", "--overwrite", "--precision", "bf16",
                 "--conv-rank", "2", "--alpha", "0.5"]) == 0
    with open_model(out) as f:
        assert f.metadata()["ss_network_dim"] == "8" and '"conv_dim": 2' in f.metadata()["ss_network_args"]
        assert f.dtype("lora_unet_mid_block_attentions_0_proj_in.lora_up.weight") == torch.bfloat16


def test_ctrl_c_leaves_no_file(models, monkeypatch, capsys):
    calls = []

    def interrupted(delta, rank, clamp=None):
        calls.append(1)
        if len(calls) > 20:
            raise KeyboardInterrupt
        return real(delta, rank, clamp)

    real = extract.factors
    monkeypatch.setattr(extract, "factors", interrupted)
    out = models / "x.safetensors"
    rc = main(["lora", "extract", str(models / "tuned.safetensors"), str(models / "base.safetensors"), "--out",
               str(out), "--rank", "4", "--threads", "1"])
    assert rc == 130 and "nothing was written" in capsys.readouterr().err
    assert sorted(p.name for p in models.iterdir()) == ["base.safetensors", "tuned.safetensors"]


def test_bad_values_are_one_line_errors(models, capsys):
    a, b = str(models / "tuned.safetensors"), str(models / "base.safetensors")
    assert main(["lora", "extract", a, b, "--rank", "0", "--out", str(models / "x.safetensors")]) == 2
    assert capsys.readouterr().err.startswith("error: rank:")
    assert main(["lora", "extract", a, str(models / "missing.safetensors")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_extract_two_from_the_lora_folder(models, capsys):
    a, b = str(models / "tuned.safetensors"), str(models / "base.safetensors")
    assert main(["lora", "extract", a, b, "--out", str(models / "one.safetensors"), "--rank", "4"]) == 0
    assert main(["lora", "extract", b, a, "--out", str(models / "two.safetensors"), "--rank", "4"]) == 0
    capsys.readouterr()
    assert main(["lora", "extract-two", "one:1,two:0.5", "--lora-dir", str(models), "--alpha", "0.5",
                 "--beta", "0.25", "--gamma", "2"]) == 0
    out = models / "one_1+two_0.5.safetensors"
    with open_model(out) as f:
        assert f.metadata()["ss_output_name"] == "one_1+two_0.5"
    assert main(["lora", "extract-two", "one:1,two:1", "--lora-dir", str(models), "--beta", "3"]) == 2
    assert capsys.readouterr().err.startswith("error: beta:")


def test_help_explains_both_commands(capsys):
    for cmd in ("extract", "extract-two"):
        with pytest.raises(SystemExit):
            main(["lora", cmd, "--help"])
        assert "SPEC 13" in capsys.readouterr().out
