"""Command line: `python -m merge_core {merge,demo,keys} …` (DESIGN "Command line")."""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

from .console import add_threads_option, command_run
from .lora import cli as lora_cli
from .errors import MergeError, MergeInterrupted
from .history import History, record, table
from .merge import (SaveOptions, adjust_to_file, display_name, make_plan, merge_to_file, name_tag, open_inputs,
                    write_elist)
from .naming import file_name
from .plan import MERGE
from .recipe import Recipe


def _read_recipe(path: str) -> Recipe:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise MergeError(f"recipe {path}", f"cannot be read ({e.strerror})") from None
    try:
        return Recipe.from_json(text)
    except MergeError as e:
        raise e.at(f"recipe {path}:") from None


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024


def run_merge(recipe: Recipe, out: Path, options: SaveOptions, base_dir=None, quiet=False,
              device: str = "cpu", elist=None, history: Optional[History] = None,
              threads: Optional[int] = None) -> Path:
    inputs = open_inputs(recipe, base_dir, options.bake_vae)
    try:
        plan = make_plan(recipe, inputs, options)  # once: a seed of -1 is drawn here
        if out.is_dir():  # automatic name (SPEC §10.8)
            conv = "model.diffusion_model.input_blocks.0.0.weight"
            channels = inputs.a.shape(conv)[1] if conv in inputs.a else None
            out = out / file_name(display_name(plan), options.fp16, in_channels=channels,
                                  tag=name_tag(plan.recipe))
        with command_run("merge", threads, quiet) as run:
            result = merge_to_file(recipe, inputs, out, options, plan=plan, run=run, device=device)
        entry = record(history, result.plan, inputs, display_name(result.plan), "cli")
    finally:
        inputs.close()
    if not quiet:
        for note in result.notes:
            print(f"note: {note}")
        if result.plan.recipe.seed != recipe.seed:
            print(f"seed: {result.plan.recipe.seed} (drawn; stored in the file's recipe)")
        merged = sum(1 for s in result.plan.steps if s.action == MERGE)
        print(f"{result.plan.family.label}, {result.plan.mode} / {recipe.calcmode}: merged {merged} of "
              f"{len(result.plan.steps)} keys in {result.seconds:.1f} s")
        print(f"wrote {out} ({_human(out.stat().st_size)})")
        if entry is not None:
            print(f"merge ID {entry.id} in the history ({history.path})")
    if elist:
        write_elist(result.plan, elist)
        if not quiet:
            print(f"wrote the per-key alpha/beta list to {elist}")
    return out


def cmd_merge(args) -> int:
    recipe = _read_recipe(args.recipe)
    if args.device == "cuda":
        import torch
        if not torch.cuda.is_available():
            raise MergeError("--device cuda", "no CUDA device is available on this machine; use --device cpu")
    options = SaveOptions(fp16=args.fp16, prune=args.prune, metadata=not args.no_metadata,
                          reset_clip_ids=args.reset_clip_ids, bake_vae=args.bake_vae, overwrite=args.overwrite)
    run_merge(recipe, Path(args.out), options, base_dir=Path(args.recipe).resolve().parent, device=args.device,
              elist=args.elist, history=None if args.no_history else History(args.history), threads=args.threads)
    return 0


def cmd_history(args) -> int:
    history = History(args.history)
    if args.action in ("show", "import") and len(args.words) != 1:
        raise MergeError(f"history {args.action}", "takes one argument: " +
                         ("the merge ID (-1 = the last)" if args.action == "show" else "the mergehistory.csv file"))
    if args.action == "list":
        entries = history.entries()[::-1][: args.last]
        print(table(entries) if entries else f"no merges recorded in {history.path}")
    elif args.action == "show":
        try:
            merge_id = int(args.words[0])
        except ValueError:
            raise MergeError("history show", f"'{args.words[0]}' is not a merge ID") from None
        entry = history.get(merge_id)
        print(entry.recipe.to_json())
        print(f"# merge ID {entry.id}, {entry.time}: {entry.name}", file=sys.stderr)
    elif args.action == "search":
        found = history.search(" ".join(args.words), "or" if args.any else "and")
        print(table(found) if found else "no merge matches")
    elif args.action == "import":
        new = history.import_supermerger_csv(args.words[0])
        print(f"imported {len(new)} merges from {args.words[0]} into {history.path}"
              + (f" as IDs {new[0].id}–{new[-1].id}" if new else ""))
    return 0


