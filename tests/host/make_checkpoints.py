#!/usr/bin/env python
"""Build random, correctly shaped, deterministic checkpoints with ComfyUI's own classes.

Usage (with the ComfyUI venv's python):
    COMFYUI_PATH=/path/to/ComfyUI python tests/host/make_checkpoints.py --kind mini_sd15 --seed 1 --out mini_a.safetensors

Kinds:
    mini_sd15  SD1.5-style UNet with 2 levels (channel_mult [1,2]) and 1 res block per level;
               keeps the real SD1.5 widths so comfy.model_detection still says SD15.
    mini_sd15_inpaint  the same with a 9-channel input (an inpainting model).
    mini_sd2   the mini U-Net as SD2 (1024-wide context, linear proj_in) with SD2's OpenCLIP-H text encoder.
    mini_sdxl  a Segmind-Vega-style SDXL-family U-Net (578 M parameters) with SDXL's CLIP-L and CLIP-G.
    sd15       full SD1.5 (channel_mult [1,2,4,4], 2 res blocks).
    sdxl       full SDXL base (context 2048, adm 2816, depths [0,0,2,2,10,10]).

Each file holds UNet + text encoder (comfy.sd.CLIP of the model config's clip_target) + VAE
(comfy.ldm.models.autoencoder.AutoencoderKL), written with comfy.sd.save_checkpoint, so keys are
the original LDM/SGM names (model.diffusion_model.*, cond_stage_model.* / conditioner.*,
first_stage_model.*). Every parameter is drawn from its own torch.Generator seeded from
(--seed, parameter name), so the same seed always gives the same bytes.
"""
import argparse
import json
import os
import sys
import time
import zlib

COMMON = {
    "use_checkpoint": False,
    "image_size": 32,
    "use_spatial_transformer": True,
    "legacy": False,
    "in_channels": 4,
    "out_channels": 4,
    "use_temporal_resblock": False,
    "use_temporal_attention": False,
}

# The dicts below are what comfy.model_detection.detect_unet_config returns for such checkpoints.
UNET_CONFIGS = {
    "mini_sd15": dict(COMMON, **{
        "adm_in_channels": None,
        "model_channels": 320,
        "num_res_blocks": [1, 1],
        "channel_mult": [1, 2],
        "transformer_depth": [1, 1],            # attention at both levels that exist
        "transformer_depth_output": [1, 1, 1, 1],
        "transformer_depth_middle": 1,
        "use_linear_in_transformer": False,     # conv proj_in
        "context_dim": 768,
    }),
    "sd15": dict(COMMON, **{
        "adm_in_channels": None,
        "model_channels": 320,
        "num_res_blocks": [2, 2, 2, 2],
        "channel_mult": [1, 2, 4, 4],
        "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
        "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
        "transformer_depth_middle": 1,
        "use_linear_in_transformer": False,
        "context_dim": 768,
    }),
    "sdxl": dict(COMMON, **{
        "num_classes": "sequential",
        "adm_in_channels": 2816,
        "model_channels": 320,
        "num_res_blocks": [2, 2, 2],
        "channel_mult": [1, 2, 4],
        "transformer_depth": [0, 0, 2, 2, 10, 10],
        "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10],
        "transformer_depth_middle": 10,
        "use_linear_in_transformer": True,
        "context_dim": 2048,
    }),
}
UNET_CONFIGS["mini_sd15_inpaint"] = dict(UNET_CONFIGS["mini_sd15"], in_channels=9)  # latent + mask + masked image
# SD2: OpenCLIP-H text encoder (fused q/k/v), 1024-wide cross-attention, linear proj_in
UNET_CONFIGS["mini_sd2"] = dict(UNET_CONFIGS["mini_sd15"], context_dim=1024, use_linear_in_transformer=True)
# The smallest U-Net ComfyUI detects as SDXL family (Segmind Vega's depths, fewer output transformers), with
# SDXL's full CLIP-L + CLIP-G: the text encoders are what differs from SD1 in an SDXL merge.
UNET_CONFIGS["mini_sdxl"] = dict(UNET_CONFIGS["sdxl"], transformer_depth=[0, 0, 1, 1, 2, 2],
                                 transformer_depth_output=[0, 0, 0, 1, 0, 0, 1, 0, 0], transformer_depth_middle=0)
