"""`python -m merge_core lora extract | extract-two` (SPEC §13.9, §13.6)."""
from __future__ import annotations

from pathlib import Path

from ..console import add_threads_option
from .cli_merge import _precision


def _output(out: str, name: str) -> Path:
    path = Path(out)
    return path / f"{name}.safetensors" if path.is_dir() else path


def cmd_extract(args) -> int:
    from ..console import command_run
    from ..sources import open_model
    from .extract import ExtractOptions, default_name, extract_lora
    from .files import precision_dtype

    v_prediction = None if args.prediction is None else args.prediction == "v"
    options = ExtractOptions(rank=args.rank, conv_rank=args.conv_rank, alpha=args.alpha, beta=args.beta,
                             save_dtype=precision_dtype(args.precision, "--precision"),
                             clamp=None if args.no_clamp else 0.99, v_prediction=v_prediction, style=args.names)
    out = _output(args.out, default_name(args.model_a, args.model_b))
    with open_model(args.model_a) as a, open_model(args.model_b) as b:
        with command_run("extract", args.threads) as run:
            result = extract_lora(a, b, options, out, args.overwrite, run=run)
    for note in result.notes:
        print(f"note: {note}")
    parts = "U-Net and text encoder" if result.text_encoder else "U-Net"
    print(f"{result.family.label}: extracted {len(result.targets)} modules ({parts}) at rank {args.rank}"
          + (f", 3×3 convs at rank {args.conv_rank}" if args.conv_rank else "") + f" in {result.seconds:.1f} s")
    print(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MB)")
    return 0


def cmd_extract_two(args) -> int:
    from .cli_merge import opened_entries
    from .extract_two import extract_two_to_file
    from .merge import default_name

    out = _output(args.out or args.lora_dir, default_name(args.loras))
    with opened_entries(args, "extract") as (inputs, run):
        path, merged = extract_two_to_file(inputs, out, args.alpha, args.beta, args.gamma, args.same_to_strength,
                                           args.metadata, args.precision, args.overwrite, run)
    modules = sum(1 for k in merged.tensors if k.endswith(".alpha"))
    print(f"extracted {modules} modules from {inputs[0][1].name} and {inputs[1][1].name}: wrote {path} "
          f"({path.stat().st_size / 2**20:.1f} MB)")
    return 0


def add_parsers(actions) -> None:
    """Add `lora extract` and `lora extract-two` to `actions`."""
    e = actions.add_parser(
        "extract", help="extract a LoRA from two checkpoints (alpha·A − beta·B)",
        description="Extract a kohya LoRA from the difference of two checkpoints (SPEC 13.9): model A is the "
                    "tuned model, model B the one the LoRA will be applied to. Transformer linears and 1x1 convs "
                    "(and the text encoder, when it changed by more than 0.1) are factorised by a fast truncated "
                    "SVD to the rank, clamped at the 0.99 quantile. Ctrl-C leaves no file behind.")
    e.add_argument("model_a", help="the tuned model (.safetensors or .ckpt)")
    e.add_argument("model_b", help="the original model")
    e.add_argument("--out", default=".", help="output .safetensors file, or a folder for the automatic name "
                                              "lora_<A>-<B>.safetensors (default: the current folder)")
    e.add_argument("--rank", type=int, default=128, help="rank (dimension) of the LoRA (128, SuperMerger's "
                                                           "default)")
    e.add_argument("--conv-rank", type=int, default=0,
                   help="also extract the 3x3 convs of ResBlocks, down- and upsamplers at this rank (kohya LoCon "
                        "conv_dim); 0 = no (the default, as SuperMerger)")
    e.add_argument("--alpha", type=float, default=1.0, help="weight of model A (1)")
    e.add_argument("--beta", type=float, default=1.0, help="weight of model B (1)")
    e.add_argument("--precision", default="fp16", type=_precision, help="save precision: fp16, bf16 or fp32 (fp16)")
    e.add_argument("--no-clamp", action="store_true", help="do not clamp the factors at their 0.99 quantile")
    e.add_argument("--prediction", choices=["epsilon", "v"],
                   help="SD2 models: record the LoRA as for a 768 v-prediction or a 512 epsilon model (SD1 and "
                        "SDXL are recorded as epsilon)")
    e.add_argument("--names", default="auto", choices=["auto", "kohya", "ldm"],
                   help="U-Net module names: kohya (diffusers paths for SD1/SD2), ldm (checkpoint paths), or auto "
                        "(kohya unless the U-Net's layout is not the released one)")
    add_threads_option(e)
    e.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    e.set_defaults(func=cmd_extract)

    from .cli_merge import LIST_HELP

    t = actions.add_parser(
        "extract-two", help="a LoRA from two LoRAs (SuperMerger's 'Extract from two LoRAs')",
        description="Merge each of two LoRAs alone (ratio and blocks applied; a ratio acts squared), then combine "
                    "their factors: lerp(a, b, alpha)·lerp(d, 1-d, beta), d = ((cos(a,b)+1)/2)^gamma (SPEC 13.6). "
                    "The LoRAs must have the same modules and ranks.")
    t.add_argument("loras", help=LIST_HELP + " Exactly two entries.")
    t.add_argument("--out", default=None, help="output file or folder (default: --lora-dir, automatic name)")
    t.add_argument("--alpha", type=float, default=1.0, help="0 = the first LoRA's factors … 1 = the second's (1)")
    t.add_argument("--beta", type=float, default=1.0, help="0 = keep what the LoRAs share … 1 = what they do not "
                                                           "(1)")
    t.add_argument("--gamma", type=float, default=1.0, help="smoothness, 0 or more (1)")
    t.add_argument("--same-to-strength", action="store_true", help="a ratio acts as the LoRA strength (r) "
                                                                   "instead of r²")
    t.add_argument("--metadata", default="create new", choices=["create new", "create new without output_name",
                                                                "merge", "save all", "use first lora"])
    t.add_argument("--precision", default="fp16", type=_precision, help="save precision: fp16, bf16 or fp32 (fp16)")
    t.add_argument("--lora-dir", default=".", help="folder of the LoRA files (default: the current folder)")
    t.add_argument("--presets", help="extra LoRA block-weight presets file")
    t.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    add_threads_option(t)
    t.set_defaults(func=cmd_extract_two)
