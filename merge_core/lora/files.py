"""Reading LoRA files: kohya LoRA / LoCon, LyCORIS LoHa / LoKr / full / norm modules (SPEC §13.11).

A file is opened safely through `merge_core.sources` (safetensors memory-mapped; .ckpt/.pt with torch's
weights-only unpickler), and its keys are grouped into modules: `<module>.<part>`, where the part tells the
module's kind. Tensors are read when asked for, so opening a file costs only its header.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import torch

from .. import precision
from ..errors import MergeError, suggest
from ..families import detect_lora
from ..sources import DictSource, open_model

# part suffix → (module kind, part name). Longest suffixes are tried first.
PARTS = {
    "lora_up.weight": ("lora", "up"), "lora_down.weight": ("lora", "down"), "lora_mid.weight": ("lora", "mid"),
    "lora_B.weight": ("lora", "up"), "lora_A.weight": ("lora", "down"),
    "hada_w1_a": ("loha", "w1a"), "hada_w1_b": ("loha", "w1b"), "hada_w2_a": ("loha", "w2a"),
    "hada_w2_b": ("loha", "w2b"), "hada_t1": ("loha", "t1"), "hada_t2": ("loha", "t2"),
    "lokr_w1": ("lokr", "w1"), "lokr_w2": ("lokr", "w2"), "lokr_w1_a": ("lokr", "w1a"),
    "lokr_w1_b": ("lokr", "w1b"), "lokr_w2_a": ("lokr", "w2a"), "lokr_w2_b": ("lokr", "w2b"),
    "lokr_t2": ("lokr", "t2"),
    "diff": ("full", "diff"), "diff_b": ("full", "diff_b"), "w_norm": ("norm", "w_norm"),
    "b_norm": ("norm", "b_norm"),
    "oft_blocks": ("oft", "blocks"), "rescale": ("oft", "rescale"),
    # shared by every kind
    "alpha": (None, "alpha"), "dora_scale": (None, "dora_scale"), "reshape_weight": (None, "reshape"),
}
_SUFFIXES = sorted(PARTS, key=len, reverse=True)
LYCORIS_KINDS = ("loha", "lokr", "full", "norm", "oft")


@dataclass
class Module:
    name: str
    kind: Optional[str] = None
    keys: dict = field(default_factory=dict)  # part → file key


def split_key(key: str):
    """(module, part suffix) of a LoRA file key, or None for a key in no known form."""
    for suffix in _SUFFIXES:
        if key.endswith("." + suffix):
            return key[: -len(suffix) - 1], suffix
    return None


class LoraFile:
    """A LoRA's modules, read lazily from a file or a state dict."""

    def __init__(self, source, name: str):
        self.source, self.name = source, name
        self.modules: dict = {}
        self.unknown: list = []  # keys in no form this engine reads
        for key in source.keys():
            split = split_key(key)
            if split is None:
                self.unknown.append(key)
                continue
            module, suffix = split
            kind, part = PARTS[suffix]
            mod = self.modules.setdefault(module, Module(module))
            if kind is not None:
                if mod.kind not in (None, kind):
                    raise MergeError(f"LoRA {name}", f"module {module} mixes {mod.kind} and {kind} tensors")
                mod.kind = kind
            mod.keys[part] = key
        for mod in list(self.modules.values()):
            if mod.kind is None:  # only an alpha (or dora scale) left over: nothing to apply
                self.unknown += list(mod.keys.values())
                del self.modules[mod.name]

    def require_modules(self, where: str) -> "LoraFile":
        if not self.modules:
            sample = ", ".join(self.unknown[:3]) or "no keys at all"
            raise MergeError(where, f"{self.name} holds no LoRA modules (is it a LoRA file? first keys: {sample})")
        return self

    @classmethod
    def open(cls, path, name: Optional[str] = None) -> "LoraFile":
        path = Path(path)
        return cls(open_model(path, name or path.stem), name or path.stem)

    @classmethod
    def from_dict(cls, tensors: dict, name: str, metadata: Optional[dict] = None) -> "LoraFile":
        return cls(DictSource(tensors, name, metadata), name)

    # Tensors ---------------------------------------------------------------------------------------
    def tensor(self, module: str, part: str, dtype: Optional[torch.dtype] = torch.float32,
               device="cpu") -> Optional[torch.Tensor]:
        """A part of a module as a new tensor (converted to `dtype`), or None when the module lacks it."""
        key = self.modules[module].keys.get(part)
        if key is None:
            return None
        t = self.source.get(key)
        return t.to(device=device, dtype=dtype or t.dtype, copy=True)

    def raw(self, module: str, part: str) -> torch.Tensor:
        return self.source.get(self.modules[module].keys[part])

    def shape(self, module: str, part: str) -> Optional[tuple]:
        key = self.modules[module].keys.get(part)
        return None if key is None else tuple(self.source.shape(key))

    def alpha(self, module: str) -> Optional[float]:
        key = self.modules[module].keys.get("alpha")
        return None if key is None else float(self.source.get(key).float().reshape(-1)[0])

    def rank(self, module: str) -> Optional[int]:
        """The module's rank (LoRA down rows, LoHa w1_b rows, decomposed LoKr rows), None for full/norm."""
        mod = self.modules[module]
        part = {"lora": "down", "loha": "w1b"}.get(mod.kind)
        if mod.kind == "lokr":
            part = "w1b" if "w1b" in mod.keys else ("w2b" if "w2b" in mod.keys else None)
        shape = self.shape(module, part) if part else None
        return None if shape is None else shape[0]

    def metadata(self) -> dict:
        return self.source.metadata()

    @property
    def kinds(self) -> set:
        return {m.kind for m in self.modules.values()}

    def close(self):
        self.source.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# Detection (§13.11) -------------------------------------------------------------------------------

