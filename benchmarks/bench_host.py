"""Host benchmark (issue: ComfyUI nodes): our SuperMergerWeightSum against ComfyUI's core merge nodes in a
real ComfyUI, COLD: a fresh server process per measured run, so ComfyUI caches nothing between runs.

    COMFYUI_PATH=/path/to/ComfyUI /path/to/comfy-venv/bin/python benchmarks/bench_host.py \
        [--rounds 2] [--kind sd15|mini_sd15] [--calcmode normal]

Workflow (HTTP API, built with tests/host/comfy_host.graph): two random checkpoints of --kind (seeds 1 and 2,
built once with tests/host/make_checkpoints.py and cached by comfy_host.build_checkpoint) →
CheckpointLoaderSimple ×2 → merge MODEL and CLIP at α = 0.5 → CLIPTextEncode ×2 → EmptyLatentImage 64×64 →
KSampler 4 steps euler → VAEDecode (A's VAE) → SaveImage, in two variants:

    ours  SuperMergerWeightSum(model_a=A, model_b=B, clip_a, clip_b, alpha=0.5, beta=0.25, calcmode=--calcmode)
    core  ModelMergeSimple(model1=A, model2=B, ratio=0.5) + CLIPMergeSimple(clip1=A, clip2=B, ratio=0.5)

Rounds are interleaved (ours, core, ours, core, …) so machine noise hits both alike. Per run: server start
time (process spawn until /system_stats and /object_info answer; excluded from wall), wall time from queueing
the prompt until its history entry says completed (Host.run polls every 0.2 s), and the server process's peak
RSS (VmHWM from /proc/<pid>/status, read right after completion, before the server is stopped). Only one
server runs at a time. The checkpoint files are read once, untimed, before the first run so every run sees
the same (warm) OS page cache; the pack's own on-disk cache (SUPERMERGER_CACHE_DIR) is a fresh empty folder
per run. Prints medians, max peak RSS, ratios ours/core and how far the two variants' images differ
(ComfyUI's ratio weights model1 and does its own arithmetic, so small pixel differences are expected and
only reported). Results also go to benchmarks/out/bench_host_<kind>_<calcmode>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests" / "host"))

import comfy_host  # noqa: E402
from comfy_host import COMFY, ExecutionFailed, build_checkpoint, graph  # noqa: E402

OURS_NODE = "SuperMergerWeightSum"


def start_server(work: Path, ckpts: dict, tag: str) -> tuple:
    """A fresh server (comfy_host.launch) with an empty pack cache, checked to have registered our node."""
    env = dict(os.environ, SUPERMERGER_CACHE_DIR=str(work / f"pack-cache-{tag}"))
    host, proc, started = comfy_host.launch(work, ckpts, env, f"-{tag}")
    if OURS_NODE not in host.get(f"/object_info/{OURS_NODE}"):
        stop_server(proc)
        raise RuntimeError(f"{OURS_NODE} is not registered:\n{host.log.read_text()[-3000:]}")
    return host, proc, started


stop_server = comfy_host.stop


def peak_rss_mb(pid: int) -> float:
    """VmHWM (peak resident set) of a live process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB → MB
    raise RuntimeError(f"no VmHWM in /proc/{pid}/status")


def workflow(variant: str, kind: str, calcmode: str) -> dict:
    a, b = f"{kind}_a", f"{kind}_b"
    g = graph(OURS_NODE, {"alpha": 0.5, "beta": 0.25, "calcmode": calcmode}, a=a, b=b, seed=0)
    if variant == "ours":
        return g
    del g["merge"]
    g["mm"] = {"class_type": "ModelMergeSimple", "inputs": {"model1": ["ckA", 0], "model2": ["ckB", 0], "ratio": 0.5}}
    g["cm"] = {"class_type": "CLIPMergeSimple", "inputs": {"clip1": ["ckA", 1], "clip2": ["ckB", 1], "ratio": 0.5}}
    g["ks"]["inputs"]["model"] = ["mm", 0]
    g["pos"]["inputs"]["clip"] = g["neg"]["inputs"]["clip"] = ["cm", 0]
    return g


def measure(variant, work, ckpts, kind, calcmode, tag, timeout):
    """One cold run: fresh server → queue → wait → VmHWM → stop. Returns a result dict (with 'error' on failure)."""
    host, proc, started = start_server(work, ckpts, tag)
    res = {"variant": variant, "start_s": started, "log": str(host.log)}
    try:
        prompt = workflow(variant, kind, calcmode)
        t0 = time.perf_counter()
        try:
            entry = host.run(prompt, timeout=timeout)
        except ExecutionFailed as e:
            res["wall_s"] = time.perf_counter() - t0
            res["error"] = e.info if isinstance(e.info, dict) else {"message": str(e.info)}
        except AssertionError as e:  # refused prompt or timeout
            res["wall_s"] = time.perf_counter() - t0
            res["error"] = {"message": str(e)}
        else:
            res["wall_s"] = time.perf_counter() - t0
        res["peak_rss_mb"] = peak_rss_mb(proc.pid)  # before the server stops
        if "error" not in res:
            res["image"] = host.image(entry)
    finally:
        stop_server(proc)
    return res


def describe_error(err: dict) -> str:
    if "exception_message" in err:
        tb = "".join(err.get("traceback") or [])
        return (f"node {err.get('node_id')} ({err.get('node_type')}): {err.get('exception_type')}: "
                f"{err.get('exception_message')}\n{tb}")
    return err.get("message", json.dumps(err))


