"""Run with ComfyUI's python (COMFYUI_PATH set): how often a lazy smoothAdd merge computes its keys when
ComfyUI loads the model whole, and when it loads it in low-VRAM mode and patches weights on every forward
pass; and whether model A is intact after an Interrupt during a low-VRAM load of a merge. This machine has no GPU, so low-VRAM mode is forced the way ComfyUI enters it: `partially_load` with a
memory budget smaller than the model. Prints one JSON object.

    python tests/host/lowvram_probe.py A.safetensors B.safetensors C.safetensors
"""
import importlib.util
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, os.environ["COMFYUI_PATH"])

from comfy.cli_args import args  # noqa: E402

args.cpu = True  # as the test server runs (`--cpu`), before model_management looks for a GPU
import comfy.model_management  # noqa: E402
import comfy.sd  # noqa: E402
import torch  # noqa: E402

# The pack under a name of its own: its `nodes` package would clash with ComfyUI's nodes.py.
spec = importlib.util.spec_from_file_location("supermerger_pack", ROOT / "__init__.py",
                                              submodule_search_locations=[str(ROOT)])
pack = importlib.util.module_from_spec(spec)
sys.modules["supermerger_pack"] = pack
spec.loader.exec_module(pack)
from supermerger_pack import merge_core  # noqa: E402
from supermerger_pack.nodes import patching  # noqa: E402

CALLS = []
_merge_key = merge_core.steps.merge_tensors


def counting_merge_key(plan, step, *args, **kwargs):
    CALLS.append(step.key)
    return _merge_key(plan, step, *args, **kwargs)


merge_core.steps.merge_tensors = counting_merge_key


def load(path):
    return comfy.sd.load_checkpoint_guess_config(path, output_vae=False, output_clip=False)[0]


def forward(model):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 4, 8, 8, generator=g)
    context = torch.randn(1, 77, 768, generator=g)
    return model.model.apply_model(x, torch.tensor([500.0]), c_crossattn=context).clone()


def main():
    a, b, c = (load(p) for p in sys.argv[1:4])
    recipe = merge_core.Recipe(model_a="A", model_b="B", model_c="C", mode="add_difference", calcmode="smoothAdd",
                               alpha=0.5, include_exclude={"mode": "include", "blocks": ["OUT03"], "elements": []})
    merged, _clip, plan = patching.merge_models("probe", recipe, a, b, c)
    result = {"merged_keys": sum(s.action == "merge" for s in plan.steps)}

    merged.partially_load(torch.device("cpu"), extra_memory=1e12)  # loaded whole: weights patched once
    whole = forward(merged)
    result["whole"] = {"computations": len(CALLS), "cached": _cached(merged)}
    merged.detach()

    CALLS.clear()  # a fresh merge (nothing computed yet) in low-VRAM mode: weights patched at every forward
    merged = patching.merge_models("probe", recipe, a, b, c)[0]
    merged.partially_load(torch.device("cpu"), extra_memory=1)
    result["lowvram_mode"] = merged.model.model_lowvram
    outs = [forward(merged) for _ in range(4)]
    result["lowvram"] = {"computations": len(CALLS), "distinct_keys": len(set(CALLS)), "cached": _cached(merged)}
    result["same_output_every_pass"] = all(torch.equal(o, outs[0]) for o in outs)
    result["lowvram_equals_whole"] = torch.equal(outs[0], whole)
    merged.detach()

    # Interrupt while a merge loads in low-VRAM mode (some modules whole, the rest patched per pass): A, loaded
    # the same way afterwards, must still compute A
    reference = forward_low_vram(a)
    everything = merge_core.Recipe(model_a="A", model_b="B", mode="weight_sum", alpha=0.5)
    merged = patching.merge_models("probe", everything, a, b)[0]
    comfy.model_management.interrupt_current_processing(True)
    try:
        merged.partially_load(torch.device("cpu"), extra_memory=merged.model_size() // 2)
        result["interrupted_during_load"] = False
    except comfy.model_management.InterruptProcessingException:
        result["interrupted_during_load"] = True
    comfy.model_management.interrupt_current_processing(False)
    result["a_intact_after_interrupted_load"] = torch.equal(forward_low_vram(a), reference)
    print(json.dumps(result))


def forward_low_vram(model):
    model.partially_load(torch.device("cpu"), extra_memory=model.model_size() // 2)
    try:
        return forward(model)
    finally:
        model.detach()


def _cached(model) -> int:
    patches = [p[1] for ps in model.patches.values() for p in ps if isinstance(p[1], patching.MergePatch)]
    return sum(p._cached is not None for p in patches)


if __name__ == "__main__":
    with torch.inference_mode():  # as ComfyUI runs a prompt
        main()
