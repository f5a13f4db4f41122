"""XYZ plot benchmark (issue: XYZ plot): a 4×4 alpha × beta plot, sum twice with CLIPs wired, in a real ComfyUI,
against one merge + sample of the same models.

    COMFYUI_PATH=/path/to/ComfyUI /path/to/comfy-venv/bin/python benchmarks/bench_xyz.py [--kind sd15|mini_sd15]

Models: random checkpoints of --kind (seeds 1, 2, 3; built once and cached by tests/host/comfy_host.build_checkpoint).
Every prompt samples 64×64, 4 euler steps (tests/host/comfy_host.sampler), decodes with A's VAE and saves.

1. Server 1 (fresh): one SuperMergerSumTwice merge (α 0.5, β 0.25) + sample. Its peak RSS (VmHWM) is the memory
   baseline.
2. Server 2 (fresh): the plot (SuperMergerXYZPlan x = alpha 0.2,0.4,0.6,0.8, y = beta 0.1,0.3,0.5,0.7, feeding the
   same sampler nodes, then SuperMergerXYZGrid), run once to load the checkpoints; its peak RSS after every run
   below is the plot's. Then --rounds rounds, each (with new seeds, so every node runs again; loaders cached):
     sampling  a seed-only plot of 16 cells: one merge, 16 samplings → one sampling = its wall / 16
     merge     one SuperMergerSumTwice merge + sample at a new α → one merge's patch = its wall − one sampling
     plot      the 4×4 alpha × beta plot: 16 merges, 16 samplings
   The rounds are interleaved because a shared machine's load swings: each round's ratio uses its own figures.

Targets: plot peak RSS ≤ 1.2 × single merge + sample; plot wall ≤ 1.1 × (16 × sampling + 16 × patch). Results
are printed and written to benchmarks/out/bench_xyz_<kind>.json.
"""
from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests" / "host"))

from bench_host import peak_rss_mb, start_server, stop_server, warm_page_cache  # noqa: E402
from comfy_host import COMFY, build_checkpoint, graph, sampler  # noqa: E402

X, Y = "0.2,0.4,0.6,0.8", "0.1,0.3,0.5,0.7"


def single(kind: str, seed: int, alpha: float = 0.5) -> dict:
    return graph("SuperMergerSumTwice", {"alpha": alpha, "beta": 0.25}, a=f"{kind}_a", b=f"{kind}_b", c=f"{kind}_c",
                 seed=seed)


def plot(kind: str, seed: int) -> dict:
    g = {f"ck{r}": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": f"{kind}_{r.lower()}.safetensors"}}
         for r in "ABC"}
    g["plan"] = {"class_type": "SuperMergerXYZPlan", "inputs": {
        "model_a": ["ckA", 0], "model_b": ["ckB", 0], "model_c": ["ckC", 0], "clip_a": ["ckA", 1],
        "clip_b": ["ckB", 1], "clip_c": ["ckC", 1], "mode": "sum_twice", "calcmode": "normal", "alpha": 0.5,
        "beta": 0.25, "gamma": 0.3, "x_type": "alpha", "x_values": X, "y_type": "beta", "y_values": Y,
        "z_type": "none", "z_values": "", "seed": seed, "prompt": "a red apple on a table"}}
    g.update(sampler(["plan", 0], ["plan", 1], ["ckA", 2]))
    g["pos"]["inputs"]["text"] = ["plan", 3]
    g["ks"]["inputs"]["seed"] = ["plan", 2]
    g["grid"] = {"class_type": "SuperMergerXYZGrid", "inputs": {"images": ["dec", 0], "plan": ["plan", 5],
                                                                 "swap_xy": False}}
    g["summary"] = {"class_type": "PreviewAny", "inputs": {"source": ["grid", 2]}}
    return g


