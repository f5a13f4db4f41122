"""Recipe → Plan: for every output key, what to do and with which α, β (DESIGN "The one idea").

Every per-key decision lives here (key selection of SPEC §0, block weights, the calcmode's own skips and
limits, shape checks) so that the executor only carries the plan out, and a plan can be inspected, listed
and tested without touching a tensor.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable, Optional

from . import calcmodes
from .errors import MergeError
from .families import Family, detect
from .modes import USES_BETA, USES_C
from .recipe import Recipe
from .weights import parse_block_weights

CLIP_POSITION_IDS = "cond_stage_model.transformer.text_model.embeddings.position_ids"

KEEP, MERGE, FROM_B, FROM_VAE, RESET_IDS = "keep", "merge", "from_b", "from_vae", "reset_ids"


@dataclass(frozen=True)
class Step:
    key: str
    action: str
    alpha: float = 0.0
    beta: float = 0.0
    block: Optional[str] = None  # coarse block (MBW list slot)
    fine: Optional[str] = None  # fine block (SDXL's 110 names)
    reads_c: bool = False  # C holds this key (add difference: B − C; zeros otherwise)
    source_key: Optional[str] = None  # FROM_VAE: the key inside the VAE file


@dataclass
class Plan:
    recipe: Recipe
    family: Family
    mode: str  # the effective mode (trainDifference / extract force add difference)
    calcmode: calcmodes.Calcmode
    steps: list
    notes: list = field(default_factory=list)

    @property
    def uses_c(self) -> bool:
        return USES_C[self.mode] or self.calcmode.reads_c

    def merged(self) -> list:
        return [s for s in self.steps if s.action == MERGE]

    def elist(self) -> list:
        """SuperMerger's E-list: (key, α, β) of every key the calcmode ran on (SPEC §8.6)."""
        return [(s.key, s.alpha, s.beta) for s in self.merged()]

    def filtered(self, keep: Callable[[str], bool]) -> "Plan":
        return replace(self, steps=[s for s in self.steps if keep(s.key)])

    def replaced(self, steps: list) -> "Plan":
        return replace(self, steps=steps)


class ModelInfo:
    """What the planner needs to know of a model: key order, shapes and dtypes (no tensor data)."""

    def __init__(self, name: str, keys, shape: Callable, dtype: Callable):
        self.name = name
        self.keys = list(keys)
        self._set = set(self.keys)
        self.shape = shape
        self.dtype = dtype

    def __contains__(self, key) -> bool:
        return key in self._set

    @classmethod
    def of(cls, source) -> "ModelInfo":
        return cls(source.name, source.keys(), source.shape, source.dtype)


def _context_dim(info: ModelInfo) -> Optional[int]:
    key = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
    return info.shape(key)[-1] if key in info else None


def detect_family(models: dict) -> Family:
    """One family for all inputs, or a clear error naming the odd one out."""
    found = {role: detect(info._set, f"model_{role} ({info.name})", _context_dim(info))
             for role, info in models.items() if info is not None}
    families = {f.name for f in found.values()}
    if len(families) > 1:
        listing = ", ".join(f"model_{role} is {f.label}" for role, f in found.items())
        raise MergeError("models", f"cannot merge models of different families: {listing}")
    return next(iter(found.values()))


def _channels_compatible(a: tuple, b: tuple) -> bool:
    """Inpainting / instruct-pix2pix input convs differ from normal ones in dim 1 only."""
    return len(a) == len(b) and len(a) >= 2 and a[0] == b[0] and a[2:] == b[2:]


