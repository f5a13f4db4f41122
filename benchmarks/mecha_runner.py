"""Weight sum of two SD1.5 LDM checkpoints with sd-mecha 1.1.8 (run with a python that has sd_mecha).

    python mecha_runner.py A.safetensors B.safetensors OUT.safetensors ALPHA
"""
import pathlib
import sys

import torch
import sd_mecha


def main(a, b, out, alpha):
    recipe = sd_mecha.weighted_sum(sd_mecha.model(pathlib.Path(a).resolve(), config="sd1-ldm"),
                                   sd_mecha.model(pathlib.Path(b).resolve(), config="sd1-ldm"), alpha=float(alpha))
    sd_mecha.merge(recipe, output=pathlib.Path(out).resolve(), merge_device="cpu", merge_dtype=torch.float32,
                   output_device="cpu", output_dtype=torch.float16)


if __name__ == "__main__":
    main(*sys.argv[1:5])
