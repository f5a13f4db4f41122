"""LoRA extraction's rank-r factorisation (merge_core/lora/lowrank.py) with its Gram route against without it
(every matrix the Gram route takes then goes to the randomized one), in this process, on the U-Net shapes of
SD1.5 or SDXL (every ≥ 2-D weight as a matrix out × rest: the layers a LoCon extraction factors).

    python benchmarks/bench_lowrank.py [--kind sdxl] [--rank 128] [--rounds 1]

Each distinct shape is factorised once per variant and round (variants interleaved, order alternating); the
model's total is Σ count × time. Matrices have a power-law spectrum (σᵢ = 1/i) so the randomized route must
iterate, as on real weight differences; the Frobenius error of each route is reported against the optimum.
Results go to benchmarks/out/bench_lowrank_<kind>_r<rank>.json.
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

import torch  # noqa: E402

from merge_core.lora import lowrank  # noqa: E402
from merge_core.synthetic import sd1_layout, sdxl_layout  # noqa: E402

LAYOUTS = {"sd15": sd1_layout, "sdxl": sdxl_layout}


def power_law(m: int, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    k = min(m, n)
    u = torch.linalg.qr(torch.randn(m, k, generator=g)).Q
    v = torch.linalg.qr(torch.randn(n, k, generator=g)).Q
    return (u / torch.arange(1, k + 1)) @ v.T


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kind", choices=sorted(LAYOUTS), default="sdxl")
    ap.add_argument("--rank", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=1)
    args = ap.parse_args()
    shapes = Counter((s[0], int(torch.tensor(s[1:]).prod())) for k, s in LAYOUTS[args.kind]().items()
                     if k.startswith("model.diffusion_model.") and len(s) >= 2)
    gram_cheaper = lowrank._gram_is_cheaper
    taken = [s for s in shapes if lowrank.route(*s, min(args.rank, *s)) == "gram"]
    print(f"{args.kind} U-Net: {len(shapes)} distinct matrix shapes, {sum(shapes[s] for s in taken)} matrices "
          f"({len(taken)} shapes) take the Gram route at rank {args.rank}")
    totals = {"with_gram": [], "without_gram": []}
    errors = {"with_gram": 0.0, "without_gram": 0.0, "optimum": 0.0}
    for r in range(args.rounds):
        sums = dict.fromkeys(totals, 0.0)
        for i, shape in enumerate(sorted(taken)):
            mat = power_law(*shape, seed=i)
            order = list(totals) if (i + r) % 2 == 0 else list(reversed(totals))
            for name in order:
                lowrank._gram_is_cheaper = gram_cheaper if name == "with_gram" else (lambda *a: False)
                t = time.perf_counter()
                up, down = lowrank.low_rank(mat, args.rank)
                sums[name] += shapes[shape] * (time.perf_counter() - t)
                if r == 0:
                    errors[name] += shapes[shape] * float(torch.linalg.norm(mat - up @ down)) ** 2
            if r == 0:
                s = torch.linalg.svdvals(mat.double())
                errors["optimum"] += shapes[shape] * float(s[args.rank:].pow(2).sum())
        lowrank._gram_is_cheaper = gram_cheaper
        for k in totals:
            totals[k].append(sums[k])
        print(f"round {r + 1}: with the Gram route {sums['with_gram']:.1f} s, without {sums['without_gram']:.1f} s")
    med = {k: statistics.median(v) for k, v in totals.items()}
    err = {k: (v / errors["optimum"]) ** 0.5 for k, v in errors.items() if k != "optimum"}
    print(f"on the matrices it takes: without {med['without_gram']:.1f} s, with {med['with_gram']:.1f} s = "
          f"{med['without_gram'] / med['with_gram']:.2f}x faster; Frobenius error over the optimum: "
          f"with {err['with_gram']:.4f}, without {err['without_gram']:.4f}")
    out = HERE / "out" / f"bench_lowrank_{args.kind}_r{args.rank}.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "totals_s": totals, "median_s": med, "error_ratio": err,
                               "gram_shapes": {f"{m}x{n}": shapes[(m, n)] for m, n in taken}}, indent=1))


if __name__ == "__main__":
    main()
