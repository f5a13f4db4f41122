"""`python -m merge_core lora merge | bake | info | prompt`."""
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file, save_file

from merge_core.cli import main
from merge_core.lora.synthetic import random_lora
from merge_core.synthetic import tiny_sd1, write_model

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent


@pytest.fixture()
def folder(tmp_path):
    sd = tiny_sd1(1)
    write_model(sd, tmp_path / "model.safetensors")
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    save_file(random_lora(shapes, "sd1", 4, 1), tmp_path / "a.safetensors")
    save_file(random_lora(shapes, "sd1", 2, 2, conv3x3=True), tmp_path / "b.safetensors")
    save_file(random_lora(shapes, "sd1", 4, 3, kind="loha"), tmp_path / "c.safetensors")
    return tmp_path


def run(*args):
    return main(list(map(str, args)))


def test_merge_with_automatic_name_and_rank(folder, capsys):
    assert run("lora", "merge", "a:1,b:0.5:OUTS", "--lora-dir", folder, "--rank", "auto") == 0
    out = folder / "a_1+b_0.5_OUTS.safetensors"
    sd = load_file(out)
    assert {t.shape[0] for k, t in sd.items() if k.endswith("lora_down.weight")} == {4}  # auto: ranks differ
    assert all(t.dtype == torch.float16 for t in sd.values())
    assert "re-decomposed to rank 4" in capsys.readouterr().out
    assert run("lora", "merge", "a:1,b:0.5:OUTS", "--lora-dir", folder) == 2  # exists
    assert "already exists" in capsys.readouterr().err


def test_merge_errors_are_one_line(folder, capsys):
    assert run("lora", "merge", "a:1,b:1", "--lora-dir", folder, "--out", folder / "x.safetensors") == 2
    assert "rank 2, an earlier LoRA has rank 4" in capsys.readouterr().err  # a is rank 4, b rank 2
    assert run("lora", "merge", "a:1,nope:1", "--lora-dir", folder) == 2
    assert "LoRA nope: no LoRA named 'nope'" in capsys.readouterr().err
    assert run("lora", "merge", "a:1", "--lora-dir", folder, "--rank", "x") == 2
    assert "--rank" in capsys.readouterr().err


def test_bake_into_a_folder_gets_supermergers_name(folder, capsys):
    assert run("lora", "bake", folder / "model.safetensors", "a:1,c:0.5:OUTS", "--lora-dir", folder,
               "--out", folder, "--precision", "fp16") == 0
    out = folder / "model+a+c.fp16.safetensors"
    sd = load_file(out)
    model = load_file(folder / "model.safetensors")
    assert set(sd) == set(model)
    key = "cond_stage_model.transformer.text_model.encoder.layers.0.mlp.fc1.weight"
    assert sd[key].dtype == torch.float16 and not torch.equal(sd[key], model[key].half())
    assert "baked 2 LoRA(s)" in capsys.readouterr().out


def test_info_and_prompt(folder, capsys):
    assert run("lora", "info", folder / "a.safetensors", folder / "b.safetensors", folder / "c.safetensors") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("a[4]\ttype LoRA") and "rank 2" in lines[1] and "LoCon" in lines[1]
    assert "type LyCORIS" in lines[2]
    assert run("lora", "prompt", "x <lora:a:0.5:OUTS> <lyco:c:unet=1>") == 0
    assert capsys.readouterr().out.strip() == "a:0.5:OUTS,c:1.0"


@pytest.mark.parametrize("action", ["merge", "bake", "info", "prompt"])
def test_help(action, capsys):
    with pytest.raises(SystemExit) as e:
        run("lora", action, "--help")
    assert e.value.code == 0 and "usage:" in capsys.readouterr().out


def test_module_entry_point():
    r = subprocess.run([sys.executable, "-m", "merge_core", "lora", "--help"], cwd=ROOT, capture_output=True,
                       text=True)
    assert r.returncode == 0 and "merge" in r.stdout and "bake" in r.stdout
