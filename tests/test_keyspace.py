"""The layout of ComfyUI weights in checkpoint key space, derived from a pair of conversions (nodes/keyspace.py).

The conversions here imitate the three things ComfyUI's do to a checkpoint (rename, split a fused tensor into
views, transpose into a copy) without ComfyUI; tests/host/test_keyspace_host.py holds the real ones to literal
SD1, SD2 and SDXL names.
"""
import torch

from nodes import keyspace

CK = "te.resblocks.0."


def to_comfy(sd: dict) -> dict:
    """Loading: in_proj → q/k/v rows (views), proj → transposed copy, the rest renamed."""
    out = {}
    for k, v in sd.items():
        if k == CK + "in_proj_weight":
            n = v.shape[0] // 3
            for i, name in enumerate("qkv"):
                out[f"clip.layers.0.{name}.weight"] = v[n * i:n * (i + 1)]
        elif k == "te.proj":
            out["clip.proj.weight"] = v.transpose(0, 1).contiguous()
        elif k.startswith("te."):
            out["clip." + k[3:]] = v
    return out


def to_checkpoint(sd: dict) -> dict:
    """Saving: the inverse, plus a constant the loaded model does not hold."""
    out = {}
    qkv = [sd.pop(f"clip.layers.0.{name}.weight") for name in "qkv"]
    out[CK + "in_proj_weight"] = torch.cat(qkv)
    out["te.proj"] = sd.pop("clip.proj.weight").transpose(0, 1).contiguous()
    for k, v in sd.items():
        out["te." + k[5:]] = v
    out["te.ids"] = torch.arange(4)
    return out


SHAPES = {"clip.layers.0.q.weight": (2, 3), "clip.layers.0.k.weight": (2, 3), "clip.layers.0.v.weight": (2, 3),
          "clip.proj.weight": (3, 2), "clip.ln.weight": (3,), "clip.only_here": (5,)}


def _layout():
    def only_known(sd):  # ComfyUI's model holds keys no checkpoint has (CLIP-L's unused projection)
        return to_checkpoint({k: v for k, v in sd.items() if k != "clip.only_here"})
    return keyspace.derive(SHAPES, only_known, to_comfy)


def test_derived_layout_names_every_part_of_a_fused_tensor_and_the_transposed_copy():
    layout = _layout()
    assert sorted(layout.entries) == ["te.ln.weight", "te.proj", CK + "in_proj_weight"]
    fused = layout.entries[CK + "in_proj_weight"]
    assert fused.shape == (6, 3)
    assert [(s.comfy_key, s.view) for s in fused.slots] == [
        ("clip.layers.0.k.weight", ((2, 3), (3, 1), 6)), ("clip.layers.0.q.weight", ((2, 3), (3, 1), 0)),
        ("clip.layers.0.v.weight", ((2, 3), (3, 1), 12))]
    (proj,) = layout.entries["te.proj"].slots
    assert proj.comfy_key == "clip.proj.weight" and proj.view is None
    assert proj.index.tolist() == [[0, 3], [1, 4], [2, 5]]  # ComfyUI (3, 2) is the checkpoint (2, 3) transposed
    assert layout.entries["te.ln.weight"].slots[0].whole
    assert list(layout.constants) == ["te.ids"]
    assert layout.unmapped == ("clip.only_here",)


def test_parts_put_together_give_the_checkpoint_tensor_and_take_gives_them_back():
    layout = _layout()
    g = torch.Generator().manual_seed(0)
    comfy = {k: torch.randn(s, generator=g) for k, s in SHAPES.items()}
    checkpoint = to_checkpoint({k: v.clone() for k, v in comfy.items() if k != "clip.only_here"})
    for key, entry in layout.entries.items():
        whole = torch.full(entry.shape, float("nan"))
        for slot in entry.slots:
            slot.put(whole, comfy[slot.comfy_key])
        assert torch.equal(whole, checkpoint[key]), key
        for slot in entry.slots:
            assert torch.equal(slot.take(checkpoint[key]), comfy[slot.comfy_key]), slot.comfy_key


def test_a_tensor_held_only_in_part_has_no_entry():
    shapes = {k: v for k, v in SHAPES.items() if k != "clip.layers.0.v.weight"}

    def to_ckpt(sd):
        sd = dict(sd, **{"clip.layers.0.v.weight": torch.empty((2, 3), device="meta")})
        return to_checkpoint({k: v for k, v in sd.items() if k != "clip.only_here"})
    layout = keyspace.derive(shapes, to_ckpt, to_comfy)
    assert CK + "in_proj_weight" not in layout.entries
    assert {"clip.layers.0.q.weight", "clip.layers.0.k.weight"} <= set(layout.unmapped)
