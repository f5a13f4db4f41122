"""Host benchmark (issue: ComfyUI nodes): our merge nodes against ComfyUI's core merge nodes in a real
ComfyUI, COLD: a fresh server process per measured run, so ComfyUI caches nothing between runs.

    COMFYUI_PATH=/path/to/ComfyUI /path/to/comfy-venv/bin/python benchmarks/bench_host.py \
        [--rounds 3] [--kind sd15|mini_sd15] [--calcmode normal] [--mode auto|weight_sum|add_difference] \
        [--baseline /path/to/another/copy/of/this/pack]

Workflow (HTTP API, built with tests/host/comfy_host.graph): random checkpoints of --kind (seeds 1, 2 and,
for add difference, 3; built once with tests/host/make_checkpoints.py and cached by
comfy_host.build_checkpoint) → CheckpointLoaderSimple per model → merge MODEL and CLIP at α = 0.5 →
CLIPTextEncode ×2 → EmptyLatentImage 64×64 → KSampler 4 steps euler → VAEDecode (A's VAE) → SaveImage, in
these variants:

  weight sum (calcmodes meant for it: normal, cosineA/B, tensor, …)
    ours  SuperMergerWeightSum(model_a=A, model_b=B, clip_a, clip_b, alpha=0.5, beta=0.25, calcmode=--calcmode)
    core  ModelMergeSimple(model1=A, model2=B, ratio=0.5) + CLIPMergeSimple(clip1=A, clip2=B, ratio=0.5)
  add difference (trainDifference, smoothAdd, extract, or --mode add_difference): A + α·(B − C) in core
    ours  SuperMergerAddDifference(model_a=A, model_b=B, model_c=C, clips, alpha=0.5, beta=0.25, gamma=0.3,
          calcmode=--calcmode)
    core  ModelMergeSubtract(model1=B, model2=C, multiplier=0.5) → ModelMergeAdd(model1=A, model2=that), and
          CLIPMergeSubtract → CLIPMergeAdd the same way
  base  (with --baseline DIR) ours again, served from another copy of this pack (e.g. a `git worktree` of an
        older commit): before/after figures of a change in the same run

Rounds are interleaved (ours, core[, base]; the order rotates each round) so machine noise hits all alike. Per
run: server start time (process spawn until /system_stats and /object_info answer; excluded from wall), wall
time from queueing the prompt until its history entry says completed (Host.run polls every 0.2 s), the server
process's CPU time over the same span (user + system, all threads: other jobs on a shared machine inflate it
less than wall time), and its peak RSS (VmHWM from /proc/<pid>/status, read right after completion, before the
server is stopped). Only one server runs at a time. The checkpoint files are read once, untimed, before the
first run so every run sees the same (warm) OS page cache; the pack's own on-disk cache
(SUPERMERGER_CACHE_DIR) is a fresh empty folder per run. Prints medians, max peak RSS, ratios ours/core (of
the medians, and round by round) and how far the images differ (ComfyUI's ratio weights model1 and does its
own arithmetic, so small pixel differences are expected and only reported). Results also go to
benchmarks/out/bench_host_<kind>_<mode>_<calcmode>.json.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests" / "host"))

import comfy_host  # noqa: E402
from comfy_host import COMFY, ExecutionFailed, build_checkpoint, graph  # noqa: E402

OURS_NODE = {"weight_sum": "SuperMergerWeightSum", "add_difference": "SuperMergerAddDifference"}
ALPHA = 0.5
# core's nodes per mode: (MODEL node, CLIP node, their inputs) — add difference is two steps, B − C then A + that
CORE = {"weight_sum": "ModelMergeSimple + CLIPMergeSimple",
        "add_difference": "ModelMergeSubtract → ModelMergeAdd (+ CLIP)"}


def start_server(work: Path, ckpts: dict, tag: str, node: str, pack: Path = None) -> tuple:
    """A fresh server (comfy_host.launch) with an empty pack cache, checked to have registered our node.
    `pack` serves another copy of this pack (its own ComfyUI base folder inside `work`)."""
    env = dict(os.environ, SUPERMERGER_CACHE_DIR=str(work / f"pack-cache-{tag}"))
    base = work / "baseline" if pack is not None else work
    base.mkdir(exist_ok=True)
    host, proc, started = comfy_host.launch(base, ckpts, env, f"-{tag}", pack=pack)
    if node not in host.get(f"/object_info/{node}"):
        stop_server(proc)
        raise RuntimeError(f"{node} is not registered:\n{host.log.read_text()[-3000:]}")
    return host, proc, started


stop_server = comfy_host.stop


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process, all its threads (fields 14 and 15 of /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    """VmHWM (peak resident set) of a live process, in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB → MB
    raise RuntimeError(f"no VmHWM in /proc/{pid}/status")