def _input_width(lora: LoraFile, module: str) -> Optional[int]:
    mod = lora.modules[module]
    part = {"lora": "down", "loha": "w1b"}.get(mod.kind)
    shape = lora.shape(module, part) if part else None
    return None if shape is None or len(shape) < 2 else shape[1]


def detect_family(lora: LoraFile) -> str:
    """The model family a LoRA is for, from its module names and the cross-attention context width."""
    return detect_lora(list(lora.modules), lambda module: _input_width(lora, module)).name


VERSION_LABELS = {"sd1": "1.X/2.X", "sd2": "1.X/2.X", "sdxl": "XL", "flux": "Flux"}


@dataclass(frozen=True)
class LoraInfo:
    name: str
    type: str  # LoRA, LoCon, LyCORIS, unknown
    family: str
    version: str  # SuperMerger's label: 1.X/2.X, XL, Flux
    ranks: tuple  # distinct module ranks, ascending
    alphas: tuple  # distinct alphas, ascending (a module without alpha counts as alpha = rank)
    modules: int
    text_encoder_modules: int
    kinds: tuple

    @property
    def dim(self):
        """SuperMerger's dim: one rank, or the list of ranks when modules differ; 'LyCORIS' for LyCORIS."""
        if self.type == "LyCORIS":
            return "LyCORIS"
        if not self.ranks:
            return "unknown"
        return self.ranks[0] if len(self.ranks) == 1 else list(self.ranks)

    def label(self) -> str:
        """`name[dim,type,version]` as SuperMerger's list shows it (LoRA and 1.X/2.X left out)."""
        parts = [str(self.dim)] + [p for p in (self.type, self.version) if p not in ("LoRA", "1.X/2.X")]
        return f"{self.name}[{','.join(parts)}]"


def is_locon(lora: LoraFile) -> bool:
    """Any LoRA module on a conv with a kernel larger than 1×1 (SuperMerger checks one such key)."""
    for mod in lora.modules.values():
        if mod.kind == "lora":
            shape = lora.shape(mod.name, "down")
            if shape is not None and len(shape) == 4 and shape[2] * shape[3] > 1:
                return True
    return False


def info(lora: LoraFile) -> LoraInfo:
    kinds = lora.kinds
    if not kinds:
        ltype = "unknown"
    elif kinds & set(LYCORIS_KINDS):
        ltype = "LyCORIS"
    else:
        ltype = "LoCon" if is_locon(lora) else "LoRA"
    ranks, alphas = set(), set()
    for name in lora.modules:
        rank = lora.rank(name)
        if rank is not None:
            ranks.add(rank)
            alpha = lora.alpha(name)
            alphas.add(float(rank) if alpha is None else alpha)
    family = detect_family(lora)
    return LoraInfo(lora.name, ltype, family, VERSION_LABELS[family], tuple(sorted(ranks)), tuple(sorted(alphas)),
                    len(lora.modules), sum(n.startswith("lora_te") for n in lora.modules), tuple(sorted(kinds)))


# Writing -------------------------------------------------------------------------------------------

def precision_dtype(name: str, where: str = "precision") -> torch.dtype:
    return precision.dtype_of(name, where)


def for_saving(tensors: dict, dtype: torch.dtype) -> dict:
    """Tensors in file order (sorted keys), floating ones in `dtype` (alphas too, as SuperMerger saves)."""
    return {k: (t.to(dtype) if t.is_floating_point() else t).contiguous() for k, t in sorted(tensors.items())}


def save_lora(tensors: dict, path, metadata: Optional[dict] = None, overwrite: bool = False) -> Path:
    """Write tensors (in the given order) atomically; an existing file only with `overwrite`."""
    from ..writer import SafetensorsWriter

    with SafetensorsWriter(path, [(k, t.dtype, tuple(t.shape)) for k, t in tensors.items()], metadata,
                           overwrite) as w:
        for k, t in tensors.items():
            w.write(k, t)
    return Path(path)


# Finding a LoRA by the name a list gives ---------------------------------------------------------

LORA_SUFFIXES = (".safetensors", ".sft", ".pt", ".ckpt", ".pth", ".bin")


def find_lora(name: str, available: list, where: str = "loras") -> str:
    """The entry of `available` (paths relative to a LoRA folder) that `name` means: the same path, else the
    path without its suffix (a .safetensors file first), else a file name without suffix only one file has."""
    name = name.strip().replace("\\", "/")
    if name in available:
        return name
    by_path, by_name = {}, {}
    for rel in available:
        norm = rel.replace("\\", "/")
        suffix = Path(norm).suffix.lower()
        base = norm[: -len(suffix)] if suffix in LORA_SUFFIXES else norm
        by_path.setdefault(base, []).append((LORA_SUFFIXES.index(suffix) if suffix in LORA_SUFFIXES else 99, rel))
        by_name.setdefault(Path(base).name, []).append(rel)
    if name in by_path:
        return min(by_path[name])[1]
    found = sorted(set(by_name.get(name, [])))
    if len(found) == 1:
        return found[0]
    if found:
        raise MergeError(where, f"'{name}' matches several LoRAs ({', '.join(found)}); write the folder too")
    listing = suggest(name, sorted(by_path), "LoRAs there")
    raise MergeError(where, f"no LoRA named '{name}' in the loras folder{listing}")
