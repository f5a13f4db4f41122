"""CLI merge benchmark (issue: merge engine). An SD1.5-sized (1.07 B parameters, fp16) weight sum α=0.5
to file, three ways in one run: our CLI, a bare read-A-read-B-write loop over the same files, and
sd-mecha 1.1.8 when a python with it is available (benchmarks/setup_mecha.sh makes one).

    python benchmarks/bench_merge.py [--rounds 3] [--dir benchmarks/out] [--mecha-python PATH]

Each contestant runs as its own process, rounds interleaved so machine noise hits all alike; wall time
is the whole process (imports included), peak RSS is the process's own (wait4). Reports medians and the
ratios the design targets: ours ≤ 1.5× bare loop, sd-mecha ≥ 2× ours, ours' RSS ≤ sd-mecha's.
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


def run(cmd, env=None):
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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dir", default=str(HERE / "out"))
    ap.add_argument("--mecha-python", default=str(HERE / ".venv-mecha" / "bin" / "python"))
    ap.add_argument("--alpha", type=float, default=0.5)
    args = ap.parse_args()
    folder = Path(args.dir)
    folder.mkdir(parents=True, exist_ok=True)
    a, b = ensure_models(folder)
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
