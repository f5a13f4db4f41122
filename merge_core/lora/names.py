"""Checkpoint keys ↔ kohya LoRA module names, and the LoRA block of a module (SPEC §13.5, §13.9).

A kohya LoRA file names each patched layer by a *module name*: a prefix (`lora_unet_`, `lora_te_`,
`lora_te1_`, `lora_te2_`) and the layer's path in the trainer's own model with dots turned into
underscores. Checkpoints name the same layer by its LDM/SGM key. This module converts between the two.

API (`family` is a `merge_core.families.Family` or its name: "sd1", "sd2", "sdxl", "flux"):

- `module_name(ckpt_key, family, style="kohya") -> str | None` — the module name a kohya trainer gives
  the layer whose weight is `ckpt_key` (a `.weight` key), or None when no LoRA module addresses it
  (biases, VAE, embeddings, non-linear text-encoder parts, keys of another family). U-Net: every layer a
  LoRA or LyCORIS file may patch (linears, convs and norms); text encoders: the six linears ComfyUI and
  the web-ui map (q/k/v/out projections, fc1, fc2).
- `checkpoint_key(module, family) -> str | None` — the reverse: the checkpoint's `.weight` key.
- `block_index(module, family) -> int` — the index into the family's LoRA block ids (`Family.lora`: the
  26 SD ids for SD1/SD2/SDXL, the 61 Flux ids for Flux; rules in data/blocks.json).
- `key_block_index(ckpt_key, family) -> int` — the same from a checkpoint key (also ComfyUI's
  `diffusion_model.…` model keys), for callers that resolved names through another key map.
- `is_target(ckpt_key, family, conv3x3=False) -> bool` — whether kohya's LoRA extraction makes a module
  for the key (SPEC §13.9): text-encoder CLIPAttention/CLIPMLP linears; U-Net Transformer2DModel linears
  and 1×1 convs (proj_in/proj_out, attention q/k/v/out, feed-forward); with `conv3x3` also every conv and
  linear inside ResBlocks, Downsample and Upsample, as kohya LoCon (conv_dim) does. Flux: the linears of
  the double and single blocks, and CLIP-L's (T5 is not a kohya extraction target).
- `fused_modules(ckpt_key, family) -> tuple` and `fused_part(module, family) -> int | None` — see below.

Name styles. SD1/SD2 U-Net modules are named in diffusers layout as kohya's SD1/2 trainers do
(`input_blocks.1.1.proj_in` → `lora_unet_down_blocks_0_attentions_0_proj_in`); SDXL and Flux U-Net
modules keep the LDM path (`lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q`,
`lora_unet_double_blocks_0_img_attn_qkv`), as kohya's SDXL/Flux trainers do. `checkpoint_key` accepts
both styles for SD1/SD2/SDXL, and `lycoris_` in place of `lora_unet_`. The diffusers ↔ LDM arithmetic
assumes the released layouts (two ResBlocks per level); for other layouts use the LDM style, which
needs no arithmetic (ComfyUI accepts it for every U-Net weight): `module_name(..., style="ldm")`.

Text encoders. Kohya names every CLIP layer in Hugging Face CLIPTextModel layout. Each family's text
encoders (checkpoint prefix, module prefixes, layout) are in data/blocks.json (`Family.text_encoders`):
SD1 CLIP-L (`cond_stage_model.transformer.…`) → `lora_te_…`; SDXL CLIP-L → `lora_te1_…`, CLIP-G →
`lora_te2_…`; Flux CLIP-L → `lora_te1_…`, T5 → `lora_te2_…` (`lora_te3_…` accepted, as ComfyUI does).
OpenCLIP (SD2, SDXL CLIP-G) is renamed: `transformer.resblocks.N` →
`text_model.encoder.layers.N`, `attn.out_proj` → `self_attn.out_proj`, `mlp.c_fc` → `mlp.fc1`,
`mlp.c_proj` → `mlp.fc2`.

Fused q/k/v. OpenCLIP keeps q, k and v in one `attn.in_proj_weight` (3·w rows × w); kohya has three
modules `…_self_attn_q_proj`, `_k_proj`, `_v_proj` on the row thirds 0, 1, 2. So `module_name` returns
None for an `in_proj_weight` key (it is not one module), `fused_modules(key)` returns the three names in
q, k, v order, `checkpoint_key(q/k/v module)` returns the `in_proj_weight` key, and `fused_part(module)`
says which third (rows `part·w : (part+1)·w`); it is None for every unfused module. `is_target` is true
for an `in_proj_weight` key.

Blocks (SPEC §13.5). A module's text-encoder prefix, else its checkpoint key, gives its block by the
family's LoRA rules (`families.LoraScheme`, described in data/blocks.json): `input_blocks.N` → IN N,
`middle_block` → M00, `output_blocks.N` → OUT N, everything else BASE, as SuperMerger's LoRA substring rule
gives; SDXL LoRAs use the same 26 ids. Flux: CLIP-L → CLIP, T5 → T5, double/single blocks → D N / S N,
`final_layer` → OUT, the input embedders → IN.
"""
from __future__ import annotations

