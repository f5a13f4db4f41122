"""`python -m merge_core lora merge | bake | info | prompt` (SPEC §13.2–13.4, 13.7, 13.10–13.12)."""
from __future__ import annotations

import argparse
from contextlib import contextmanager
from pathlib import Path

from .. import precision
from ..console import add_threads_option
from ..errors import MergeError
from . import syntax


def _precision(value: str, keep: bool = False) -> str:
    """argparse type: a word of the one precision vocabulary (merge_core.precision)."""
    try:
        return precision.canonical(value, "precision", keep)
    except MergeError as e:
        raise argparse.ArgumentTypeError(e.reason) from None

LIST_HELP = ("LoRA list: name:ratio[:blocks] entries separated by commas; blocks = a preset name or "
             "12/17/20/26/61 numbers, e.g. 'style:0.8,detail:1:OUTS'. Names are files in --lora-dir "
             "(the .safetensors suffix may be left out).")
RANKS = "no, auto or a number"


def resolve(name: str, lora_dir: Path) -> Path:
    """A LoRA name → its file: a path that exists as given, else a file in `lora_dir` (or below it) found by
    name, with or without its suffix."""
    from .files import LORA_SUFFIXES, find_lora

    if Path(name).is_file():
        return Path(name)
    available = sorted(str(p.relative_to(lora_dir)) for p in lora_dir.rglob("*")
                       if p.suffix.lower() in LORA_SUFFIXES and p.is_file())
    return lora_dir / find_lora(name, available, f"LoRA {name}")


@contextmanager
def opened_entries(args, desc: str):
    """The list's (LoraFile, LoraEntry) pairs and the command's run context; files and bar closed afterwards."""
    from ..console import command_run
    from .files import LoraFile

    entries = syntax.parse_list(args.loras, syntax.lora_presets(args.presets))
    opened = []
    try:
        for entry in entries:
            opened.append((LoraFile.open(resolve(entry.name, Path(args.lora_dir)), entry.name), entry))
        with command_run(desc, getattr(args, "threads", None)) as run:
            yield opened, run
    finally:
        for lora, _ in opened:
            lora.close()


def _report(notes: list, line: str, path: Path) -> None:
    for note in notes:
        print(f"note: {note}")
    print(f"{line}: wrote {path} ({path.stat().st_size / 2**20:.1f} MB)")


def cmd_merge(args) -> int:
    from .merge import default_name, merge_to_file, parse_rank

    rank = parse_rank(args.rank, "--rank")
    out = Path(args.out) if args.out else Path(args.lora_dir)
    if out.is_dir():
        out = out / f"{default_name(args.loras)}.safetensors"
    calc = precision.dtype_of(args.calc_precision, "--calc-precision")
    with opened_entries(args, "merge LoRAs") as (inputs, run):
        path, merged = merge_to_file(inputs, out, rank, args.same_to_strength, args.metadata, args.precision,
                                     args.overwrite, calc, args.device, None if args.no_clamp else 0.99, run)
    how = f"re-decomposed to rank {merged.rank}" if merged.rank else "merged"
    _report(merged.notes, f"{len(inputs)} LoRA(s) {how}", path)
    return 0


def cmd_bake(args) -> int:
    from ..naming import file_name, stem
    from .bake import bake_to_file

    out = Path(args.out)
    with opened_entries(args, "bake") as (inputs, run):
        if out.is_dir():  # SuperMerger's name: <model>+<lora1>+<lora2>…
            name = "+".join([stem(args.model)] + [e.name for _, e in inputs])
            out = out / file_name(name, fp16=args.precision == "fp16")
        result = bake_to_file(args.model, inputs, out, args.precision, args.overwrite, args.device,
                              {"format": "pt", "supermerger_loras": args.loras}, run)
    _report(result.notes, f"baked {len(inputs)} LoRA(s) into {result.patched_keys} weights in "
                          f"{result.seconds:.1f} s", result.path)
    return 0