def cmd_adjust(args) -> int:
    out = Path(args.out)
    with command_run("adjust", args.threads) as run:
        result = adjust_to_file(args.model, args.values, out, SaveOptions(fp16=args.fp16, overwrite=args.overwrite),
                                run=run)
    print(f"adjusted {sum(1 for s in result.plan.steps if s.adjust)} keys of {args.model} "
          f"({args.values}); wrote {out} ({_human(out.stat().st_size)})")
    return 0


def cmd_analyze(args) -> int:
    from . import analysis
    from .csvfile import write_csv
    from .plan import ModelInfo, detect_family
    from .sources import open_model

    with open_model(args.model_a) as a, open_model(args.model_b) as b:
        family = detect_family({"a": ModelInfo.of(a), "b": ModelInfo.of(b)})
        with command_run("compare", args.threads) as run:
            if args.mode == "asimilarity":
                result = analysis.asimilarity(a, b, family, run)
            else:
                parts = tuple(p.strip() for p in args.parts.split(",") if p.strip())
                result = analysis.cosine(a, b, family, args.mode, args.method, parts, run)
    if args.csv:
        write_csv(args.csv, result.csv_rows())
    print(analysis.table_text(result))
    return 0


def cmd_metadata(args) -> int:
    from .sources import metadata_json

    print(metadata_json(args.model))
    return 0


def cmd_keys(args) -> int:
    from .analysis import elements
    from .plan import ModelInfo, detect_family
    from .sources import open_model

    with open_model(args.model) as src:
        family = detect_family({"a": ModelInfo.of(src)})
        rows = elements(src, family, args.filter)
    if args.blocks:
        counts = {}
        for _key, block, *_ in rows:
            counts[block] = counts.get(block, 0) + 1
        print(f"{family.label}: {len(rows)} keys")
        for block in [*family.slots, "-"]:
            if block in counts:
                print(f"{block}\t{counts[block]}")
    else:
        for key, block, fine, shape, dtype in rows:
            print("\t".join([key, block] + ([fine] if family.extended else []) + [str(shape), dtype]))
    return 0


