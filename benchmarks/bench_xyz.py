"""XYZ plot benchmark (issue: XYZ plot): a 4×4 alpha × beta plot, sum twice with CLIPs wired, in a real ComfyUI,
against one merge + sample of the same models.

    COMFYUI_PATH=/path/to/ComfyUI /path/to/comfy-venv/bin/python benchmarks/bench_xyz.py [--kind sd15|mini_sd15]

Models: random checkpoints of --kind (seeds 1, 2, 3; built once and cached by tests/host/comfy_host.build_checkpoint).
Every prompt samples 64×64, 4 euler steps (tests/host/comfy_host.sampler), decodes with A's VAE and saves.

1. Server 1 (fresh): one SuperMergerSumTwice merge (α 0.5, β 0.25) + sample. Its peak RSS (VmHWM) is the
   memory baseline. Then, in the same server with every checkpoint loaded, untimed warm-ups and:
     sampling  plain model A, another seed: only the sampler (and decode/save) runs again → one sampling
     merge     the merge at another α: the merge node runs, the sampler patches the model and samples → merge − sampling
               is one merge's patch time (its CLIP patching included)
2. Server 2 (fresh): the plot (SuperMergerXYZPlan x = alpha 0.2,0.4,0.6,0.8, y = beta 0.1,0.3,0.5,0.7, feeding the
   same sampler nodes, then SuperMergerXYZGrid). Run once to load the checkpoints, then again with another base
   seed (every cell is a new merge; the loaders are cached) → the plot's wall time. Peak RSS over both runs.

Targets: plot peak RSS ≤ 1.2 × single merge + sample; plot wall ≤ 1.1 × (16 × sampling + 16 × patch). Results
are printed and written to benchmarks/out/bench_xyz_<kind>.json.
"""
from __future__ import annotations

import argparse
import json
import shutil
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
            host.run(graph(a=f"{args.kind}_a", seed=1), timeout=args.timeout)  # warm-up: plain A loaded again
            res["sampling_s"], _ = timed(host, graph(a=f"{args.kind}_a", seed=2), args.timeout)
            host.run(single(args.kind, 3, 0.3), timeout=args.timeout)  # warm-up of the merged model's path
            merge_s, _ = timed(host, single(args.kind, 3, 0.7), args.timeout)
            res["merge_and_sampling_s"] = merge_s
            res["patch_s"] = max(merge_s - res["sampling_s"], 0.0)
        finally:
            stop_server(proc)
        host, proc, _ = start_server(work / "plot", ckpts, "plot", "SuperMergerXYZPlan")
        try:
            res["plot_first_wall_s"], _ = timed(host, plot(args.kind, 0), args.timeout)
            res["plot_wall_s"], entry = timed(host, plot(args.kind, 1), args.timeout)
            res["plot_peak_rss_mb"] = peak_rss_mb(proc.pid)
            res["plot_summary"] = entry["outputs"]["summary"]["text"][0].splitlines()[0]
        finally:
            stop_server(proc)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    budget = 16 * res["sampling_s"] + 16 * res["patch_s"]
    res["rss_ratio"] = res["plot_peak_rss_mb"] / res["single_peak_rss_mb"]
    res["wall_ratio"] = res["plot_wall_s"] / budget
    res["targets_met"] = {"rss ≤ 1.2×": res["rss_ratio"] <= 1.2, "wall ≤ 1.1×": res["wall_ratio"] <= 1.1}
    print(f"single merge + sample: {res['single_wall_s']:.1f} s, peak RSS {res['single_peak_rss_mb']:.0f} MB")
    print(f"one sampling {res['sampling_s']:.2f} s, one merge's patch {res['patch_s']:.2f} s → 16 × each = "
          f"{budget:.1f} s")
    print(f"plot (second run): {res['plot_wall_s']:.1f} s ({res['wall_ratio']:.2f}× the budget), peak RSS "
          f"{res['plot_peak_rss_mb']:.0f} MB ({res['rss_ratio']:.2f}× single); {res['plot_summary']}")
    print("targets:", res["targets_met"])
    out = HERE / "out"
    out.mkdir(exist_ok=True)
    (out / f"bench_xyz_{args.kind}.json").write_text(json.dumps(res, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
