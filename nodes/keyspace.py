"""ComfyUI's weights in checkpoint key space, so an in-graph merge computes every tensor a file merge computes.

ComfyUI renames a checkpoint's keys when it loads a model, and it reshapes some: OpenCLIP's fused q/k/v
projection (SD2's text encoder, SDXL's CLIP-G) becomes three Linear weights, its text projection is
transposed. A merge must see the tensor the checkpoint has (element rules match its names; tensor-shaped
calcmodes slice it; cosine takes similarities over its columns). So the layout is derived from ComfyUI's own
conversions — the model config's `process_*_state_dict_for_saving` and its inverse, the loading conversion —
run on shape-only (meta) tensors: nothing is copied, and whatever ComfyUI does for a model family is what we
follow. ComfyUI-free: the conversions are passed in.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

META = torch.device("meta")


@dataclass(frozen=True)
class Slot:
    """Where one ComfyUI weight sits in a checkpoint tensor: all of it (`view` and `index` None), a strided
    view of it (size, stride, offset; e.g. q of a fused q/k/v), or a gather index where no view expresses the
    relation (a transposed copy)."""
    comfy_key: str
    view: Optional[tuple] = None
    index: Optional[torch.Tensor] = None

    @property
    def whole(self) -> bool:
        return self.view is None and self.index is None

    def take(self, whole: torch.Tensor) -> torch.Tensor:
        """This slot's ComfyUI-shaped tensor out of a (contiguous) checkpoint tensor."""
        if self.view is not None:
            size, stride, offset = self.view
            return whole.as_strided(size, stride, offset)
        if self.index is not None:
            return whole.reshape(-1)[self.index.to(whole.device)]
        return whole

    def put(self, whole: torch.Tensor, part: torch.Tensor) -> None:
        """Write the ComfyUI-shaped `part` into its place in `whole`."""
        if self.view is not None:
            size, stride, offset = self.view
            whole.as_strided(size, stride, offset).copy_(part)
        elif self.index is not None:
            whole.view(-1)[self.index.reshape(-1).to(whole.device)] = part.reshape(-1).to(whole.dtype)
        else:
            whole.copy_(part)


@dataclass(frozen=True)
class Entry:
    """One checkpoint key: its shape and the ComfyUI weights it is made of."""
    shape: tuple
    slots: tuple


@dataclass
class Layout:
    """Checkpoint key → Entry for the weights a ComfyUI model holds; `constants` are checkpoint keys ComfyUI
    writes without holding them (SDXL's CLIP-L position ids); `unmapped` are ComfyUI keys no checkpoint has."""
    entries: dict
    constants: dict
    unmapped: tuple


def _meta_like(shape) -> torch.Tensor:
    return torch.empty(tuple(shape), device=META)


def derive(comfy_shapes: dict, to_checkpoint: Callable[[dict], dict], to_comfy: Callable[[dict], dict]) -> Layout:
    """The layout of the weights named in `comfy_shapes` (ComfyUI key → shape): `to_checkpoint` is ComfyUI's
    saving conversion, `to_comfy` its loading conversion (each takes and returns a state dict)."""
    saved = to_checkpoint({k: _meta_like(s) for k, s in comfy_shapes.items()})
    checkpoint, constants = {}, {}
    for key, t in saved.items():
        if t.device == META:
            checkpoint[key] = _meta_like(t.shape)
        else:
            constants[key] = t
    found: dict = {key: [] for key in checkpoint}
    owner = {id(t): key for key, t in checkpoint.items()}
    loose = []
    for comfy_key, t in to_comfy(dict(checkpoint)).items():
        if comfy_key not in comfy_shapes:
            continue
        if id(t) in owner:
            found[owner[id(t)]].append(Slot(comfy_key))
        elif t._base is not None and id(t._base) in owner:
            found[owner[id(t._base)]].append(Slot(comfy_key, (tuple(t.shape), t.stride(), t.storage_offset())))
        else:
            loose.append(comfy_key)
    if loose:  # a conversion that copies (a transpose): trace where each element goes, one key at a time
        for key in [k for k, slots in found.items() if not slots]:
            numel = checkpoint[key].numel()
            tracer = torch.arange(numel, dtype=torch.float64).reshape(checkpoint[key].shape)
            for comfy_key, t in to_comfy({key: tracer}).items():
                if comfy_key in comfy_shapes and comfy_key in loose:
                    found[key].append(Slot(comfy_key, index=t.to(torch.int64).contiguous()))
    entries, used = {}, set()
    for key, slots in found.items():
        covered = sum(_numel(comfy_shapes[s.comfy_key]) for s in slots)
        if slots and covered == checkpoint[key].numel():  # a tensor ComfyUI holds only in part cannot be rebuilt
            entries[key] = Entry(tuple(checkpoint[key].shape), tuple(sorted(slots, key=lambda s: s.comfy_key)))
            used.update(s.comfy_key for s in slots)
    return Layout(entries, constants, tuple(sorted(set(comfy_shapes) - used)))


def _numel(shape) -> int:
    n = 1
    for d in shape:
        n *= d
    return n