def cmd_info(args) -> int:
    from ..sources import SAFETENSORS_SUFFIXES
    from .files import LoraFile, info
    from .metadata import file_hashes

    for path in args.files:
        with LoraFile.open(path) as lora:
            i = info(lora)
            stored = lora.metadata()
        ranks = ",".join(map(str, i.ranks)) or "-"
        alphas = ",".join(f"{a:g}" for a in i.alphas) or "-"
        hashes = file_hashes(path) if Path(path).suffix.lower() in SAFETENSORS_SUFFIXES else {}
        # the additional-networks hashes of the file, and whether the ones it carries agree
        marks = "".join(f"\t{k} {v}" + ("" if stored.get(k, v) == v else f" (file says {stored[k]})")
                        for k, v in hashes.items())
        print(f"{i.label()}\ttype {i.type}\tversion {i.version}\trank {ranks}\talpha {alphas}\tmodules {i.modules} "
              f"({i.text_encoder_modules} text encoder)\tkinds {','.join(i.kinds) or '-'}{marks}")
    return 0


def cmd_prompt(args) -> int:
    print(syntax.from_prompt(args.prompt))
    return 0


def add_parsers(actions) -> None:
    """Add `lora merge`, `lora bake`, `lora info` and `lora prompt` to `actions`."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--lora-dir", default=".", help="folder of the LoRA files (default: the current folder)")
    common.add_argument("--presets", help="extra LoRA block-weight presets file (NAME<TAB>values or NAME:values)")
    common.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    common.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where to compute (cpu)")
    add_threads_option(common)

    m = actions.add_parser("merge", parents=[common], help="merge LoRAs into one LoRA file",
                           description="Merge LoRAs kohya-style (SPEC 13.3): equal ranks are summed factor by "
                                       "factor (a ratio r acts as r², or r with --same-to-strength); with a rank "
                                       "the weighted sum is decomposed again by SVD.")
    m.add_argument("loras", help=LIST_HELP)
    m.add_argument("--out", help="output file or folder (default: --lora-dir, automatic name)")
    m.add_argument("--rank", default="no", help=f"remake dimension: {RANKS} (auto = the largest rank when ranks "
                                                "differ)")
    m.add_argument("--same-to-strength", action="store_true", help="a ratio acts as the LoRA strength (r, sign "
                                                                   "kept) instead of r²")
    m.add_argument("--metadata", default="create new", choices=["create new", "create new without output_name",
                                                                "merge", "save all", "use first lora"])
    m.add_argument("--precision", default="fp16", type=_precision, help="save precision: fp16, bf16 or fp32 (fp16)")
    m.add_argument("--calc-precision", default="fp32", type=_precision,
                   help="precision of the plain merge: fp16, bf16 or fp32 (fp32)")
    m.add_argument("--no-clamp", action="store_true", help="re-decomposition: do not clamp the factors at their "
                                                           "0.99 quantile")
    m.set_defaults(func=cmd_merge)

    b = actions.add_parser("bake", parents=[common], help="bake LoRAs into a checkpoint file",
                           description="W' = W + r_block·ΔW for every LoRA module (SPEC 13.7), streamed from the "
                                       "model file into a new one.")
    b.add_argument("model", help="checkpoint (.safetensors or .ckpt)")
    b.add_argument("loras", help=LIST_HELP)
    b.add_argument("--out", required=True, help="output .safetensors file, or a folder for an automatic name")
    b.add_argument("--precision", default="keep", type=lambda v: _precision(v, keep=True),
                   help="dtype of floating tensors (keep = as in the model)")
    b.set_defaults(func=cmd_bake)

    i = actions.add_parser("info", help="type, rank, alpha, model version and additional-networks hashes "
                                        "(sshs_model_hash, sshs_legacy_hash) of LoRA files (SPEC 13.10, 13.11)")
    i.add_argument("files", nargs="+")
    i.set_defaults(func=cmd_info)

    p = actions.add_parser("prompt", help="turn <lora:name:w:lbw> tags of a prompt into a LoRA list (13.12)")
    p.add_argument("prompt")
    p.set_defaults(func=cmd_prompt)