def image_diff(x, y) -> str:
    import numpy as np

    if x.shape != y.shape:
        return f"shapes differ: {x.shape} vs {y.shape}"
    d = np.abs(x.astype(np.int16) - y.astype(np.int16))
    if not d.any():
        return "pixel-identical"
    return (f"max pixel difference {int(d.max())}/255, mean {d.mean():.3f}, "
            f"{(d.max(axis=-1) > 0).mean() * 100:.1f}% of pixels differ")


def warm_page_cache(paths):
    for p in paths:
        with open(p, "rb", buffering=0) as f:
            buf = bytearray(16 << 20)
            while f.readinto(buf):
                pass


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--kind", default="sd15", choices=["sd15", "mini_sd15"])
    ap.add_argument("--calcmode", default="normal", help="calcmode of SuperMergerWeightSum (default normal)")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds one prompt may take")
    ap.add_argument("--keep", action="store_true", help="keep the temporary work folder (server logs, images)")
    args = ap.parse_args()
    if not COMFY:
        sys.exit(comfy_host.SKIP_REASON)

    t0 = time.perf_counter()
    ckpts = {f"{args.kind}_a": build_checkpoint(args.kind, 1), f"{args.kind}_b": build_checkpoint(args.kind, 2)}
    print(f"checkpoints ({time.perf_counter() - t0:.1f} s): " + ", ".join(f"{n} → {p}" for n, p in ckpts.items()),
          flush=True)
    warm_page_cache(ckpts.values())

    work = Path(tempfile.mkdtemp(prefix="bench_host_"))
    results = {"ours": [], "core": []}
    failed_logs = []
    try:
        for r in range(args.rounds):
            for variant in ("ours", "core"):
                res = measure(variant, work, ckpts, args.kind, args.calcmode, f"r{r + 1}-{variant}", args.timeout)
                results[variant].append(res)
                line = (f"round {r + 1} {variant}: start {res['start_s']:.1f} s, wall {res['wall_s']:.2f} s, "
                        f"peak RSS {res['peak_rss_mb']:.0f} MB")
                if "error" in res:
                    line += f"\n  ERROR {describe_error(res['error'])}"
                    failed_logs.append(res["log"])
                print(line, flush=True)
    finally:
        if args.keep or failed_logs:
            print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    print(f"\nCOLD {args.kind}: 2 checkpoints → merge α=0.5 → 64×64, 4 steps euler → VAEDecode → SaveImage; "
          f"ours calcmode={args.calcmode}; {args.rounds} round(s), a fresh server per run")
    print(f"  {'variant':28s} {'wall med':>9s} {'wall min–max':>15s} {'start med':>9s} {'peak RSS max':>13s}  ok")
    summary = {}
    labels = {"ours": f"ours WeightSum({args.calcmode})", "core": "core ModelMerge+CLIPMerge"}
    for variant, runs in results.items():
        walls = [x["wall_s"] for x in runs if "error" not in x]
        rss = [x["peak_rss_mb"] for x in runs]
        starts = [x["start_s"] for x in runs]
        summary[variant] = {"wall_median_s": statistics.median(walls) if walls else None,
                            "wall_all_s": [x["wall_s"] for x in runs], "start_median_s": statistics.median(starts),
                            "peak_rss_max_mb": max(rss), "peak_rss_all_mb": rss,
                            "ok": len(walls), "runs": len(runs)}
        s = summary[variant]
        wall = f"{s['wall_median_s']:8.2f}s" if walls else "   failed"
        span = f"{min(walls):6.2f}–{max(walls):6.2f} s" if walls else ""
        print(f"  {labels[variant]:28s} {wall:>9s} {span:>15s} {s['start_median_s']:8.1f}s "
              f"{s['peak_rss_max_mb']:10.0f} MB  {s['ok']}/{s['runs']}")
    o, c = summary["ours"], summary["core"]
    if o["wall_median_s"] and c["wall_median_s"]:
        ratio = o["wall_median_s"] / c["wall_median_s"]
        target = "  (target ≤ 1.5×)" if args.calcmode != "normal" else ""
        print(f"  ours / core wall (median):   {ratio:.2f}×{target}")
        summary["ratio_wall"] = ratio
    summary["ratio_rss"] = o["peak_rss_max_mb"] / c["peak_rss_max_mb"]
    print(f"  ours / core peak RSS (max):  {summary['ratio_rss']:.2f}×")

    imgs = {v: [x["image"] for x in runs if "image" in x] for v, runs in results.items()}
    if imgs["ours"] and imgs["core"]:
        summary["images_ours_vs_core"] = image_diff(imgs["ours"][0], imgs["core"][0])
        print(f"  images ours vs core: {summary['images_ours_vs_core']}")
    for v, lst in imgs.items():
        if len(lst) > 1:
            same = [image_diff(lst[0], x) for x in lst[1:]]
            summary[f"images_{v}_across_rounds"] = same
            print(f"  images {v} across rounds: {', '.join(same)}")

    out = HERE / "out"
    out.mkdir(exist_ok=True)
    dest = out / f"bench_host_{args.kind}_{args.calcmode}.json"
    for runs in results.values():
        for x in runs:
            x.pop("image", None)
    dest.write_text(json.dumps({"args": vars(args), "summary": summary, "runs": results}, indent=1, default=str))
    print(f"  results: {dest}")
    if failed_logs:
        print("  server logs of failed runs: " + ", ".join(failed_logs))
        sys.exit(1)


if __name__ == "__main__":
    main()
