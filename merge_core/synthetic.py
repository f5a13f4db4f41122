"""Random models with the real SD1.x / SDXL checkpoint layout (key names and, at full width, shapes).

Used by the `demo` command, the tests and the benchmarks: nothing can be downloaded here, and a merge
engine only needs the layout to be right. `width` scales every channel count, so a tiny model keeps all
real key names (and every block) at a few kilobytes, while the default widths give the full-size
1.07 B-parameter SD1.5 layout.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch


@dataclass(frozen=True)
class UNetConfig:
    channels: int
    mult: tuple
    res_blocks: int
    depth: tuple  # transformer depth per level (0 = no attention)
    mid_depth: int
    context: int
    linear_proj: bool
    adm: int = 0  # SDXL's label embedding input width


def _res(out: dict, p: str, cin: int, cout: int, emb: int):
    out[p + "in_layers.0.weight"] = (cin,)
    out[p + "in_layers.0.bias"] = (cin,)
    out[p + "in_layers.2.weight"] = (cout, cin, 3, 3)
    out[p + "in_layers.2.bias"] = (cout,)
    out[p + "emb_layers.1.weight"] = (cout, emb)
    out[p + "emb_layers.1.bias"] = (cout,)
    out[p + "out_layers.0.weight"] = (cout,)
    out[p + "out_layers.0.bias"] = (cout,)
    out[p + "out_layers.3.weight"] = (cout, cout, 3, 3)
    out[p + "out_layers.3.bias"] = (cout,)
    if cin != cout:
        out[p + "skip_connection.weight"] = (cout, cin, 1, 1)
        out[p + "skip_connection.bias"] = (cout,)


def _transformer(out: dict, p: str, ch: int, depth: int, ctx: int, linear: bool):
    proj = (ch, ch) if linear else (ch, ch, 1, 1)
    out[p + "norm.weight"] = (ch,)
    out[p + "norm.bias"] = (ch,)
    out[p + "proj_in.weight"] = proj
    out[p + "proj_in.bias"] = (ch,)
    for d in range(depth):
        t = f"{p}transformer_blocks.{d}."
        for attn, kv in (("attn1", ch), ("attn2", ctx)):
            out[t + attn + ".to_q.weight"] = (ch, ch)
            out[t + attn + ".to_k.weight"] = (ch, kv)
            out[t + attn + ".to_v.weight"] = (ch, kv)
            out[t + attn + ".to_out.0.weight"] = (ch, ch)
            out[t + attn + ".to_out.0.bias"] = (ch,)
        out[t + "ff.net.0.proj.weight"] = (ch * 8, ch)
        out[t + "ff.net.0.proj.bias"] = (ch * 8,)
        out[t + "ff.net.2.weight"] = (ch, ch * 4)
        out[t + "ff.net.2.bias"] = (ch,)
        for n in ("norm1", "norm2", "norm3"):
            out[t + n + ".weight"] = (ch,)
            out[t + n + ".bias"] = (ch,)
    out[p + "proj_out.weight"] = proj
    out[p + "proj_out.bias"] = (ch,)


def unet_layout(cfg: UNetConfig) -> dict:
    out = {}
    P = "model.diffusion_model."
    ch = cfg.channels
    emb = ch * 4
    out[P + "time_embed.0.weight"] = (emb, ch)
    out[P + "time_embed.0.bias"] = (emb,)
    out[P + "time_embed.2.weight"] = (emb, emb)
    out[P + "time_embed.2.bias"] = (emb,)
    if cfg.adm:
        out[P + "label_emb.0.0.weight"] = (emb, cfg.adm)
        out[P + "label_emb.0.0.bias"] = (emb,)
        out[P + "label_emb.0.2.weight"] = (emb, emb)
        out[P + "label_emb.0.2.bias"] = (emb,)
    out[P + "input_blocks.0.0.weight"] = (ch, 4, 3, 3)
    out[P + "input_blocks.0.0.bias"] = (ch,)
    skips, i, cur = [ch], 1, ch
    for level, m in enumerate(cfg.mult):
        for _ in range(cfg.res_blocks):
            _res(out, f"{P}input_blocks.{i}.0.", cur, ch * m, emb)
            cur = ch * m
            if cfg.depth[level]:
                _transformer(out, f"{P}input_blocks.{i}.1.", cur, cfg.depth[level], cfg.context, cfg.linear_proj)
            skips.append(cur)
            i += 1
        if level != len(cfg.mult) - 1:
            out[f"{P}input_blocks.{i}.0.op.weight"] = (cur, cur, 3, 3)
            out[f"{P}input_blocks.{i}.0.op.bias"] = (cur,)
            skips.append(cur)
            i += 1
    _res(out, P + "middle_block.0.", cur, cur, emb)
    _transformer(out, P + "middle_block.1.", cur, cfg.mid_depth, cfg.context, cfg.linear_proj)
    _res(out, P + "middle_block.2.", cur, cur, emb)
    i = 0
    for level in reversed(range(len(cfg.mult))):
        m = cfg.mult[level]
        for r in range(cfg.res_blocks + 1):
            _res(out, f"{P}output_blocks.{i}.0.", cur + skips.pop(), ch * m, emb)
            cur = ch * m
            j = 1
            if cfg.depth[level]:
                _transformer(out, f"{P}output_blocks.{i}.1.", cur, cfg.depth[level], cfg.context, cfg.linear_proj)
                j = 2
            if level and r == cfg.res_blocks:
                out[f"{P}output_blocks.{i}.{j}.conv.weight"] = (cur, cur, 3, 3)
                out[f"{P}output_blocks.{i}.{j}.conv.bias"] = (cur,)
            i += 1
    out[P + "out.0.weight"] = (cur,)
    out[P + "out.0.bias"] = (cur,)
    out[P + "out.2.weight"] = (4, cur, 3, 3)
    out[P + "out.2.bias"] = (4,)
    return out


def clip_l_layout(prefix: str, width: int, layers: int, vocab: int) -> dict:
    out = {}
    t = prefix + "text_model."
    out[t + "embeddings.token_embedding.weight"] = (vocab, width)
    out[t + "embeddings.position_embedding.weight"] = (77, width)
    for n in range(layers):
        p = f"{t}encoder.layers.{n}."
        for proj in ("k_proj", "v_proj", "q_proj", "out_proj"):
            out[p + f"self_attn.{proj}.weight"] = (width, width)
            out[p + f"self_attn.{proj}.bias"] = (width,)
        for ln in ("layer_norm1", "layer_norm2"):
            out[p + ln + ".weight"] = (width,)
            out[p + ln + ".bias"] = (width,)
        out[p + "mlp.fc1.weight"] = (width * 4, width)
        out[p + "mlp.fc1.bias"] = (width * 4,)
        out[p + "mlp.fc2.weight"] = (width, width * 4)
        out[p + "mlp.fc2.bias"] = (width,)
    out[t + "final_layer_norm.weight"] = (width,)
    out[t + "final_layer_norm.bias"] = (width,)
    return out


def open_clip_layout(prefix: str, width: int, layers: int, vocab: int) -> dict:
    out = {prefix + "positional_embedding": (77, width), prefix + "token_embedding.weight": (vocab, width)}
    for n in range(layers):
        p = f"{prefix}transformer.resblocks.{n}."
        out[p + "ln_1.weight"] = (width,)
        out[p + "ln_1.bias"] = (width,)
        out[p + "attn.in_proj_weight"] = (width * 3, width)
        out[p + "attn.in_proj_bias"] = (width * 3,)
        out[p + "attn.out_proj.weight"] = (width, width)
        out[p + "attn.out_proj.bias"] = (width,)
        out[p + "ln_2.weight"] = (width,)
        out[p + "ln_2.bias"] = (width,)
        out[p + "mlp.c_fc.weight"] = (width * 4, width)
        out[p + "mlp.c_fc.bias"] = (width * 4,)
        out[p + "mlp.c_proj.weight"] = (width, width * 4)
        out[p + "mlp.c_proj.bias"] = (width,)
    out[prefix + "ln_final.weight"] = (width,)
    out[prefix + "ln_final.bias"] = (width,)
    out[prefix + "text_projection"] = (width, width)
    out[prefix + "logit_scale"] = ()
    return out


def vae_layout(ch: int) -> dict:
    out = {}
    P = "first_stage_model."
    mult = (1, 2, 4, 4)

    def block(p, cin, cout):
        for n, c in (("norm1", cin), ("norm2", cout)):
            out[p + n + ".weight"] = (c,)
            out[p + n + ".bias"] = (c,)
        out[p + "conv1.weight"] = (cout, cin, 3, 3)
        out[p + "conv1.bias"] = (cout,)
        out[p + "conv2.weight"] = (cout, cout, 3, 3)
        out[p + "conv2.bias"] = (cout,)
        if cin != cout:
            out[p + "nin_shortcut.weight"] = (cout, cin, 1, 1)
            out[p + "nin_shortcut.bias"] = (cout,)

    def mid(p, c):
        block(p + "mid.block_1.", c, c)
        a = p + "mid.attn_1."
        out[a + "norm.weight"] = (c,)
        out[a + "norm.bias"] = (c,)
        for n in ("q", "k", "v", "proj_out"):
            out[a + n + ".weight"] = (c, c, 1, 1)
            out[a + n + ".bias"] = (c,)
        block(p + "mid.block_2.", c, c)

    e = P + "encoder."
    out[e + "conv_in.weight"] = (ch, 3, 3, 3)
    out[e + "conv_in.bias"] = (ch,)
    cur = ch
    for i, m in enumerate(mult):
        for j in range(2):
            block(f"{e}down.{i}.block.{j}.", cur, ch * m)
            cur = ch * m
        if i != len(mult) - 1:
            out[f"{e}down.{i}.downsample.conv.weight"] = (cur, cur, 3, 3)
            out[f"{e}down.{i}.downsample.conv.bias"] = (cur,)
    mid(e, cur)
    out[e + "norm_out.weight"] = (cur,)
    out[e + "norm_out.bias"] = (cur,)
    out[e + "conv_out.weight"] = (8, cur, 3, 3)
    out[e + "conv_out.bias"] = (8,)
    d = P + "decoder."
    out[d + "conv_in.weight"] = (cur, 4, 3, 3)
    out[d + "conv_in.bias"] = (cur,)
    mid(d, cur)
    for i in reversed(range(len(mult))):
        for j in range(3):
            block(f"{d}up.{i}.block.{j}.", cur, ch * mult[i])
            cur = ch * mult[i]
        if i != 0:
            out[f"{d}up.{i}.upsample.conv.weight"] = (cur, cur, 3, 3)
            out[f"{d}up.{i}.upsample.conv.bias"] = (cur,)
    out[d + "norm_out.weight"] = (cur,)
    out[d + "norm_out.bias"] = (cur,)
    out[d + "conv_out.weight"] = (3, cur, 3, 3)
    out[d + "conv_out.bias"] = (3,)
    out[P + "quant_conv.weight"] = (8, 8, 1, 1)
    out[P + "quant_conv.bias"] = (8,)
    out[P + "post_quant_conv.weight"] = (4, 4, 1, 1)
    out[P + "post_quant_conv.bias"] = (4,)
    return out


def sd1_layout(scale: float = 1.0, text_layers: int = 12, vocab: int = 49408) -> dict:
    """SD1.x checkpoint layout; scale=1 is the real 1.07 B-parameter SD1.5 shape set."""
    w = lambda n: max(1, int(n * scale))  # noqa: E731
    cfg = UNetConfig(channels=w(320), mult=(1, 2, 4, 4), res_blocks=2, depth=(1, 1, 1, 0), mid_depth=1,
                     context=w(768), linear_proj=False)
    out = unet_layout(cfg)
    out.update(clip_l_layout("cond_stage_model.transformer.", w(768), text_layers, vocab))
    out.update(vae_layout(w(128)))
    return out


def sdxl_layout(scale: float = 1.0, text_layers: tuple = (12, 32), vocab: int = 49408) -> dict:
    """SDXL base checkpoint layout; scale=1 is the real 3.5 B-parameter shape set."""
    w = lambda n: max(1, int(n * scale))  # noqa: E731
    cfg = UNetConfig(channels=w(320), mult=(1, 2, 4), res_blocks=2, depth=(0, 2, 10), mid_depth=10,
                     context=w(2048), linear_proj=True, adm=w(2816))
    out = unet_layout(cfg)
    out.update(clip_l_layout("conditioner.embedders.0.transformer.", w(768), text_layers[0], vocab))
    out.update(open_clip_layout("conditioner.embedders.1.model.", w(1280), text_layers[1], vocab))
    out.update(vae_layout(w(128)))
    return out


def random_state_dict(layout: dict, seed: int, dtype=torch.float16, scale: float = 0.02,
                      extras: bool = True) -> dict:
    """Deterministic random tensors for a layout; `extras` adds the non-weight entries real files carry."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for key, shape in layout.items():
        sd[key] = (torch.randn(shape, generator=g) * scale).to(dtype)
    if extras:
        sd["alphas_cumprod"] = torch.linspace(0.9991, 0.0047, 1000, dtype=torch.float32)
        for te in ("cond_stage_model.transformer.", "conditioner.embedders.0.transformer."):
            if te + "text_model.embeddings.token_embedding.weight" in sd:
                sd[te + "text_model.embeddings.position_ids"] = torch.arange(77).unsqueeze(0)
    return sd


def layout_params(layout: dict) -> int:
    total = 0
    for shape in layout.values():
        n = 1
        for d in shape:
            n *= d
        total += n
    return total


def tiny_sd1(seed: int, dtype=torch.float32) -> dict:
    return random_state_dict(sd1_layout(scale=1 / 40, text_layers=2, vocab=64), seed, dtype)


def tiny_sdxl(seed: int, dtype=torch.float32) -> dict:
    return random_state_dict(sdxl_layout(scale=1 / 40, text_layers=(2, 10), vocab=64), seed, dtype)


def write_model(sd: dict, path, metadata: Optional[dict] = None) -> None:
    from .writer import SafetensorsWriter  # only this helper writes

    entries = [(k, t.dtype, tuple(t.shape)) for k, t in sd.items()]
    with SafetensorsWriter(path, entries, metadata, overwrite=True) as w:
        for k, t in sd.items():
            w.write(k, t)