def cmd_demo(args) -> int:
    from .synthetic import layout_params, random_state_dict, sd1_layout, write_model

    folder = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="supermerger-demo-"))
    folder.mkdir(parents=True, exist_ok=True)
    layout = sd1_layout(scale=1 / 8)
    t0 = time.perf_counter()
    for name, seed in (("model_a", 1), ("model_b", 2), ("model_c", 3)):
        write_model(random_state_dict(layout, seed), folder / f"{name}.safetensors")
    print(f"demo: three random SD1.5-layout models ({len(layout) + 2} keys, {layout_params(layout) / 1e6:.1f} M "
          f"parameters each) in {folder} ({time.perf_counter() - t0:.1f} s)")
    recipe = Recipe(model_a="model_a.safetensors", model_b="model_b.safetensors", model_c="model_c.safetensors",
                    mode="add_difference", calcmode="trainDifference", weights_alpha="GRAD_V")
    (folder / "recipe.json").write_text(recipe.to_json())
    print(f"recipe: {folder / 'recipe.json'}: add difference, calcmode trainDifference, block weights GRAD_V")
    run_merge(recipe, folder / "merged.safetensors", SaveOptions(overwrite=True), base_dir=folder)
    more = {
        "elemental.json": recipe.replace(mode="weight_sum", calcmode="normal", weights_alpha=None, alpha=0.3,
                                         elemental="OUT03-OUT05:attn2:0.8\nNOT M00:NOT attn:0"),
        "dice.json": recipe.replace(mode="weight_sum", calcmode="cosineA", weights_alpha=None, seed=12345,
                                    dice={"mode": "U", "clamp_upper": "1", "clamp_lower": "0"}),
    }
    for name, r in more.items():
        (folder / name).write_text(r.to_json())
    print(f"also try: python -m merge_core merge {folder / 'elemental.json'} --out {folder} --elist "
          f"{folder / 'elist.csv'}   (an elemental merge; a dice roll is in dice.json)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m merge_core",
                                description="SuperMerger's checkpoint merges from the command line.")
    sub = p.add_subparsers(dest="command", required=True)

    m = sub.add_parser("merge", help="merge the models a recipe names into a safetensors file",
                       description="Run a recipe (JSON, see README) and write the merged checkpoint. Model "
                                   "paths in the recipe are relative to the recipe's folder.")
    m.add_argument("recipe", help="recipe JSON file")
    m.add_argument("--out", required=True, help="output .safetensors file, or a folder for an automatic name")
    m.add_argument("--fp16", action="store_true", help="store float32/bfloat16 weights as float16")
    m.add_argument("--prune", action="store_true", help="keep only U-Net, VAE and text-encoder weights")
    m.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    m.add_argument("--no-metadata", action="store_true", help="do not store the recipe and input hashes")
    m.add_argument("--reset-clip-ids", action="store_true", help="rewrite the text encoder's position ids")
    m.add_argument("--bake-vae", metavar="VAE", help="replace the VAE with the one in this file")
    m.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where to compute (cpu; with cuda the "
                                                                             "threads feed the device)")
    add_threads_option(m)
    m.add_argument("--elist", metavar="CSV", help="also write every merged key's alpha and beta (the E-list)")
    m.add_argument("--history", metavar="FILE", help="merge history file (default: $SUPERMERGER_HISTORY or "
                                                     "~/.local/share/supermerger-comfy/history.jsonl)")
    m.add_argument("--no-history", action="store_true", help="do not record this merge in the history")
    m.set_defaults(func=cmd_merge)

    d = sub.add_parser("demo", help="merge three small synthetic SD1.5-layout models and save the result")
    d.add_argument("--dir", help="folder for the demo files (default: a new temporary folder)")
    d.set_defaults(func=cmd_demo)

    a = sub.add_parser("adjust", help="apply Adjust (detail, contrast, brightness, colour) to one model",
                       description="Adjust a model's first and last U-Net layers (SPEC §6) and save it.")
    a.add_argument("model", help=".safetensors or .ckpt file")
    a.add_argument("values", help="IN,OUT,OUT2,CONT,BRI,COL1,COL2,COL3 e.g. 2,0,0,0,1,0,0,0")
    a.add_argument("--out", required=True, help="output .safetensors file")
    a.add_argument("--fp16", action="store_true", help="store float32/bfloat16 weights as float16")
    a.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    add_threads_option(a)
    a.set_defaults(func=cmd_adjust)

    an = sub.add_parser("analyze", help="how similar two models are, per block or per key",
                        description="Cosine similarity (x100) of two models per key and per block, or ASimilarity "
                                    "of their self-attention blocks (SPEC 14).")
    an.add_argument("model_a")
    an.add_argument("model_b")
    an.add_argument("--mode", default="block", choices=["asimilarity", "block", "element", "both"])
    an.add_argument("--method", default="mean", choices=["mean", "min", "attn2"], help="block value (block mode)")
    an.add_argument("--parts", default="te,unet,vae", help="which parts to compare: te, unet, vae")
    an.add_argument("--csv", help="also write the table as CSV")
    add_threads_option(an)
    an.set_defaults(func=cmd_analyze)

    md = sub.add_parser("metadata", help="print a safetensors file's metadata as JSON")
    md.add_argument("model")
    md.set_defaults(func=cmd_metadata)

    k = sub.add_parser("keys", help="list a model's keys with their blocks, shapes and dtypes")
    k.add_argument("model", help=".safetensors or .ckpt file")
    k.add_argument("--blocks", action="store_true", help="only count keys per block")
    k.add_argument("--filter", help="only keys containing this text")
    k.set_defaults(func=cmd_keys)

    h = sub.add_parser("history", help="list, show, search or import recorded merges",
                       description="Every merge is recorded with an ID. `show ID` prints its recipe (-1 = the last "
                                   "merge), ready for `merge`.")
    h.add_argument("action", choices=["list", "show", "search", "import"])
    h.add_argument("words", nargs="*", help="show: the ID; search: words to look for; import: SuperMerger's "
                                            "mergehistory.csv")
    h.add_argument("--last", type=int, default=20, help="list: how many of the newest merges (20)")
    h.add_argument("--any", action="store_true", help="search: any word matches (default: all words)")
    h.add_argument("--history", metavar="FILE", help="history file (default as for merge)")
    h.set_defaults(func=cmd_history)

    lora_cli.add_parsers(sub)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except MergeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, MergeInterrupted):
        print("interrupted: nothing was written", file=sys.stderr)
        return 130