EXPECTED_CLASS = {"mini_sd15": "SD15", "mini_sd15_inpaint": "SD15", "sd15": "SD15", "sdxl": "SDXL",
                  "mini_sd2": "SD20", "mini_sdxl": "Segmind_Vega"}

# SD1.x / SDXL VAE (same architecture), as in comfy.sd.VAE's default.
VAE_DDCONFIG = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3,
                "ch": 128, "ch_mult": [1, 2, 4, 4], "num_res_blocks": 2, "attn_resolutions": [], "dropout": 0.0}


def setup_comfy():
    path = os.environ.get("COMFYUI_PATH")
    if not path:
        sys.exit("COMFYUI_PATH is not set (point it at a ComfyUI checkout)")
    if path not in sys.path:
        sys.path.insert(0, path)
    import comfy.options  # noqa: F401  (args parsing stays off: comfy parses [] not our argv)
    import comfy.cli_args
    comfy.cli_args.args.cpu = True  # must happen before comfy.model_management is imported
    import comfy.model_management  # noqa: F401


def init_params(module, seed, tag, torch):
    """Deterministically fill every parameter of `module` (order independent: one generator per name)."""
    n = 0
    with torch.no_grad():
        for name, p in module.named_parameters():
            g = torch.Generator(device="cpu")
            g.manual_seed((seed * 1_000_003 + zlib.crc32(f"{tag}.{name}".encode())) & 0x7FFF_FFFF_FFFF_FFFF)
            shape = tuple(p.shape)
            leaf = name.rsplit(".", 1)[-1]
            if p.ndim >= 2:
                fan_in = p.numel() // shape[0]
                std = 0.02 if "embedding" in name else 1.0 / max(fan_in, 1) ** 0.5
                t = torch.randn(shape, generator=g, dtype=torch.float32) * std
            elif leaf == "bias":
                t = torch.randn(shape, generator=g, dtype=torch.float32) * 0.02
            elif p.ndim == 1 and ("norm" in name or "ln_" in name or "layer_norm" in name):
                t = 1.0 + torch.randn(shape, generator=g, dtype=torch.float32) * 0.02
            else:  # other 1-d / scalar parameters (e.g. logit_scale)
                t = torch.randn(shape, generator=g, dtype=torch.float32) * 0.02
            p.copy_(t.to(p.dtype))
            n += p.numel()
    return n