import re
from functools import lru_cache
from typing import Optional

from ..families import FAMILIES

UNET = "model.diffusion_model."
_TE_LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj",
               "mlp.fc1", "mlp.fc2")
_QKV = ("q_proj", "k_proj", "v_proj")
_OPEN_CLIP_RENAMES = (("attn.out_proj", "self_attn.out_proj"), ("mlp.c_fc", "mlp.fc1"),
                      ("mlp.c_proj", "mlp.fc2"))
_RESNET_RENAMES = (("in_layers.0", "norm1"), ("in_layers.2", "conv1"), ("emb_layers.1", "time_emb_proj"),
                   ("out_layers.0", "norm2"), ("out_layers.3", "conv2"), ("skip_connection", "conv_shortcut"))
_BASIC_RENAMES = (("time_embed.0", "time_embedding.linear_1"), ("time_embed.2", "time_embedding.linear_2"),
                  ("label_emb.0.0", "add_embedding.linear_1"), ("label_emb.0.2", "add_embedding.linear_2"),
                  ("input_blocks.0.0", "conv_in"), ("out.0", "conv_norm_out"), ("out.2", "conv_out"))


# Names whose parts are joined by "_" in the model's own paths; everything else in a module name's
# underscores was a dot. Longest first, so "final_layer_norm" wins over "layer_norm".
_COMPOUNDS = sorted({
    # LDM U-Net
    "input_blocks", "middle_block", "output_blocks", "transformer_blocks", "proj_in", "proj_out", "to_q",
    "to_k", "to_v", "to_out", "in_layers", "out_layers", "emb_layers", "skip_connection", "time_embed",
    "label_emb",
    # diffusers U-Net
    "down_blocks", "mid_block", "up_blocks", "conv_in", "conv_out", "conv_norm_out", "time_embedding",
    "add_embedding", "linear_1", "linear_2", "time_emb_proj", "conv_shortcut",
    # Flux
    "double_blocks", "single_blocks", "img_attn", "txt_attn", "img_mlp", "txt_mlp", "img_mod", "txt_mod",
    "img_in", "txt_in", "time_in", "vector_in", "guidance_in", "in_layer", "out_layer", "final_layer",
    "adaLN_modulation", "query_norm", "key_norm",
    # CLIP / T5
    "text_model", "self_attn", "q_proj", "k_proj", "v_proj", "out_proj", "layer_norm1", "layer_norm2",
    "final_layer_norm", "layer_norm", "wi_0", "wi_1", "relative_attention_bias",
}, key=lambda c: -c.count("_"))
_COMPOUND_PARTS = [tuple(c.split("_")) for c in _COMPOUNDS]


def _family_name(family) -> str:
    name = getattr(family, "name", family)
    if name not in FAMILIES:
        raise ValueError(f"unknown model family {family!r}")
    return name


def _dotted(underscored: str) -> str:
    """A module path from its underscored form: every `_` is a dot except inside a known compound name."""
    tokens, out, i = underscored.split("_"), [], 0
    while i < len(tokens):
        for parts in _COMPOUND_PARTS:
            if tuple(tokens[i:i + len(parts)]) == parts:
                out.append("_".join(parts))
                i += len(parts)
                break
        else:
            out.append(tokens[i])
            i += 1
    return ".".join(out)


