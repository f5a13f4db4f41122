"""The command line, run as users run it: `python -m merge_core …` in a subprocess from the repo root."""
import hashlib
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

from merge_core import FAMILIES, Recipe
from merge_core.synthetic import tiny_sd1, write_model

ROOT = Path(__file__).resolve().parent.parent


def start(tmp_path, *args):
    env = dict(os.environ, SUPERMERGER_CACHE_DIR=str(tmp_path / "cache"), PYTHONPATH=str(ROOT),
               SUPERMERGER_HISTORY=str(tmp_path / "history.jsonl"))
    return subprocess.Popen([sys.executable, "-m", "merge_core", *map(str, args)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc):
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


def cli(tmp_path, *args):
    return finish(start(tmp_path, *args))


def assert_one_line_error(err, *words):
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and "Traceback" not in err
    for w in words:
        assert w in lines[0], (w, lines[0])


def sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


HELP = {(): ["merge", "demo", "keys"], ("merge",): ["--out", "--overwrite", "--fp16", "--prune"],
        ("demo",): ["--dir"], ("keys",): ["--blocks", "--filter"]}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every independent command, started at once: each costs ~2 s of interpreter and torch start-up, so
    running them side by side keeps this module fast. Tests wait for the one they check."""
    d = tmp_path_factory.mktemp("cli")
    write_model(tiny_sd1(1), d / "a.safetensors")
    write_model(tiny_sd1(2), d / "b.safetensors")
    (d / "recipe.json").write_text(json.dumps({"model_a": "a.safetensors", "model_b": "b.safetensors",
                                               "alpha": 0.3}))
    (d / "typo.json").write_text(json.dumps({"model_a": "a.safetensors", "model_b": "b.safetensors",
                                             "alpah": 0.3}))
    (d / "dice.json").write_text(json.dumps({"model_a": "a.safetensors", "model_b": "b.safetensors",
                                             "dice": {"mode": "R", "alpha": True}, "seed": -1}))
    procs = {
        "demo": start(d, "demo", "--dir", d / "demo"),
        "dice": start(d / "dice-run", "merge", d / "dice.json", "--out", d / "dice.safetensors"),
        "merge": start(d, "merge", d / "recipe.json", "--out", d / "x.safetensors"),
        "typo": start(d, "merge", d / "typo.json", "--out", d / "typo.safetensors"),
        "keys": start(d, "keys", d / "a.safetensors", "--blocks"),
    }
    yield d, procs
    for p in procs.values():
        if p.poll() is None:
            p.kill()
            p.communicate()


def test_merge_writes_the_file_and_a_second_run_without_overwrite_fails_cleanly(runs):
    d, procs = runs
    target = d / "x.safetensors"
    rc, out, err = finish(procs["merge"])
    assert rc == 0, err
    assert load_file(target).keys() == load_file(d / "a.safetensors").keys()
    assert str(target) in out
    before = sha(target)

    rc, out, err = cli(d, "merge", d / "recipe.json", "--out", target)
    assert rc != 0
    assert_one_line_error(err, "x.safetensors", "exists")
    assert sha(target) == before
    assert not [p for p in d.iterdir() if p.name.endswith(".part")]


def test_history_reruns_a_random_merge_bit_for_bit(runs):
    """The dice drew its seed; `history show -1` gives a recipe (absolute paths, the drawn seed) that merges
    to the same bytes from anywhere."""
    d, procs = runs
    rc, out, err = finish(procs["dice"])
    assert rc == 0, err
    assert "merge ID 1 in the history" in out
    history = d / "dice-run" / "history.jsonl"
    assert history.exists()
    rc, out, err = cli(d / "dice-run", "history", "show", "-1")
    assert rc == 0, err
    recipe = Recipe.from_json(out)
    assert recipe.seed != -1 and Path(recipe.model_a).is_absolute()
    (d / "elsewhere").mkdir()
    (d / "elsewhere" / "again.json").write_text(out)
    rc, out, err = cli(d / "dice-run", "merge", d / "elsewhere" / "again.json", "--out", d / "again.safetensors")
    assert rc == 0, err
    assert "merge ID 2" in out
    a, b = load_file(d / "dice.safetensors"), load_file(d / "again.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    rc, out, err = cli(d / "dice-run", "history", "list")
    assert rc == 0 and [line.split()[0] for line in out.splitlines()] == ["2", "1"]
    rc, out, err = cli(d / "dice-run", "history", "show", "9")
    assert rc == 2
    assert_one_line_error(err, "no merge with ID 9")


def test_merge_refuses_a_recipe_with_an_unknown_field(runs):
    d, procs = runs
    rc, out, err = finish(procs["typo"])
    assert rc == 2
    assert_one_line_error(err, "alpah")
    assert not (d / "typo.safetensors").exists()


def test_keys_blocks_prints_the_key_count_of_every_block(runs):
    d, procs = runs
    rc, out, err = finish(procs["keys"])
    assert rc == 0, err
    lines = out.strip().splitlines()
    keys = list(tiny_sd1(1))
    assert lines[0] == f"Stable Diffusion 1.x: {len(keys)} keys"
    got = {b: int(n) for b, n in (line.split("\t") for line in lines[1:])}
    family = FAMILIES["sd1"]
    expected = Counter(family.block_of(k).coarse if family.block_of(k) else "-" for k in keys)
    assert got == dict(expected)
    assert got["IN00"] == 6  # time_embed (4 keys) + input_blocks.0 (2)


def test_demo_writes_a_merged_model_that_loads(runs):
    d, procs = runs
    rc, out, err = finish(procs["demo"])
    assert rc == 0, err
    assert len(out.strip().splitlines()) >= 3
    merged = d / "demo" / "merged.safetensors"
    tensors = load_file(merged)
    a = load_file(d / "demo" / "model_a.safetensors")
    assert tensors.keys() == a.keys() and len(tensors) > 1000
    with safe_open(merged, "pt") as f:
        recipe = Recipe.from_json(f.metadata()["supermerger_recipe"])
    assert (recipe.mode, recipe.calcmode, recipe.weights_alpha) == ("add_difference", "trainDifference", "GRAD_V")
    assert str(merged) in out


@pytest.mark.parametrize("args", list(HELP), ids=lambda a: " ".join(a) or "top")
def test_help_exits_0_and_explains_the_options(args, capsys):
    # In-process: the subprocess tests above already run the `python -m merge_core` entry point, and four
    # more interpreter + torch start-ups would cost ~10 s of CPU for the same argparse code.
    from merge_core.cli import main

    with pytest.raises(SystemExit) as e:
        main([*args, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m merge_core")
    for w in HELP[args]:
        assert w in out


def test_every_subcommand_has_a_help_that_exits_0(capsys):
    from merge_core.cli import build_parser, main

    parser = build_parser()
    subs = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction").choices
    assert {"merge", "demo", "keys"} <= set(subs)
    for name in subs:
        with pytest.raises(SystemExit) as e:
            main([name, "--help"])
        assert e.value.code == 0, name
        assert capsys.readouterr().out.startswith(f"usage: python -m merge_core {name}"), name


def test_bad_arguments_exit_2_with_usage(capsys):
    from merge_core.cli import main

    with pytest.raises(SystemExit) as e:
        main(["merge"])
    assert e.value.code == 2
    assert "--out" in capsys.readouterr().err
