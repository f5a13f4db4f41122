"""smoothAdd's filter (SPEC §2.4) over the real SD1.5 shape set: `calcmodes.smooth.median3` (scipy's median
filter cut into parts filtered on every core) against one plain `scipy.ndimage.median_filter` call, in this
process, plus the gaussian both share.

    python benchmarks/bench_smooth.py [--rounds 1] [--parts unet,te]

Each distinct shape of the SD1.5 U-Net (and/or text encoder) is filtered once per variant and round, the
variants interleaved (order alternating) so machine noise hits both; the total for the model is Σ count ×
time. Every result is checked bit for bit against plain scipy. Results go to benchmarks/out/bench_smooth.json.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import numpy as np  # noqa: E402
import scipy.ndimage  # noqa: E402

from merge_core.calcmodes import smooth  # noqa: E402
from merge_core.synthetic import sd1_layout  # noqa: E402

PARTS = {"unet": "model.diffusion_model.", "te": "cond_stage_model."}


def timed(fn, x):
    t = time.perf_counter()
    out = fn(x)
    return time.perf_counter() - t, out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--parts", default="unet")
    args = ap.parse_args()
    prefixes = tuple(PARTS[p] for p in args.parts.split(","))
    shapes = Counter(s for k, s in sd1_layout().items() if k.startswith(prefixes))
    rng = np.random.default_rng(0)
    totals = {"plain": [], "ours": [], "gaussian": []}
    for r in range(args.rounds):
        sums = dict.fromkeys(totals, 0.0)
        for i, (shape, count) in enumerate(sorted(shapes.items(), key=lambda kv: -np.prod(kv[0]))):
            x = (rng.standard_normal(shape) * 0.02).astype(np.float32)
            order = ["plain", "ours"] if (i + r) % 2 == 0 else ["ours", "plain"]
            outs = {}
            for name in order:
                fn = smooth.median3 if name == "ours" else (lambda a: scipy.ndimage.median_filter(a, size=3))
                seconds, outs[name] = timed(fn, x)
                sums[name] += count * seconds
            if not np.array_equal(outs["ours"].view(np.uint32), outs["plain"].view(np.uint32)):
                raise SystemExit(f"{shape}: results differ")
            seconds, _ = timed(lambda a: scipy.ndimage.gaussian_filter(a, sigma=1), outs["ours"])
            sums["gaussian"] += count * seconds
        for k in totals:
            totals[k].append(sums[k])
        print(f"round {r + 1}: plain median {sums['plain']:.1f} s, ours {sums['ours']:.1f} s, "
              f"gaussian {sums['gaussian']:.1f} s")
    med = {k: statistics.median(v) for k, v in totals.items()}
    n = sum(int(np.prod(s)) * c for s, c in shapes.items())
    print(f"SD1.5 {args.parts} ({n / 1e6:.0f} M values, {len(shapes)} distinct shapes): median filter plain "
          f"{med['plain']:.1f} s, ours {med['ours']:.1f} s = {med['plain'] / med['ours']:.2f}x faster; "
          f"gaussian {med['gaussian']:.1f} s; results bit-identical")
    out = HERE / "out" / "bench_smooth.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "totals_s": totals, "median_s": med, "values": n}, indent=1))


if __name__ == "__main__":
    main()