def _check_shapes(key: str, a: ModelInfo, b: ModelInfo, c: Optional[ModelInfo]) -> None:
    sa, sb = tuple(a.shape(key)), tuple(b.shape(key))
    others = [("B", b, sb)] + ([("C", c, tuple(c.shape(key)))] if c is not None and key in c else [])
    for role, info, s in others:
        if s == sa:
            continue
        if _channels_compatible(sa, s):
            if s[1] > sa[1]:
                kind = "inpainting" if s[1] == 9 else "instruct-pix2pix" if s[1] == 8 else "wider"
                raise MergeError(f"model_{role.lower()} ({info.name})",
                                 f"is an {kind} model ({s[1]} input channels) but model A has {sa[1]}: when "
                                 f"merging an {kind} model with a normal one, A must be the {kind} model")
            continue
        raise MergeError(f"model_{role.lower()} ({info.name})",
                         f"key {key} has shape {list(s)} but model A ({a.name}) has {list(sa)}: the models "
                         "are not the same architecture")


def _selected(key: str, family: Family, b: ModelInfo, c: Optional[ModelInfo], c_required: bool) -> bool:
    """SPEC §0 step 25: which of A's keys reach the calcmode at all."""
    if key not in b:
        return False
    if family.name != "flux" and "model" not in key:
        return False
    if "weight" not in key and "bias" not in key:
        return False
    if c_required and (c is None or key not in c):
        return False
    return True


def build_plan(recipe: Recipe, a: ModelInfo, b: ModelInfo, c: Optional[ModelInfo] = None,
               presets: Optional[dict] = None) -> Plan:
    """Resolve `recipe` against the inputs' key sets. `c` is None when the mode does not use model C."""
    cm = calcmodes.get(recipe.calcmode)
    notes = []
    mode = recipe.mode
    if cm.forced_mode and mode != cm.forced_mode:
        notes.append(f"calcmode {cm.name} works in {cm.forced_mode} mode: mode {mode} was switched to it")
        mode = cm.forced_mode
    family = detect_family({"a": a, "b": b, "c": c})
    uses_c = USES_C[mode] or cm.reads_c
    if uses_c and c is None:
        c = a  # SuperMerger: an empty model C is model A (SPEC §0 step 10)
        notes.append("model C not given: model A is used as model C")
    # Add difference merges every key with B − C (zeros where C lacks it); other C users need the key in C.
    c_required = uses_c and (mode != "add_difference" or cm.reads_c)
    usebeta = USES_BETA[mode] or cm.uses_beta

    wa = parse_block_weights(recipe.weights_alpha, family, "weights_alpha", presets)
    wb = parse_block_weights(recipe.weights_beta, family, "weights_beta", presets) if usebeta else None

    steps = []
    for key in a.keys:
        if not _selected(key, family, b, c, c_required):
            steps.append(Step(key, KEEP))
            continue
        ref = family.block_of(key)
        if ref is None or cm.skip_key(key) or (cm.min_dim and len(a.shape(key)) < cm.min_dim):
            steps.append(Step(key, KEEP))
            continue
        if wa is not None and wa.extended and ref.fine not in family.extended:
            steps.append(Step(key, KEEP))  # a fine block SuperMerger has no slot for
            continue
        alpha = wa.for_block(family, ref) if wa is not None else recipe.alpha
        beta = wb.for_block(family, ref) if wb is not None else recipe.beta
        if cm.check is not None:
            problem = cm.check(alpha, beta, recipe.gamma)
            if problem:
                where = f"block {ref.coarse}" if (wa is not None or wb is not None) else "recipe"
                raise MergeError(where, problem)
        _check_shapes(key, a, b, c if c_required or (uses_c and key in c) else None)
        if mode == "weight_sum" and cm.name == "normal" and alpha == 0:
            steps.append(Step(key, KEEP, alpha, beta, ref.coarse, ref.fine))  # exactly A; B is not read
            continue
        steps.append(Step(key, MERGE, alpha, beta, ref.coarse, ref.fine, reads_c=uses_c and key in c))

    if family.name != "flux":  # Stage 2: B's model keys that A lacks are copied in (SPEC §0 step 28)
        steps += [Step(k, FROM_B) for k in b.keys
                  if k not in a and "model" in k and k != CLIP_POSITION_IDS]
    return Plan(recipe=recipe, family=family, mode=mode, calcmode=cm, steps=steps, notes=notes)
