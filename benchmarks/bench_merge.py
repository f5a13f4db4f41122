"""CLI merge benchmark (issues: merge engine, 17). An SD1.5-sized (1.07 B parameters, fp16) weight sum α=0.5
to file, three ways in one run: our CLI, a bare read-A-read-B-write loop over the same files, and
sd-mecha 1.1.8 when a python with it is available (benchmarks/setup_mecha.sh makes one).

    python benchmarks/bench_merge.py [--rounds 3] [--dir benchmarks/out] [--mecha-python PATH]
    python benchmarks/bench_merge.py --neighbours 3 [--rounds 2] [--workloads weight_sum,smooth,extract]

Each contestant runs as its own process, rounds interleaved so machine noise hits all alike; wall time
is the whole process (imports included), peak RSS is the process's own (wait4). Reports medians and the
ratios the design targets: ours ≤ 1.5× bare loop, sd-mecha ≥ 2× ours, ours' RSS ≤ sd-mecha's.

`--neighbours N` (issue 17) runs every round twice, quiet and beside N busy processes (pure-Python spin
loops, started by the benchmark for that half of the round, stopped by it, and bounded in time in any case),
and reports per workload the loaded / quiet slowdown. Workloads: `weight_sum` (ours against the bare loop:
ours / bare ≤ 1.5× in both halves, ours' slowdown no worse than the bare loop's), `smooth` (a smoothAdd add
difference over the 320-channel blocks, the full model's median filter taking many minutes) and `extract`
(a LoRA extraction at rank 64), the last two with the default threads against `--threads 1` (slowdown within
1.5× of the single-threaded run's). The load average before each half is printed: on a shared machine it
says how much other work ran beside the benchmark.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))


def ensure_models(folder: Path):
    from merge_core.synthetic import random_state_dict, sd1_layout, write_model

    paths = []
    for name, seed in (("sd15_a", 1), ("sd15_b", 2)):
        path = folder / f"{name}.safetensors"
        if not path.exists():
            print(f"generating {path} (SD1.5 layout, fp16)…", flush=True)
            write_model(random_state_dict(sd1_layout(), seed, extras=False), path)
        paths.append(path)
    return paths


def _output(cmd) -> Optional[Path]:
    """The file a contestant writes (every output here is named out_*)."""
    return next((Path(x) for x in cmd if Path(str(x)).name.startswith("out_")), None)


def run(cmd, env=None):
    out = _output(cmd)
    if out is not None:
        # Untimed: every contestant starts without its last output. The bare loop truncates that file as it opens
        # it, so it would write into the 2 GB of memory just freed, while an atomic writer (ours: a temporary file,
        # renamed over the old one at the end) frees the old file only when done and writes into long-unused
        # memory, which on this VM is several times slower to fill: that alone put the same bare loop at 6 s or 12 s.
        out.unlink(missing_ok=True)
    with tempfile.TemporaryFile() as err:  # a file, not a pipe: a chatty progress bar must not block
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, env=env)
        _pid, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            err.seek(0)
            raise SystemExit(f"{cmd[:3]} failed:\n{err.read().decode(errors='replace')[-3000:]}")
    return wall, usage.ru_maxrss / 1024  # MB


def same_tensors(p, q) -> bool:
    from safetensors import safe_open
    import torch

    with safe_open(str(p), "pt") as f, safe_open(str(q), "pt") as g:
        if set(f.keys()) != set(g.keys()):
            return False
        return all(torch.equal(f.get_tensor(k), g.get_tensor(k)) for k in f.keys())


SMOOTH_BLOCKS = ["IN01", "IN02", "OUT09", "OUT10", "OUT11"]  # the 320-channel blocks: tens of seconds
NEIGHBOUR = "import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end:\n    pass\n"


def start_neighbours(n: int, seconds: float) -> list:
    """N busy processes (one spinning Python each), ending by themselves after `seconds` at the latest."""
    return [subprocess.Popen([sys.executable, "-c", NEIGHBOUR.format(seconds=seconds)]) for _ in range(n)]


def stop_neighbours(procs: list) -> None:
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait()


def workloads(folder: Path, a: Path, b: Path, alpha: float, names: list) -> dict:
    """name → {contestant: command}; the first contestant is ours, the second its reference."""
    ours = [sys.executable, "-m", "merge_core"]
    merge = ours + ["merge", "--overwrite", "--no-history"]
    found = {}
    if "weight_sum" in names:
        recipe = folder / "recipe.json"
        recipe.write_text(json.dumps({"model_a": str(a), "model_b": str(b), "alpha": alpha}))
        found["weight_sum"] = {"ours": merge + [str(recipe), "--out", str(folder / "out_ours.safetensors")],
                               "bare": [sys.executable, str(HERE / "bare_loop.py"), str(a), str(b),
                                        str(folder / "out_bare.safetensors")]}
    if "smooth" in names:
        recipe = folder / "recipe_smooth.json"
        recipe.write_text(json.dumps({"model_a": str(a), "model_b": str(b), "model_c": str(a), "alpha": alpha,
                                      "mode": "add_difference", "calcmode": "smoothAdd",
                                      "include_exclude": {"mode": "include", "blocks": SMOOTH_BLOCKS,
                                                          "elements": []}}))
        found["smooth"] = {t: merge + [str(recipe), "--out", str(folder / f"out_smooth_{t}.safetensors")]
                           + (["--threads", "1"] if t == "one_thread" else []) for t in ("ours", "one_thread")}
    if "extract" in names:
        found["extract"] = {t: ours + ["lora", "extract", str(b), str(a), "--rank", "64", "--overwrite", "--out",
                                       str(folder / f"out_lora_{t}.safetensors")]
                            + (["--threads", "1"] if t == "one_thread" else []) for t in ("ours", "one_thread")}
    return found


def loaded_and_quiet(args, folder: Path, a: Path, b: Path, env: dict) -> None:
    """Every round: each workload's contestants quiet, then beside `--neighbours` busy processes."""
    jobs = workloads(folder, a, b, args.alpha, args.workloads.split(","))
    for job in jobs.values():
        run(job["ours"], env)  # warm-up: page cache, input hashes, imports; untimed
    phases = ("quiet", "loaded")
    walls = {(w, c, ph): [] for w, job in jobs.items() for c in job for ph in phases}
    loads = {ph: [] for ph in phases}
    for r in range(args.rounds):
        for phase in phases:
            loads[phase].append(os.getloadavg()[0])
            procs = start_neighbours(args.neighbours, args.neighbour_seconds) if phase == "loaded" else []
            try:
                time.sleep(1 if procs else 0)  # let them start spinning
                for w, job in jobs.items():
                    order = list(job) if r % 2 == 0 else list(job)[::-1]
                    for c in order:
                        walls[(w, c, phase)].append(run(job[c], env)[0])
                        print(f"round {r + 1} {phase:6s} {w:10s} {c:10s} {walls[(w, c, phase)][-1]:7.2f} s",
                              flush=True)
            finally:
                stop_neighbours(procs)
    med = {k: statistics.median(v) for k, v in walls.items()}
    print(f"\nSD1.5-sized models, {args.rounds} rounds, median wall; loaded = beside {args.neighbours} busy "
          f"processes on {len(os.sched_getaffinity(0))} cores. 1-minute load average before the quiet halves: "
          + ", ".join(f"{x:.1f}" for x in loads["quiet"]) + "; before the loaded ones: "
          + ", ".join(f"{x:.1f}" for x in loads["loaded"]))
    result = {"args": vars(args), "walls": {"/".join(k): v for k, v in walls.items()}, "loads": loads}
    for w, job in jobs.items():
        ours, ref = list(job)
        slow = {c: med[(w, c, "loaded")] / med[(w, c, "quiet")] for c in job}
        print(f"  {w}: quiet {ours} {med[(w, ours, 'quiet')]:.2f} s, {ref} {med[(w, ref, 'quiet')]:.2f} s; "
              f"loaded {ours} {med[(w, ours, 'loaded')]:.2f} s, {ref} {med[(w, ref, 'loaded')]:.2f} s")
        if w == "weight_sum":
            for ph in phases:
                ratio = med[(w, ours, ph)] / med[(w, ref, ph)]
                print(f"    ours / bare loop wall, {ph}: {ratio:.2f}×  (target ≤ 1.5×)")
            print(f"    loaded / quiet slowdown: ours {slow[ours]:.2f}×, bare loop {slow[ref]:.2f}×  (target: ours "
                  "no worse)")
        else:
            print(f"    loaded / quiet slowdown: ours {slow[ours]:.2f}×, --threads 1 {slow[ref]:.2f}×; ratio "
                  f"{slow[ours] / slow[ref]:.2f}  (target ≤ 1.5); ours / --threads 1 quiet "
                  f"{med[(w, ours, 'quiet')] / med[(w, ref, 'quiet')]:.2f}×")
        result[w] = {"median_s": {f"{c}/{ph}": med[(w, c, ph)] for c in job for ph in phases}, "slowdown": slow}
    (folder / "bench_merge_neighbours.json").write_text(json.dumps(result, indent=1))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", default=str(HERE / "out"))
    ap.add_argument("--mecha-python", default=str(HERE / ".venv-mecha" / "bin" / "python"))
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--neighbours", type=int, default=0, help="busy processes beside the loaded half of each round")
    ap.add_argument("--neighbour-seconds", type=float, default=1800, help="the longest a neighbour lives")
    ap.add_argument("--workloads", default="weight_sum,smooth,extract", help="with --neighbours: which to run")
    args = ap.parse_args()
    folder = Path(args.dir)
    folder.mkdir(parents=True, exist_ok=True)
    a, b = ensure_models(folder)
    if args.neighbours > 0:
        env = dict(os.environ, SUPERMERGER_CACHE_DIR=str(folder / "cache"), PYTHONPATH=str(ROOT))
        return loaded_and_quiet(args, folder, a, b, env)
    recipe = folder / "recipe.json"
    recipe.write_text(json.dumps({"model_a": str(a), "model_b": str(b), "alpha": args.alpha}))
    env = dict(os.environ, SUPERMERGER_CACHE_DIR=str(folder / "cache"))
    out = {name: folder / f"out_{name}.safetensors" for name in ("ours", "bare", "mecha")}
    contestants = {
        "ours": [sys.executable, "-m", "merge_core", "merge", str(recipe), "--out", str(out["ours"]), "--overwrite"],
        "bare": [sys.executable, str(HERE / "bare_loop.py"), str(a), str(b), str(out["bare"])],
    }
    if Path(args.mecha_python).exists():
        contestants["mecha"] = [args.mecha_python, str(HERE / "mecha_runner.py"), str(a), str(b), str(out["mecha"]),
                                str(args.alpha)]
    else:
        print(f"sd-mecha skipped: no {args.mecha_python} (run benchmarks/setup_mecha.sh)")
    env_root = dict(env, PYTHONPATH=str(ROOT))
    run(contestants["ours"], env_root)  # warm-up: page cache and the input-hash cache, untimed
    results = {name: [] for name in contestants}
    for r in range(args.rounds):
        for name, cmd in contestants.items():
            results[name].append(run(cmd, env_root))
            print(f"round {r + 1} {name}: {results[name][-1][0]:.2f} s, {results[name][-1][1]:.0f} MB", flush=True)
    med = {n: (statistics.median(w for w, _ in v), max(m for _, m in v)) for n, v in results.items()}
    print("\nSD1.5 weight sum α=%.2f → fp16 safetensors, %d rounds (median wall, max peak RSS)" % (args.alpha, args.rounds))
    for name, (w, m) in med.items():
        print(f"  {name:6s} {w:7.2f} s  {m:7.0f} MB")
    print(f"  ours / bare loop wall: {med['ours'][0] / med['bare'][0]:.2f}×  (target ≤ 1.5×)")
    if "mecha" in med:
        print(f"  sd-mecha / ours wall:  {med['mecha'][0] / med['ours'][0]:.2f}×  (target ≥ 2×)")
        print(f"  ours / sd-mecha RSS:   {med['ours'][1] / med['mecha'][1]:.2f}×  (target ≤ 1×)")
        print(f"  outputs identical to sd-mecha's: {same_tensors(out['ours'], out['mecha'])}")


if __name__ == "__main__":
    main()