def workflow(variant: str, kind: str, mode: str, calcmode: str) -> dict:
    a, b = f"{kind}_a", f"{kind}_b"
    c = f"{kind}_c" if mode == "add_difference" else None
    g = graph(OURS_NODE[mode], {"alpha": ALPHA, "beta": 0.25, "calcmode": calcmode}, a=a, b=b, c=c, seed=0)
    if variant != "core":
        return g
    del g["merge"]
    if mode == "weight_sum":
        g["mm"] = {"class_type": "ModelMergeSimple",
                   "inputs": {"model1": ["ckA", 0], "model2": ["ckB", 0], "ratio": ALPHA}}
        g["cm"] = {"class_type": "CLIPMergeSimple",
                   "inputs": {"clip1": ["ckA", 1], "clip2": ["ckB", 1], "ratio": ALPHA}}
    else:  # A + α·(B − C): core's subtract scales model1 − model2 by its multiplier
        g["md"] = {"class_type": "ModelMergeSubtract",
                   "inputs": {"model1": ["ckB", 0], "model2": ["ckC", 0], "multiplier": ALPHA}}
        g["mm"] = {"class_type": "ModelMergeAdd", "inputs": {"model1": ["ckA", 0], "model2": ["md", 0]}}
        g["cd"] = {"class_type": "CLIPMergeSubtract",
                   "inputs": {"clip1": ["ckB", 1], "clip2": ["ckC", 1], "multiplier": ALPHA}}
        g["cm"] = {"class_type": "CLIPMergeAdd", "inputs": {"clip1": ["ckA", 1], "clip2": ["cd", 0]}}
    g["ks"]["inputs"]["model"] = ["mm", 0]
    g["pos"]["inputs"]["clip"] = g["neg"]["inputs"]["clip"] = ["cm", 0]
    return g


def resolve_mode(mode: str, calcmode: str) -> str:
    """--mode auto: weight sum for the calcmodes meant for it, add difference for the others."""
    if mode != "auto":
        return mode
    sys.path.insert(0, str(ROOT))
    from merge_core.calcmodes import get

    return "weight_sum" if "weight_sum" in get(calcmode).modes else "add_difference"


def measure(variant, work, ckpts, kind, mode, calcmode, tag, timeout, pack=None):
    """One cold run: fresh server → queue → wait → VmHWM → stop. Returns a result dict (with 'error' on failure)."""
    host, proc, started = start_server(work, ckpts, tag, OURS_NODE[mode], pack if variant == "base" else None)
    res = {"variant": variant, "start_s": started, "log": str(host.log)}
    try:
        prompt = workflow(variant, kind, mode, calcmode)
        cpu0 = cpu_seconds(proc.pid)
        t0 = time.perf_counter()
        try:
            entry = host.run(prompt, timeout=timeout)
        except ExecutionFailed as e:
            res["wall_s"] = time.perf_counter() - t0
            res["error"] = e.info if isinstance(e.info, dict) else {"message": str(e.info)}
        except AssertionError as e:  # refused prompt or timeout
            res["wall_s"] = time.perf_counter() - t0
            res["error"] = {"message": str(e)}
        except OSError as e:  # the server went away mid-run (on this shared machine: the out-of-memory killer)
            res["wall_s"] = time.perf_counter() - t0
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:  # stuck rather than gone (swapping): stop it, report the run
                proc.kill()
                proc.wait()
            res["error"] = {"message": f"the server stopped answering ({e}); exit code {proc.returncode}"}
        else:
            res["wall_s"] = time.perf_counter() - t0
        alive = proc.poll() is None
        res["peak_rss_mb"] = peak_rss_mb(proc.pid) if alive else None  # before the server stops
        res["cpu_s"] = cpu_seconds(proc.pid) - cpu0 if alive else None
        if "error" not in res:
            res["image"] = host.image(entry)
    finally:
        stop_server(proc)
    return res


