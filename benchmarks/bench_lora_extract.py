"""LoRA extraction benchmark (issue #6): our extraction against ComfyUI core's `LoraSave` at the same rank.

    flock /tmp/sm-heavy.lock env COMFYUI_PATH=/path/to/ComfyUI /path/to/comfy-venv/bin/python \
        benchmarks/bench_lora_extract.py [--rank 64] [--rounds 3] [--kind mini_sd15]

Models: the host harness's random checkpoints of --kind (seeds 2 = "tuned" A and 1 = "original" B; built
once by tests/host/make_checkpoints.py and cached by comfy_host.build_checkpoint). Two parts, both with
rounds interleaved (the order rotates each round) so machine noise hits every variant alike:

1. Nodes, as a user runs them, in ONE ComfyUI server (HTTP API; checkpoints loaded once, untimed), on the
   U-Net (core's LoraSave would also run a full SVD of CLIP's 49408 × 768 token embedding, a 10 GB U, if
   its text_encoder_diff were connected; so no CLIP input on either side):
     core       ModelMergeSubtract(A, B, 1) → LoraSave(rank, standard, bias_diff=True): ComfyUI's full
                `torch.linalg.svd` of every ≥2-D weight (every conv, 3×3 included) plus bias/norm diffs
     ours       SuperMergerLoraExtract(A, B, rank): kohya's targets (transformer linears and 1×1 convs), as
                SuperMerger
     ours_locon the same with conv_rank = rank: ResBlock/down/upsampler convs too, about core's coverage
   Time = the prompt's execution_start → execution_success timestamps (ComfyUI's own, in ms). Each prompt
   has a fresh file name, so the node runs again while the checkpoint loaders stay cached.
   Then the reconstruction error of the files: for every module both files have (kohya's targets),
   ‖ΔW − up·down·scale‖ against the optimum ‖ΔW − best rank-r‖ (full SVD, unclamped) and against kohya's
   full SVD with its 0.99-quantile clamp; totals over modules (√Σ‖·‖²) and the worst module.
2. The factorisation alone, in this process, on exactly the layers core extracts (every ≥2-D U-Net ΔW): ComfyUI's
   `extract_lora` (full SVD + clamp) against our `extract.factors` (fast truncated SVD + the same clamp):
   time ratio, and our unclamped factors' Frobenius error over the optimum per layer (the ≤ 1.01 × bound),
   also on the same shapes with a power-law spectrum (σᵢ = 1/i), where the power iterations must work.

Results go to benchmarks/out/bench_lora_extract_<kind>_r<rank>.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests" / "host"))
sys.path.insert(0, str(ROOT))

import comfy_host  # noqa: E402
from comfy_host import COMFY, build_checkpoint  # noqa: E402
from merge_core.lora import extract, names  # noqa: E402
from merge_core.lora.decompose import clamp_factors  # noqa: E402
from merge_core.lora.lowrank import low_rank  # noqa: E402
from merge_core.sources import SafetensorsFile  # noqa: E402

CORE_TE_PREFIX = ("text_encoders.clip_l.transformer.", "cond_stage_model.transformer.")


# Part 1: the nodes in a server ---------------------------------------------------------------------

def loaders() -> dict:
    return {"ckA": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tuned.safetensors"}},
            "ckB": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "original.safetensors"}}}


def prompt(variant: str, rank: int, tag: str) -> dict:
    g = loaders()
    if variant == "core":
        g["sub"] = {"class_type": "ModelMergeSubtract", "inputs": {"model1": ["ckA", 0], "model2": ["ckB", 0],
                                                                   "multiplier": 1.0}}
        g["save"] = {"class_type": "LoraSave", "inputs": {"filename_prefix": f"loras/{tag}", "rank": rank,
                                                          "lora_type": "standard", "bias_diff": True,
                                                          "model_diff": ["sub", 0]}}
    else:
        g["ex"] = {"class_type": "SuperMergerLoraExtract",
                   "inputs": {"model_a": ["ckA", 0], "model_b": ["ckB", 0], "alpha": 1.0, "beta": 1.0, "rank": rank,
                              "conv_rank": rank if variant == "ours_locon" else 0, "clamp": True,
                              "save_precision": "fp16", "filename": tag, "overwrite": False}}
    return g


def execution_seconds(entry: dict) -> float:
    stamps = {m[0]: m[1]["timestamp"] for m in entry["status"]["messages"] if "timestamp" in m[1]}
    return (stamps["execution_success"] - stamps["execution_start"]) / 1000.0


def output_file(work: Path, variant: str, tag: str) -> Path:
    if variant == "core":
        found = sorted((work / "output" / "loras").glob(f"{tag}_*.safetensors"))
        return found[-1]
    return work / "models" / "loras" / f"{tag}.safetensors"


def run_nodes(work: Path, ckpts: dict, rank: int, rounds: int, variants: list) -> dict:
    (work / "models" / "loras").mkdir(parents=True, exist_ok=True)
    host, proc, _started = comfy_host.launch(work, ckpts)
    times = {v: [] for v in variants}
    files = {}
    try:
        warm = loaders()  # load both checkpoints once, untimed: every timed run finds them cached
        warm["ex"] = prompt("ours", 1, "warmup")["ex"]
        host.run(warm, timeout=3600)
        for r in range(rounds):
            order = variants[r % len(variants):] + variants[:r % len(variants)]
            for v in order:
                tag = f"bench_{v}_{uuid.uuid4().hex[:8]}"
                entry = host.run(prompt(v, rank, tag), timeout=7200)
                times[v].append(execution_seconds(entry))
                files[v] = output_file(work, v, tag)
                print(f"  round {r + 1} {v:11s} {times[v][-1]:8.2f} s", flush=True)
    finally:
        comfy_host.stop(proc)
    return {"times": times, "files": files}


# Reconstruction error of the written files ---------------------------------------------------------

def _product(up: torch.Tensor, down: torch.Tensor, scale: float) -> torch.Tensor:
    return (up.float().reshape(up.shape[0], -1) @ down.float().reshape(down.shape[0], -1)) * scale


def lora_products(path: Path, family: str = "sd1") -> dict:
    """checkpoint key → the LoRA's ΔW (flattened to out × in·k·k) for every up/down module of the file."""
    out = {}
    with SafetensorsFile(path) as f:
        keys = set(f.keys())
        for k in sorted(keys):
            if not k.endswith(".lora_up.weight"):
                continue
            module = k[: -len(".lora_up.weight")]
            down = f.get(module + ".lora_down.weight")
            alpha = f.get(module + ".alpha").float().item() if module + ".alpha" in keys else down.shape[0]
            if module.startswith("lora_"):
                ckpt = names.checkpoint_key(module, family)
            elif module.startswith("diffusion_model."):
                ckpt = "model." + module + ".weight"
            else:
                ckpt = module.replace(*CORE_TE_PREFIX) + ".weight"
            out[ckpt] = _product(f.get(k), down, alpha / down.shape[0])
    return out