def _rename(path: str, pairs, reverse: bool = False) -> Optional[str]:
    """Replace a leading path element listed in `pairs`, or None when none matches."""
    for old, new in pairs:
        if reverse:
            old, new = new, old
        if path == old or path.startswith(old + "."):
            return new + path[len(old):]
    return None


# U-Net: LDM ↔ diffusers paths (module paths, without `.weight`) ----------------------------------

def _ldm_to_diffusers(path: str) -> Optional[str]:
    basic = _rename(path, _BASIC_RENAMES)
    if basic is not None:
        return basic
    if m := re.fullmatch(r"input_blocks\.(\d+)\.0\.op", path):
        return f"down_blocks.{int(m.group(1)) // 3 - 1}.downsamplers.0.conv"
    if m := re.fullmatch(r"output_blocks\.(\d+)\.[12]\.conv", path):
        return f"up_blocks.{int(m.group(1)) // 3}.upsamplers.0.conv"
    if m := re.fullmatch(r"input_blocks\.(\d+)\.([01])\.(.+)", path):
        n = int(m.group(1)) - 1
        return _sub_block(f"down_blocks.{n // 3}", m.group(2) == "1", n % 3, m.group(3))
    if m := re.fullmatch(r"middle_block\.([012])\.(.+)", path):
        i = int(m.group(1))
        return _sub_block("mid_block", i == 1, i // 2, m.group(2))
    if m := re.fullmatch(r"output_blocks\.(\d+)\.([01])\.(.+)", path):
        n = int(m.group(1))
        return _sub_block(f"up_blocks.{n // 3}", m.group(2) == "1", n % 3, m.group(3))
    return None


def _sub_block(parent: str, attention: bool, index: int, rest: str) -> Optional[str]:
    if attention:
        return f"{parent}.attentions.{index}.{rest}"
    rest = _rename(rest, _RESNET_RENAMES)
    return None if rest is None else f"{parent}.resnets.{index}.{rest}"


def _diffusers_to_ldm(path: str, family: str) -> Optional[str]:
    basic = _rename(path, _BASIC_RENAMES, reverse=True)
    if basic is not None:
        return basic
    if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv", path):
        return f"input_blocks.{3 + 3 * int(m.group(1))}.0.op"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv", path):
        i = int(m.group(1))
        # The upsampler follows the level's attention when it has one: SD1/SD2's deepest level
        # (up_blocks.0) has none; SDXL's two upsampling levels both have one.
        slot = 1 if FAMILIES[family].lora_names == "diffusers" and i == 0 else 2
        return f"output_blocks.{3 * i + 2}.{slot}.conv"
    if m := re.fullmatch(r"(down_blocks|up_blocks)\.(\d+)\.(attentions|resnets)\.(\d+)\.(.+)", path):
        level, j = int(m.group(2)), int(m.group(4))
        n = 1 + 3 * level + j if m.group(1) == "down_blocks" else 3 * level + j
        kind = "input_blocks" if m.group(1) == "down_blocks" else "output_blocks"
        return _ldm_sub_block(f"{kind}.{n}", m.group(3), m.group(5))
    if m := re.fullmatch(r"mid_block\.(attentions|resnets)\.(\d+)\.(.+)", path):
        j = int(m.group(2))
        return _ldm_sub_block(f"middle_block.{1 if m.group(1) == 'attentions' else 2 * j}", m.group(1),
                              m.group(3), slot="")
    return None


def _ldm_sub_block(parent: str, kind: str, rest: str, slot: Optional[str] = None) -> Optional[str]:
    if slot is None:
        slot = ".1" if kind == "attentions" else ".0"
    if kind == "resnets":
        rest = _rename(rest, _RESNET_RENAMES, reverse=True)
        if rest is None:
            return None
    return f"{parent}{slot}.{rest}"


# Text encoders -----------------------------------------------------------------------------------

def _te_module_path(path: str, layout: str) -> Optional[str]:
    """A text-encoder checkpoint path (no prefix, no `.weight`) → the kohya path, for the linears only."""
    if layout == "t5":
        return path
    if layout == "open_clip":
        m = re.fullmatch(r"transformer\.resblocks\.(\d+)\.(.+)", path)
        if not m:
            return None
        rest = _rename(m.group(2), _OPEN_CLIP_RENAMES)
        if rest is None:
            return None
        path = f"text_model.encoder.layers.{m.group(1)}.{rest}"
    m = re.fullmatch(r"text_model\.encoder\.layers\.\d+\.(.+)", path)
    return path if m and m.group(1) in _TE_LINEARS else None


def _te_checkpoint_path(path: str, layout: str) -> Optional[str]:
    """The reverse of `_te_module_path`; OpenCLIP q/k/v land on the fused `attn.in_proj`."""
    if layout == "t5":
        return path
    m = re.fullmatch(r"text_model\.encoder\.layers\.(\d+)\.(.+)", path)
    if not m or m.group(2) not in _TE_LINEARS:
        return None
    if layout == "clip":
        return path
    if m.group(2).startswith("self_attn.") and m.group(2)[len("self_attn."):] in _QKV:
        return f"transformer.resblocks.{m.group(1)}.attn.in_proj"
    return f"transformer.resblocks.{m.group(1)}.{_rename(m.group(2), _OPEN_CLIP_RENAMES, reverse=True)}"


def _weight_path(key: str) -> Optional[str]:
    if key.endswith(".weight"):
        return key[:-len(".weight")]
    if key.endswith(".in_proj_weight"):
        return key[:-len("_weight")]
    return None


def _unet_path(ckpt_key: str, family: str) -> Optional[str]:
    """The U-Net module path of a checkpoint key (Flux also accepts unprefixed keys), or None."""
    if ckpt_key.startswith(UNET):
        path = _weight_path(ckpt_key[len(UNET):])
    elif family == "flux" and ckpt_key.split(".", 1)[0] in _FLUX_ROOTS:
        path = _weight_path(ckpt_key)
    else:
        return None
    return path if path and not path.endswith("in_proj") else None


_FLUX_ROOTS = {"double_blocks", "single_blocks", "img_in", "txt_in", "time_in", "vector_in", "guidance_in",
               "final_layer"}


def _te_split(ckpt_key: str, family: str):
    """(module prefix, layout, module path) of a text-encoder key, or None."""
    for te in FAMILIES[family].text_encoders:
        if ckpt_key.startswith(te.key_prefix):
            path = _weight_path(ckpt_key[len(te.key_prefix):])
            return (te.lora_prefixes[0], te.layout, path) if path else None
    return None


# Public API --------------------------------------------------------------------------------------

def module_name(ckpt_key: str, family, style: str = "kohya") -> Optional[str]:
    """The kohya module name of the layer whose weight is `ckpt_key`; None when no module addresses it.
    `style="ldm"` names SD1/SD2 U-Net modules by their LDM path too (valid for any U-Net layout)."""
    family = _family_name(family)
    path = _unet_path(ckpt_key, family)
    if path is not None:
        if FAMILIES[family].lora_names == "diffusers" and style != "ldm":
            path = _ldm_to_diffusers(path)
            if path is None:
                return None
        return "lora_unet_" + path.replace(".", "_")
    te = _te_split(ckpt_key, family)
    if te is None:
        return None
    module_prefix, layout, path = te
    if path.endswith("in_proj"):
        return None  # fused q/k/v: see fused_modules
    path = _te_module_path(path, layout)
    return None if path is None else module_prefix + path.replace(".", "_")


def fused_modules(ckpt_key: str, family) -> tuple:
    """The q, k, v module names stacked in an OpenCLIP `attn.in_proj_weight` key; () for any other key."""
    family = _family_name(family)
    te = _te_split(ckpt_key, family) if ckpt_key.endswith(".attn.in_proj_weight") else None
    if te is None or te[1] != "open_clip":
        return ()
    m = re.fullmatch(r"transformer\.resblocks\.(\d+)\.attn\.in_proj", te[2])
    if not m:
        return ()
    return tuple(f"{te[0]}text_model_encoder_layers_{m.group(1)}_self_attn_{p}" for p in _QKV)


def _split_module(module: str, family: str):
    """(checkpoint prefix, layout, dotted path) for a module name, or None for another family's name."""
    for prefix in ("lora_unet_", "lycoris_"):
        if module.startswith(prefix):
            return UNET, "unet", _dotted(module[len(prefix):])
    prefixes = [(mp, te.key_prefix, te.layout) for te in FAMILIES[family].text_encoders for mp in te.lora_prefixes]
    for module_prefix, prefix, layout in sorted(prefixes, key=lambda e: -len(e[0])):
        if module.startswith(module_prefix):
            return prefix, layout, _dotted(module[len(module_prefix):])
    return None


def checkpoint_key(module: str, family) -> Optional[str]:
    """The checkpoint `.weight` key a module patches (OpenCLIP q/k/v: the fused `in_proj_weight`)."""
    return _checkpoint_key(module, _family_name(family))


@lru_cache(maxsize=65536)
def _checkpoint_key(module: str, family: str) -> Optional[str]:
    split = _split_module(module, family)
    if split is None:
        return None
    prefix, layout, path = split
    if layout == "unet":
        if family != "flux" and path.split(".", 1)[0] not in _LDM_ROOTS:
            path = _diffusers_to_ldm(path, family)
            if path is None:
                return None
        return prefix + path + ".weight"
    path = _te_checkpoint_path(path, layout)
    if path is None:
        return None
    return prefix + path + ("_weight" if path.endswith(".in_proj") else ".weight")


_LDM_ROOTS = {"input_blocks", "middle_block", "output_blocks", "time_embed", "label_emb", "out"}


def fused_part(module: str, family) -> Optional[int]:
    """0/1/2 when `module` is the q/k/v third of a fused OpenCLIP `in_proj_weight`, else None."""
    key = checkpoint_key(module, family)
    if key is None or not key.endswith(".in_proj_weight"):
        return None
    return _QKV.index(module.rsplit("_self_attn_", 1)[1])


def key_block_index(ckpt_key: str, family) -> int:
    """Block index of a checkpoint key or of a ComfyUI model key (`diffusion_model.…`) among the family's
    LoRA block ids (families.LoraScheme)."""
    family = _family_name(family)
    if ckpt_key.startswith("diffusion_model."):
        ckpt_key = "model." + ckpt_key
    return FAMILIES[family].lora.key_block(ckpt_key)


def block_index(module: str, family) -> int:
    """Block index of a LoRA module name (SPEC §13.5) among the family's LoRA block ids."""
    family = _family_name(family)
    index = FAMILIES[family].lora.module_block(module)
    if index is not None:
        return index
    key = checkpoint_key(module, family)
    return 0 if key is None else key_block_index(key, family)


def is_target(ckpt_key: str, family, conv3x3: bool = False) -> bool:
    """Whether kohya's LoRA extraction makes a module for this checkpoint key (SPEC §13.9)."""
    family = _family_name(family)
    if fused_modules(ckpt_key, family):
        return True
    if module_name(ckpt_key, family) is None:
        return False
    path = _unet_path(ckpt_key, family)
    if path is None:  # a text-encoder linear; T5 is not a kohya target
        return _te_split(ckpt_key, family)[1] != "t5"
    if family == "flux":
        return bool(re.fullmatch(r"double_blocks\.\d+\.(img|txt)_(attn\.(qkv|proj)|mlp\.[02]|mod\.lin)"
                                 r"|single_blocks\.\d+\.(linear1|linear2|modulation\.lin)", path))
    if _TRANSFORMER_LAYER.fullmatch(path):
        return True
    return conv3x3 and bool(_CONV_BLOCK_LAYER.fullmatch(path))


_SPATIAL = r"(input_blocks\.\d+|middle_block|output_blocks\.\d+)"
_TRANSFORMER_LAYER = re.compile(
    _SPATIAL + r"\.\d+\.(proj_in|proj_out|transformer_blocks\.\d+\.(attn[12]\.to_(q|k|v|out\.0)|ff\.net\.(0\.proj|2)))")
# ResBlock convs and linears (not its norms), Downsample's `op`, Upsample's `conv`; never conv_in/out.
_CONV_BLOCK_LAYER = re.compile(
    r"(input_blocks\.([1-9]|1\d)\.0|middle_block\.[02]|output_blocks\.\d+\.0)"
    r"\.(in_layers\.2|out_layers\.3|emb_layers\.1|skip_connection)"
    r"|input_blocks\.\d+\.0\.op|output_blocks\.\d+\.[12]\.conv")