def timed(host, prompt, timeout) -> tuple:
    t0 = time.perf_counter()
    entry = host.run(prompt, timeout=timeout)
    return time.perf_counter() - t0, entry


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kind", default="sd15", choices=["sd15", "mini_sd15"])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=7200)
    ap.add_argument("--keep", action="store_true", help="keep the work folder (server logs, images)")
    args = ap.parse_args()
    if not COMFY:
        sys.exit("set COMFYUI_PATH to a ComfyUI checkout (run with its python)")
    ckpts = {f"{args.kind}_{r}": build_checkpoint(args.kind, s) for r, s in (("a", 1), ("b", 2), ("c", 3))}
    warm_page_cache(ckpts.values())
    work = Path(tempfile.mkdtemp(prefix="bench_xyz_"))
    res = {"kind": args.kind, "plot": f"4×4 alpha {X} × beta {Y}, sum twice, clips wired"}
    try:
        host, proc, _ = start_server(work / "single", ckpts, "single", "SuperMergerSumTwice")
        try:
            res["single_wall_s"], _ = timed(host, single(args.kind, 0), args.timeout)
            res["single_peak_rss_mb"] = peak_rss_mb(proc.pid)
        finally:
            stop_server(proc)
        host, proc, _ = start_server(work / "plot", ckpts, "plot", "SuperMergerXYZPlan")
        rounds = []
        try:
            res["plot_first_wall_s"], _ = timed(host, plot(args.kind, 0), args.timeout)
            for r in range(args.rounds):
                seeds = plot(args.kind, 100 + r)
                seeds["plan"]["inputs"].update(x_type="seed", x_values=",".join(str(i) for i in range(16)),
                                               y_type="none", y_values="")
                sixteen, _ = timed(host, seeds, args.timeout)
                merge_s, _ = timed(host, single(args.kind, 200 + r, 0.3 + 0.1 * r), args.timeout)
                plot_s, entry = timed(host, plot(args.kind, 300 + r), args.timeout)
                sampling = sixteen / 16
                patch = max(merge_s - sampling, 0.0)
                rounds.append({"sampling_s": sampling, "patch_s": patch, "plot_wall_s": plot_s,
                               "wall_ratio": plot_s / (16 * sampling + 16 * patch),
                               "summary": entry["outputs"]["summary"]["text"][0].splitlines()[0]})
                print(f"round {r + 1}: sampling {sampling:.2f} s, patch {patch:.2f} s, plot {plot_s:.1f} s → "
                      f"{rounds[-1]['wall_ratio']:.2f}× the budget", flush=True)
            res["plot_peak_rss_mb"] = peak_rss_mb(proc.pid)
        finally:
            stop_server(proc)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    res["rounds"] = rounds
    for name in ("sampling_s", "patch_s", "plot_wall_s", "wall_ratio"):
        res[name] = statistics.median(r[name] for r in rounds)
    res["plot_summary"] = rounds[-1]["summary"]
    budget = 16 * res["sampling_s"] + 16 * res["patch_s"]
    res["rss_ratio"] = res["plot_peak_rss_mb"] / res["single_peak_rss_mb"]
    res["targets_met"] = {"rss ≤ 1.2×": res["rss_ratio"] <= 1.2, "wall ≤ 1.1×": res["wall_ratio"] <= 1.1}
    print(f"single merge + sample: {res['single_wall_s']:.1f} s, peak RSS {res['single_peak_rss_mb']:.0f} MB")
    print(f"medians: one sampling {res['sampling_s']:.2f} s, one merge's patch {res['patch_s']:.2f} s → 16 × each = "
          f"{budget:.1f} s")
    print(f"plot: {res['plot_wall_s']:.1f} s (median ratio {res['wall_ratio']:.2f}× the budget), peak RSS "
          f"{res['plot_peak_rss_mb']:.0f} MB ({res['rss_ratio']:.2f}× single); {res['plot_summary']}")
    print("targets:", res["targets_met"])
    out = HERE / "out"
    out.mkdir(exist_ok=True)
    (out / f"bench_xyz_{args.kind}.json").write_text(json.dumps(res, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