def reference_errors(delta: torch.Tensor, rank: int) -> tuple:
    """(optimal error, kohya's full-SVD-plus-clamp error) of one flattened ΔW."""
    u, s, vh = torch.linalg.svd(delta, full_matrices=False)
    r = min(rank, *delta.shape)
    optimum = float(s[r:].double().pow(2).sum().sqrt())
    up, down = clamp_factors(u[:, :r] * s[:r], vh[:r])
    return optimum, float(torch.linalg.norm(delta - up @ down))


def file_errors(files: dict, a: SafetensorsFile, b: SafetensorsFile, rank: int) -> dict:
    products = {v: lora_products(p) for v, p in files.items()}
    common = sorted(set.intersection(*(set(p) for p in products.values())))
    sums = {v: 0.0 for v in products}
    sums.update(optimum=0.0, kohya=0.0, delta=0.0)
    worst = {v: 0.0 for v in products}
    for key in common:
        delta = (a.get(key).float() - b.get(key).float()).reshape(a.shape(key)[0], -1)
        optimum, kohya = reference_errors(delta, rank)
        sums["optimum"] += optimum ** 2
        sums["kohya"] += kohya ** 2
        sums["delta"] += float(torch.linalg.norm(delta)) ** 2
        for v, prods in products.items():
            err = float(torch.linalg.norm(delta - prods[key]))
            sums[v] += err ** 2
            worst[v] = max(worst[v], err / max(optimum, 1e-12))
    total = {k: v ** 0.5 for k, v in sums.items()}
    return {"modules": len(common),
            "relative_error": {k: total[k] / total["delta"] for k in total if k != "delta"},
            "over_optimum": {k: total[k] / total["optimum"] for k in total if k not in ("delta",)},
            "over_kohya": {k: total[k] / total["kohya"] for k in total if k not in ("delta",)},
            "worst_module_over_optimum": worst}


# Part 2: the factorisation alone ------------------------------------------------------------------

def core_extract_lora():
    sys.path.insert(0, COMFY)
    import comfy.cli_args

    comfy.cli_args.args.cpu = True
    from comfy_extras.nodes_lora_extract import extract_lora

    return extract_lora