def build(kind, seed, out, dtype_name, verify, dry_run=False):
    setup_comfy()
    import torch
    import comfy.model_detection
    import comfy.model_patcher
    import comfy.sd
    import comfy.utils
    from comfy.ldm.models.autoencoder import AutoencoderKL

    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[dtype_name]
    cpu = torch.device("cpu")
    t0 = time.time()

    unet_config = dict(UNET_CONFIGS[kind])
    model_config = comfy.model_detection.model_config_from_unet_config(unet_config)
    if model_config is None or type(model_config).__name__ != EXPECTED_CLASS[kind]:
        raise SystemExit(f"model config detection gave {type(model_config).__name__}, expected {EXPECTED_CLASS[kind]}")
    model_config.set_inference_dtype(dtype, None)

    if dry_run:  # shapes only: UNet on the meta device, LDM key names, detection round trip
        model = model_config.get_model({}, device=torch.device("meta"))
        sd = model_config.process_unet_state_dict_for_saving(model.diffusion_model.state_dict())
        detected = comfy.model_detection.detect_unet_config(sd, "model.diffusion_model.")
        cfg = comfy.model_detection.model_config_from_unet(sd, "model.diffusion_model.")
        diffs = {k: (v, detected.get(k)) for k, v in UNET_CONFIGS[kind].items() if detected.get(k) != v}
        n = sum(t.numel() for t in sd.values())
        ct = model_config.clip_target()
        print(f"dry run {kind}: detected={type(cfg).__name__} unet params={n:,} keys={len(sd)} "
              f"clip_target={ct.clip.__name__}/{ct.tokenizer.__name__} config diffs={diffs}")
        if type(cfg).__name__ != EXPECTED_CLASS[kind] or diffs:
            raise SystemExit("dry run failed")
        return

    # UNet
    model = model_config.get_model({}, device=cpu)
    n_unet = init_params(model.diffusion_model, seed, "unet", torch)
    patcher = comfy.model_patcher.ModelPatcher(model, load_device=cpu, offload_device=cpu)

    # text encoder
    clip = comfy.sd.CLIP(model_config.clip_target(), model_options={"dtype": dtype, "load_device": cpu,
                                                                    "offload_device": cpu, "initial_device": cpu})
    n_clip = init_params(clip.cond_stage_model, seed, "clip", torch)

    # VAE
    ae = AutoencoderKL(ddconfig=dict(VAE_DDCONFIG), embed_dim=4)
    n_vae = init_params(ae, seed, "vae", torch)
    vae_sd = {k: v.to(dtype) for k, v in ae.state_dict().items()}
    del ae
    vae = comfy.sd.VAE(sd=vae_sd, device=cpu, dtype=dtype)
    del vae_sd

    # one metadata key only: safetensors writes several keys in random (hash) order, which would
    # make files from the same seed differ byte-wise
    metadata = {"comfy_host": json.dumps({"generator": "make_checkpoints.py", "kind": kind,
                                          "seed": seed, "dtype": dtype_name}, sort_keys=True)}
    os.makedirs(os.path.dirname(os.path.abspath(out)) or ".", exist_ok=True)
    # Released SD1 checkpoints hold CLIP's position ids (0…76), which ComfyUI's saving leaves out (it writes
    # SDXL's CLIP-L ones itself)
    extra = {"cond_stage_model.transformer.text_model.embeddings.position_ids":
             torch.arange(77, dtype=torch.int64).unsqueeze(0)} if EXPECTED_CLASS[kind] == "SD15" else {}
    comfy.sd.save_checkpoint(out, patcher, clip=clip, vae=vae, metadata=metadata, extra_keys=extra)
    size = os.path.getsize(out)
    print(f"wrote {out}: kind={kind} seed={seed} dtype={dtype_name} "
          f"params unet={n_unet:,} clip={n_clip:,} vae={n_vae:,} size={size / 2**20:.1f} MiB "
          f"in {time.time() - t0:.1f} s")
    del patcher, model, clip, vae

    if verify:
        sd = comfy.utils.load_torch_file(out)
        prefix = comfy.model_detection.unet_prefix_from_state_dict(sd)
        detected = comfy.model_detection.detect_unet_config(sd, prefix)
        cfg = comfy.model_detection.model_config_from_unet(sd, prefix)
        name = type(cfg).__name__ if cfg is not None else None
        diffs = {k: (v, detected.get(k)) for k, v in UNET_CONFIGS[kind].items() if detected.get(k) != v}
        groups = {}
        for k in sd:
            groups[k.split(".")[0]] = groups.get(k.split(".")[0], 0) + 1
        print(f"verify: prefix={prefix!r} detected={name} key groups={json.dumps(groups)}")
        if name != EXPECTED_CLASS[kind] or diffs:
            raise SystemExit(f"verification failed: detected {name}, config differences {diffs}")
        print("verify: OK")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kind", required=True, choices=sorted(UNET_CONFIGS))
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--dtype", default="fp16", choices=["fp16", "bf16", "fp32"],
                    help="storage dtype of all weights (default fp16, like released checkpoints)")
    ap.add_argument("--no-verify", action="store_true", help="skip re-reading the file through model_detection")
    ap.add_argument("--dry-run", action="store_true",
                    help="only build the UNet on the meta device and check detection; writes nothing")
    a = ap.parse_args()
    build(a.kind, a.seed, a.out, a.dtype, not a.no_verify, a.dry_run)


if __name__ == "__main__":
    main()
