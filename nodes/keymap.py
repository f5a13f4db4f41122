"""ComfyUI state-dict names → original checkpoint names, so the engine's block tables apply to models
loaded in ComfyUI. Data, one table per family; ComfyUI-free."""
from __future__ import annotations

from typing import Optional

UNET = ("diffusion_model.", "model.diffusion_model.")
# (ComfyUI prefix, checkpoint prefix); first match wins, so exact names come before prefixes.
CLIP_PREFIXES = {
    "sd1": (("clip_l.transformer.", "cond_stage_model.transformer."),),
    "sd2": (("clip_h.transformer.", "cond_stage_model.model.transformer."),),
    "sdxl": (("clip_l.transformer.", "conditioner.embedders.0.transformer."),
             ("clip_g.transformer.text_projection.weight", "conditioner.embedders.1.model.text_projection"),
             ("clip_g.transformer.", "conditioner.embedders.1.model.transformer.")),
    "flux": (("clip_l.", "text_encoders.clip_l."), ("t5xxl.", "text_encoders.t5xxl.")),
}
# Never merged, as ComfyUI's own CLIP merge skips them.
SKIP_SUFFIXES = (".position_ids", ".logit_scale")
# Parameters ComfyUI's models have but checkpoints do not (its own saving drops them): CLIP-L's projection is
# never loaded for SD1/SDXL, so it holds uninitialised memory.
NOT_IN_CHECKPOINTS = ("clip_l.transformer.text_projection.weight",)


def unet_name(key: str) -> Optional[str]:
    return UNET[1] + key[len(UNET[0]):] if key.startswith(UNET[0]) else None


def clip_name(key: str, family: str) -> Optional[str]:
    if key.endswith(SKIP_SUFFIXES) or key in NOT_IN_CHECKPOINTS:
        return None
    for comfy, ckpt in CLIP_PREFIXES.get(family, ()):
        if key.startswith(comfy):
            return ckpt + key[len(comfy):]
    return None
