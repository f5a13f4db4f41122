"""Host benchmark (issue: checkpoint merge): SuperMergerCheckpointMerge of full-size SDXL checkpoints followed
by sampling, with ComfyUI's DEFAULT flags, against plain loading of one checkpoint and core's merge nodes.

    COMFYUI_PATH=/path/to/ComfyUI /path/to/comfy-venv/bin/python benchmarks/bench_checkpoint_merge.py \
        [--kind sdxl|sd15|mini_sd15] [--rounds 1] [--variants load,ours_ws,ours_ad,core_ws]

Variants, each COLD (a fresh server per run, so nothing is cached between runs), each → CLIPTextEncode ×2 →
EmptyLatentImage 64×64 → KSampler 2 steps euler → VAEDecode → SaveImage:

    load     CheckpointLoaderSimple(A)                         the memory of one loaded checkpoint
    ours_ws  SuperMergerCheckpointMerge(A, B, weight_sum, α=0.5)
    ours_ad  SuperMergerCheckpointMerge(A, B, C, add_difference, α=0.5)
    core_ws  CheckpointLoaderSimple ×2 → ModelMergeSimple + CLIPMergeSimple (ratio 0.5); for SDXL the server
             gets --fp16-unet, without which core does not fit 24 GB (see HOST.md)

Per run: wall from queueing to completion, and the server's peak RSS (VmHWM). Checkpoints (random, built once by
tests/host/make_checkpoints.py) are read once beforehand so every run sees the same warm page cache. Results also
go to benchmarks/out/bench_checkpoint_merge_<kind>.json. Run it alone: SDXL runs take most of the machine's RAM.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "host"))
sys.path.insert(0, str(HERE))

import comfy_host  # noqa: E402
from bench_host import describe_error, peak_rss_mb, warm_page_cache  # noqa: E402
from comfy_host import COMFY, ExecutionFailed, build_checkpoint, sampler  # noqa: E402

VARIANTS = ("load", "ours_ws", "ours_ad", "core_ws")


def checkpoint_merge(a, b, c="(none)", mode="weight_sum") -> dict:
    return {"class_type": "SuperMergerCheckpointMerge", "inputs": {
        "model_a": a, "model_b": b, "model_c": c, "mode": mode, "calcmode": "normal", "alpha": 0.5, "beta": 0.25,
        "gamma": 0.3, "weights_alpha": "", "weights_beta": "", "elemental": "", "include_exclude": "off",
        "blocks": "", "elements": "", "adjust": "", "use_old_calc": False, "merge_vae": True, "cache_models": 0}}


def workflow(variant: str, kind: str, steps: int) -> dict:
    a, b, c = (f"{kind}_{x}.safetensors" for x in "abc")
    g = {"ckA": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": a}}}
    model, clip, vae = ["ckA", 0], ["ckA", 1], ["ckA", 2]
    if variant.startswith("ours"):
        g = {"m": checkpoint_merge(a, b, c, "add_difference") if variant == "ours_ad" else checkpoint_merge(a, b)}
        model, clip, vae = ["m", 0], ["m", 1], ["m", 2]
    elif variant == "core_ws":
        g["ckB"] = {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": b}}
        g["mm"] = {"class_type": "ModelMergeSimple", "inputs": {"model1": ["ckA", 0], "model2": ["ckB", 0],
                                                               "ratio": 0.5}}
        g["cm"] = {"class_type": "CLIPMergeSimple", "inputs": {"clip1": ["ckA", 1], "clip2": ["ckB", 1],
                                                              "ratio": 0.5}}
        model, clip = ["mm", 0], ["cm", 0]
    g.update(sampler(model, clip, vae, steps=steps))
    return g


def measure(variant, work, ckpts, kind, steps, tag, timeout) -> dict:
    env = dict(os.environ, SUPERMERGER_CACHE_DIR=str(work / f"pack-cache-{tag}"))
    base = work / tag
    base.mkdir()
    extra = ["--fp16-unet"] if variant == "core_ws" and kind == "sdxl" else []
    host, proc, started = comfy_host.launch(base, ckpts, env, f"-{tag}", extra_args=extra)
    res = {"variant": variant, "flags": extra, "start_s": started}
    try:
        t0 = time.perf_counter()
        try:
            host.run(workflow(variant, kind, steps), timeout=timeout)
        except ExecutionFailed as e:
            res["error"] = e.info if isinstance(e.info, dict) else {"message": str(e.info)}
        except AssertionError as e:
            res["error"] = {"message": str(e)}
        res["wall_s"] = time.perf_counter() - t0
        res["peak_rss_mb"] = peak_rss_mb(proc.pid)
    finally:
        comfy_host.stop(proc)
        if proc.returncode not in (0, -15, None) and "error" not in res:
            res["error"] = {"message": f"server exited with {proc.returncode}"}
    if proc.returncode == -9:  # the kernel's OOM killer
        res["error"] = {"message": "killed (out of memory)"}
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kind", default="sdxl", choices=["sdxl", "sd15", "mini_sd15"])
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--timeout", type=float, default=3600)
    args = ap.parse_args()
    if not COMFY:
        sys.exit(comfy_host.SKIP_REASON)
    variants = [v for v in args.variants.split(",") if v]
    unknown = set(variants) - set(VARIANTS)
    if unknown:
        sys.exit(f"unknown variants {sorted(unknown)}; choose from {', '.join(VARIANTS)}")
    ckpts = {f"{args.kind}_{x}": build_checkpoint(args.kind, seed) for x, seed in (("a", 1), ("b", 2), ("c", 3))}
    warm_page_cache(ckpts.values())
    import psutil

    print(f"machine: {psutil.virtual_memory().total / 2**30:.1f} GiB RAM, {os.cpu_count()} cores", flush=True)
    results = {v: [] for v in variants}
    with tempfile.TemporaryDirectory(prefix="bench_ckpt_") as tmp:
        work = Path(tmp)
        for r in range(args.rounds):
            for i in range(len(variants)):
                v = variants[(r + i) % len(variants)]
                res = measure(v, work, ckpts, args.kind, args.steps, f"r{r + 1}-{v}", args.timeout)
                results[v].append(res)
                line = (f"round {r + 1} {v} {' '.join(res['flags'])}: wall {res['wall_s']:.1f} s, "
                        f"peak RSS {res['peak_rss_mb'] / 1024:.2f} GB")
                if "error" in res:
                    line += f"\n  ERROR {describe_error(res['error'])}"
                print(line, flush=True)
    print(f"\nCOLD {args.kind}, 64×64 {args.steps} steps, {args.rounds} round(s), medians:")
    summary = {}
    for v, runs in results.items():
        ok = [x for x in runs if "error" not in x]
        if not ok:
            print(f"  {v:8s} failed")
            continue
        summary[v] = {"wall_s": statistics.median(x["wall_s"] for x in ok),
                      "peak_rss_gb": max(x["peak_rss_mb"] for x in ok) / 1024}
        print(f"  {v:8s} wall {summary[v]['wall_s']:.1f} s   peak RSS {summary[v]['peak_rss_gb']:.2f} GB")
    if "load" in summary:
        for v in summary:
            if v != "load":
                print(f"  {v} / load: wall {summary[v]['wall_s'] / summary['load']['wall_s']:.2f}×, "
                      f"RSS {summary[v]['peak_rss_gb'] / summary['load']['peak_rss_gb']:.2f}×")
    out = HERE / "out"
    out.mkdir(exist_ok=True)
    (out / f"bench_checkpoint_merge_{args.kind}.json").write_text(json.dumps(
        {"summary": summary, "runs": {v: [{k: x[k] for k in x} for x in runs] for v, runs in results.items()}},
        indent=1, default=str))


if __name__ == "__main__":
    main()