def layer_deltas(a: SafetensorsFile, b: SafetensorsFile) -> list:
    """Every ≥2-D weight difference of the U-Net (what core's LoraSave extracts from a model diff)."""
    out = []
    for key in a.keys():
        if key.endswith(".weight") and len(a.shape(key)) >= 2 and key.startswith("model.diffusion_model."):
            out.append((key, a.get(key).float() - b.get(key).float()))
    return out


def power_law_like(delta: torch.Tensor, seed: int) -> torch.Tensor:
    """A matrix of the same shape with singular values 1/i (a fine-tune-like decaying spectrum)."""
    g = torch.Generator().manual_seed(seed)
    m, n = delta.shape[0], delta[0].numel()
    k = min(m, n)
    u = torch.linalg.qr(torch.randn(m, k, generator=g)).Q
    v = torch.linalg.qr(torch.randn(n, k, generator=g)).Q
    return ((u / torch.arange(1, k + 1)) @ v.T).reshape(delta.shape) * 0.01


def run_factorisation(deltas: list, rank: int, rounds: int) -> dict:
    core = core_extract_lora()
    times = {"core_extract_lora": [], "ours_factors": []}
    for r in range(rounds):
        order = list(times) if r % 2 == 0 else list(times)[::-1]
        for v in order:
            t0 = time.perf_counter()
            for _key, d in deltas:
                if v == "core_extract_lora":
                    core(d, rank)
                else:
                    extract.factors(d, min(rank, d.shape[0], d.shape[1]))
            times[v].append(time.perf_counter() - t0)
            print(f"  round {r + 1} {v:18s} {times[v][-1]:8.2f} s ({len(deltas)} layers)", flush=True)
    bound = {}
    for label, make in (("mini_pair", lambda d, i: d), ("power_law", power_law_like)):
        ratios = []
        for i, (_key, d) in enumerate(deltas):
            mat = make(d, i).reshape(d.shape[0], -1)
            r = min(rank, d.shape[0], d.shape[1])
            up, down = low_rank(mat, r)
            s = torch.linalg.svdvals(mat.double())
            optimum = float(s[r:].pow(2).sum().sqrt())
            if optimum > 1e-9 * float(s.pow(2).sum().sqrt()):
                ratios.append(float(torch.linalg.norm(mat.double() - (up @ down).double())) / optimum)
        bound[label] = {"layers": len(ratios), "max_over_optimum": max(ratios),
                        "median_over_optimum": statistics.median(ratios)}
    return {"times": times, "bound": bound}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rank", type=int, default=64)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--kind", default="mini_sd15", choices=["mini_sd15", "sd15"])
    p.add_argument("--variants", default="core,ours,ours_locon")
    p.add_argument("--skip-nodes", action="store_true", help="only part 2 (the factorisation in this process)")
    args = p.parse_args()
    if not COMFY:
        sys.exit("COMFYUI_PATH is not set")
    tuned, original = build_checkpoint(args.kind, 2), build_checkpoint(args.kind, 1)
    variants = args.variants.split(",")
    result = {"kind": args.kind, "rank": args.rank, "rounds": args.rounds}
    with tempfile.TemporaryDirectory(prefix="bench-lora-extract-") as tmp:
        work = Path(tmp)
        if not args.skip_nodes:
            print(f"part 1: nodes in one ComfyUI server, {args.kind}, rank {args.rank}, {args.rounds} rounds")
            nodes = run_nodes(work, {"tuned": tuned, "original": original}, args.rank, args.rounds, variants)
            med = {v: statistics.median(t) for v, t in nodes["times"].items()}
            result["nodes"] = {"times_s": nodes["times"], "median_s": med}
            if "core" in med:
                result["nodes"]["core_over"] = {v: med["core"] / med[v] for v in med if v != "core"}
            with SafetensorsFile(tuned) as a, SafetensorsFile(original) as b:
                result["errors"] = file_errors(nodes["files"], a, b, args.rank)
        print("part 2: the factorisation alone, on every ≥2-D U-Net layer core extracts")
        with SafetensorsFile(tuned) as a, SafetensorsFile(original) as b:
            deltas = layer_deltas(a, b)
        part2 = run_factorisation(deltas, args.rank, args.rounds)
        med = {v: statistics.median(t) for v, t in part2["times"].items()}
        result["factorisation"] = {"layers": len(deltas), "times_s": part2["times"], "median_s": med,
                                   "core_over_ours": med["core_extract_lora"] / med["ours_factors"],
                                   "error_bound": part2["bound"]}
    print(json.dumps({k: v for k, v in result.items() if k not in ("rounds",)}, indent=1))
    out = HERE / "out" / f"bench_lora_extract_{args.kind}_r{args.rank}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
