"""Run with ComfyUI's python (COMFYUI_PATH set): the checkpoint-space layout (nodes/keyspace.py) ComfyUI's own
conversions give the U-Net and text encoders of each mini model kind, built shape-only on the meta device.
Prints one JSON object: per kind, the family, every checkpoint key with its ComfyUI parts, the constants and the
ComfyUI keys no checkpoint has.

    python tests/host/keyspace_probe.py mini_sd15 mini_sd2 mini_sdxl
"""
import importlib.util
import json
import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, os.environ["COMFYUI_PATH"])
sys.path.insert(0, str(HERE))

from comfy.cli_args import args  # noqa: E402

args.cpu = True
import comfy.model_detection  # noqa: E402
import torch  # noqa: E402

from make_checkpoints import UNET_CONFIGS  # noqa: E402

spec = importlib.util.spec_from_file_location("supermerger_pack", ROOT / "__init__.py",
                                              submodule_search_locations=[str(ROOT)])
pack = importlib.util.module_from_spec(spec)
sys.modules["supermerger_pack"] = pack
spec.loader.exec_module(pack)
from supermerger_pack.nodes import patching  # noqa: E402

META = torch.device("meta")


def patches_of(module, prefix=""):
    return {prefix + k: [(v, None)] for k, v in module.state_dict().items()}


def describe(slot):
    if slot.whole:
        return [slot.comfy_key, "whole"]
    if slot.view is not None:
        return [slot.comfy_key, "view", list(slot.view[0]), list(slot.view[1]), slot.view[2]]
    return [slot.comfy_key, "index", list(slot.index.shape), slot.index.reshape(-1)[:3].tolist()]


out = {}
for kind in sys.argv[1:]:
    config = comfy.model_detection.model_config_from_unet_config(dict(UNET_CONFIGS[kind]))
    config.set_inference_dtype(torch.float32, None)
    model = config.get_model({}, device=META)
    with torch.device("meta"):
        clip = config.clip_target().clip(device="meta", dtype=torch.float16)
    family = patching.merge_core.families.for_comfy_config(c.__name__ for c in type(config).__mro__)
    entries, constants, unmapped = {}, {}, []
    for part, patches in (("unet", patches_of(model.diffusion_model, "diffusion_model.")), ("clip", patches_of(clip))):
        layout = patching._layout(config, part, patches)
        entries.update({k: [list(e.shape), [describe(s) for s in e.slots]] for k, e in layout.entries.items()})
        constants.update({k: v.tolist() for k, v in layout.constants.items()})
        unmapped += layout.unmapped
    out[kind] = {"config": type(config).__name__, "family": family.name, "entries": entries,
                 "constants": constants, "unmapped": unmapped}
print(json.dumps(out))