def _fmt(value, spec: str) -> str:
    return format("n/a", ">" + spec.split(".")[0]) if value is None else format(value, spec)


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
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--kind", default="sd15", choices=["sd15", "mini_sd15"])
    ap.add_argument("--calcmode", default="normal", help="calcmode of our merge node (default normal)")
    ap.add_argument("--mode", default="auto", choices=["auto", "weight_sum", "add_difference"],
                    help="merge mode (auto: weight sum if the calcmode is meant for it, else add difference)")
    ap.add_argument("--baseline", type=Path, default=None,
                    help="another copy of this pack, run as a third variant 'base' (before/after of a change)")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds one prompt may take")
    ap.add_argument("--keep", action="store_true", help="keep the temporary work folder (server logs, images)")
    args = ap.parse_args()
    if not COMFY:
        sys.exit(comfy_host.SKIP_REASON)

    mode = resolve_mode(args.mode, args.calcmode)
    if args.baseline is not None and not (args.baseline / "__init__.py").is_file():
        sys.exit(f"--baseline {args.baseline}: not a copy of this pack (no __init__.py)")
    t0 = time.perf_counter()
    ckpts = {f"{args.kind}_{name}": build_checkpoint(args.kind, seed)
             for name, seed in (("a", 1), ("b", 2), ("c", 3))[:3 if mode == "add_difference" else 2]}
    print(f"checkpoints ({time.perf_counter() - t0:.1f} s): " + ", ".join(f"{n} → {p}" for n, p in ckpts.items()),
          flush=True)
    warm_page_cache(ckpts.values())

    work = Path(tempfile.mkdtemp(prefix="bench_host_"))
    variants = ["ours", "core"] + (["base"] if args.baseline is not None else [])
    results = {v: [] for v in variants}
    failed_logs = []
    try:
        for r in range(args.rounds):
            for i in range(len(variants)):
                variant = variants[(r + i) % len(variants)]
                res = measure(variant, work, ckpts, args.kind, mode, args.calcmode, f"r{r + 1}-{variant}",
                              args.timeout, args.baseline)
                results[variant].append(res)
                line = (f"round {r + 1} {variant}: start {res['start_s']:.1f} s, wall {res['wall_s']:.2f} s, "
                        f"CPU {_fmt(res['cpu_s'], '.1f')} s, peak RSS {_fmt(res['peak_rss_mb'], '.0f')} MB")
                if "error" in res:
                    line += f"\n  ERROR {describe_error(res['error'])}"
                    failed_logs.append(res["log"])
                print(line, flush=True)
    finally:
        if args.keep or failed_logs:
            print(f"work folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    print(f"\nCOLD {args.kind}: {len(ckpts)} checkpoints → {mode} α={ALPHA} → 64×64, 4 steps euler → VAEDecode → "
          f"SaveImage; ours calcmode={args.calcmode}; {args.rounds} round(s), a fresh server per run")
    print(f"  {'variant':48s} {'wall med':>9s} {'wall min–max':>15s} {'CPU med':>8s} {'start med':>9s} "
          f"{'peak RSS max':>13s}  ok")
    summary = {}
    short = OURS_NODE[mode].removeprefix("SuperMerger")
    labels = {"ours": f"ours {short}({args.calcmode})", "core": f"core {CORE[mode]}",
              "base": f"base {short}({args.calcmode})"}
    for variant, runs in results.items():
        walls = [x["wall_s"] for x in runs if "error" not in x]
        rss = [x["peak_rss_mb"] for x in runs if x["peak_rss_mb"] is not None]
        starts = [x["start_s"] for x in runs]
        cpus = [x["cpu_s"] for x in runs if "error" not in x]
        summary[variant] = {"wall_median_s": statistics.median(walls) if walls else None,
                            "wall_all_s": [x["wall_s"] for x in runs], "start_median_s": statistics.median(starts),
                            "cpu_median_s": statistics.median(cpus) if cpus else None,
                            "peak_rss_max_mb": max(rss, default=None), "peak_rss_all_mb": rss,
                            "ok": len(walls), "runs": len(runs)}
        s = summary[variant]
        wall = f"{s['wall_median_s']:8.2f}s" if walls else "   failed"
        span = f"{min(walls):6.2f}–{max(walls):6.2f} s" if walls else ""
        cpu = f"{s['cpu_median_s']:7.1f}s" if cpus else ""
        print(f"  {labels[variant]:48s} {wall:>9s} {span:>15s} {cpu:>8s} {s['start_median_s']:8.1f}s "
              f"{_fmt(s['peak_rss_max_mb'], '10.0f')} MB  {s['ok']}/{s['runs']}")
    # the issue's targets: a plain weight sum no slower than core's, every other calcmode within 1.2× its wall
    target = "  (target ≤ 1.0×)" if (mode, args.calcmode) == ("weight_sum", "normal") else "  (target ≤ 1.2×)"
    for variant, suffix in (("ours", ""), ("base", "_base")):
        if variant not in summary:
            continue
        o, c = summary[variant], summary["core"]
        if o["wall_median_s"] and c["wall_median_s"]:
            ratio = o["wall_median_s"] / c["wall_median_s"]
            print(f"  {variant} / core wall (median):   {ratio:.2f}×{target}")
            summary["ratio_wall" + suffix] = ratio
            # one round's runs are close in time, so their ratio suffers less from a slow spell on the machine
            rounds = [x["wall_s"] / y["wall_s"] for x, y in zip(results[variant], results["core"])
                      if "error" not in x and "error" not in y]
            summary["ratio_wall_per_round" + suffix] = rounds
            if rounds:
                print(f"  {variant} / core wall per round:  {', '.join(f'{q:.2f}' for q in rounds)} "
                      f"(median {statistics.median(rounds):.2f}×)")
            summary["ratio_cpu" + suffix] = o["cpu_median_s"] / c["cpu_median_s"]
            print(f"  {variant} / core CPU (median):    {summary['ratio_cpu' + suffix]:.2f}×")
        if o["peak_rss_max_mb"] and c["peak_rss_max_mb"]:
            summary["ratio_rss" + suffix] = o["peak_rss_max_mb"] / c["peak_rss_max_mb"]
            print(f"  {variant} / core peak RSS (max):  {summary['ratio_rss' + suffix]:.2f}×")

    imgs = {v: [x["image"] for x in runs if "image" in x] for v, runs in results.items()}
    if imgs["ours"] and imgs["core"]:
        summary["images_ours_vs_core"] = image_diff(imgs["ours"][0], imgs["core"][0])
        print(f"  images ours vs core: {summary['images_ours_vs_core']}")
    if imgs.get("base") and imgs["ours"]:
        summary["images_ours_vs_base"] = image_diff(imgs["ours"][0], imgs["base"][0])
        print(f"  images ours vs base: {summary['images_ours_vs_base']}")
    for v, lst in imgs.items():
        if len(lst) > 1:
            same = [image_diff(lst[0], x) for x in lst[1:]]
            summary[f"images_{v}_across_rounds"] = same
            print(f"  images {v} across rounds: {', '.join(same)}")

    out = HERE / "out"
    out.mkdir(exist_ok=True)
    dest = out / f"bench_host_{args.kind}_{mode}_{args.calcmode.replace(' ', '_')}.json"
    for runs in results.values():
        for x in runs:
            x.pop("image", None)
    dest.write_text(json.dumps({"args": {**vars(args), "mode": mode}, "summary": summary, "runs": results}, indent=1, default=str))
    print(f"  results: {dest}")
    if failed_logs:
        print("  server logs of failed runs: " + ", ".join(failed_logs))
        sys.exit(1)


if __name__ == "__main__":
    main()
