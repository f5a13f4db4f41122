"""Recipe → Plan: for every output key, what to do and with which α, β (DESIGN "The one idea").

Every per-key decision lives here (key selection of SPEC §0, block weights, the calcmode's own skips and
limits, shape checks) so that the executor only carries the plan out, and a plan can be inspected, listed
and tested without touching a tensor.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import Enum
from typing import Callable, Optional

from . import calcmodes
from .adjust import Adjustment, compile_adjust
from .dice import OFFSETS, DiceSettings, dice_tokens, draw_seed, elemental_ratio, random_table, rewrite
from .elemental import Elemental, has_random_ratio, parse_elemental, unmatched
from .errors import MergeError
from .families import Family, context_width, detect
from .inex import compile_inex
from .modes import USES_BETA, USES_C
from .recipe import Recipe
from .weights import RANDOM_TOKENS, BlockWeights, expand_preset, parse_block_weights

CLIP_POSITION_IDS = "cond_stage_model.transformer.text_model.embeddings.position_ids"



class Action(str, Enum):
    """What a step does with its key."""
    KEEP = "keep"  # model A's tensor (adjusted when the step carries an Adjustment)
    MERGE = "merge"  # the calcmode's result
    FROM_B = "from_b"  # model B's tensor (keys A lacks, SPEC §0 step 28)
    FROM_VAE = "from_vae"  # a baked-in VAE's tensor (SPEC §10.7)
    RESET_IDS = "reset_ids"  # CLIP position ids 0…76 (SPEC §10.6)


KEEP, MERGE, FROM_B, FROM_VAE, RESET_IDS = Action


@dataclass(frozen=True)
class Step:
    key: str
    action: Action
    alpha: float = 0.0
    beta: float = 0.0
    block: Optional[str] = None  # coarse block (MBW list slot)
    fine: Optional[str] = None  # fine block (SDXL's 110 names)
    reads_c: bool = False  # C holds this key (add difference: B − C; zeros otherwise)
    source_key: Optional[str] = None  # FROM_VAE: the key inside the VAE file
    adjust: Optional[Adjustment] = None  # applied to the result (or to A's tensor for KEEP)


@dataclass
class Plan:
    recipe: Recipe
    family: Family
    mode: str  # the effective mode (trainDifference / extract force add difference)
    calcmode: calcmodes.Calcmode
    steps: list
    notes: list = field(default_factory=list)
    weights_alpha: Optional[BlockWeights] = None  # the block weights used, dice tokens resolved
    weights_beta: Optional[BlockWeights] = None

    def merged(self) -> list:
        return [s for s in self.steps if s.action == MERGE]

    def elist(self) -> list:
        """SuperMerger's E-list: (key, α, β) of every key that reached the calcmode (SPEC §8.6), including
        those a calcmode then leaves as A (α = 0, self's skips)."""
        return [(s.key, s.alpha, s.beta) for s in self.steps if s.block is not None and s.action in (KEEP, MERGE)]

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


def detect_family(models: dict) -> Family:
    """One family for all inputs, or a clear error naming the odd one out."""
    found = {role: detect(info._set, f"model_{role} ({info.name})", context_width(info, info.shape))
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


def _has_random(text: Optional[str]) -> bool:
    return bool(text) and any(t.strip().upper() in RANDOM_TOKENS for t in text.split(","))


def _dice_block_names(family: Family, count: int) -> tuple:
    """Names of the positions of a dice list, for E-tokens. A 26-list on SDXL keeps only the blocks
    SDXL has (the others are dropped by the 26 → 20 conversion)."""
    if count == len(family.dice_blocks):
        return tuple(n if n in family.slots else "" for n in family.dice_blocks)
    return family.extended if family.extended and count == len(family.extended) else family.blocks


def _weights(recipe: Recipe, family: Family, usebeta: bool, presets) -> tuple:
    """Block weights after presets and the dice roll; also the elemental text the dice adds."""
    dice = DiceSettings.from_dict(recipe.dice)
    texts = {"alpha": expand_preset(recipe.weights_alpha, "weights_alpha", presets),
             "beta": expand_preset(recipe.weights_beta, "weights_beta", presets) if usebeta else ""}
    if dice.mode != "off":
        count = len(family.extended) if dice.extend_xl and family.extended else len(family.dice_blocks)
        for which in ("alpha", "beta"):
            if getattr(dice, which):
                texts[which] = dice_tokens(dice, count)
    extra_elemental = ""
    if any(_has_random(t) for t in texts.values()):
        table = random_table(recipe.seed)
        for which in ("alpha", "beta"):
            if _has_random(texts[which]):
                n = len(texts[which].split(","))
                roll = rewrite(texts[which], table, OFFSETS[which], dice,
                               _dice_block_names(family, n), recipe.seed, f"weights_{which}")
                texts[which] = roll.text
                if which == "alpha":  # SuperMerger discards the β list's elemental additions
                    extra_elemental = roll.elemental
    wa = parse_block_weights(texts["alpha"], family, "weights_alpha", presets)
    wb = parse_block_weights(texts["beta"], family, "weights_beta", presets) if usebeta else None
    return wa, wb, extra_elemental, dice


def block_alphas(recipe: Recipe, family: Family, presets: Optional[dict] = None) -> list:
    """The α each block slot of `family` gets from `recipe` (presets and dice resolved; the slider's α for every
    block when there are no block weights): BASE first, in the family's list order (110 for extended lists)."""
    if recipe.seed == -1 and needs_seed(recipe):
        raise MergeError("seed", "is -1: the block weights of an unrun random merge are not known")
    wa = _weights(recipe, family, False, presets)[0]
    if wa is None:
        return [recipe.alpha] * len(family.blocks)
    return wa.as_list()


def effective_mode(recipe: Recipe) -> str:
    """The mode a merge runs in: trainDifference and extract switch it to add difference."""
    return calcmodes.get(recipe.calcmode).forced_mode or recipe.mode


def uses_model_c(recipe: Recipe) -> bool:
    return USES_C[effective_mode(recipe)] or calcmodes.get(recipe.calcmode).reads_c


def needs_seed(recipe: Recipe) -> bool:
    dice = DiceSettings.from_dict(recipe.dice)
    return (dice.mode != "off" or calcmodes.get(recipe.calcmode).needs_seed
            or any(_has_random(t) for t in (recipe.weights_alpha, recipe.weights_beta))
            or has_random_ratio(recipe.elemental))


def build_plan(recipe: Recipe, a: ModelInfo, b: ModelInfo, c: Optional[ModelInfo] = None,
               presets: Optional[dict] = None, family: Optional[Family] = None) -> Plan:
    """Resolve `recipe` against the inputs' key sets. `c` is None when the mode does not use model C.
    `family`, when the caller knows it (ComfyUI's model config), is taken instead of detecting it from keys.

    A seed of -1 is drawn here when anything random needs one; the plan's recipe records it.
    """
    if recipe.seed == -1 and needs_seed(recipe):
        recipe = recipe.replace(seed=draw_seed())
    cm = calcmodes.get(recipe.calcmode)
    notes = []
    mode = effective_mode(recipe)
    if mode != recipe.mode:
        notes.append(f"calcmode {cm.name} works in {mode} mode: mode {recipe.mode} was switched to it")
    family = family or detect_family({"a": a, "b": b, "c": c})
    uses_c = uses_model_c(recipe)
    if uses_c and c is None:
        c = a  # SuperMerger: an empty model C is model A (SPEC §0 step 10)
        notes.append("model C not given: model A is used as model C")
    # Add difference merges every key with B − C (zeros where C lacks it); other C users need the key in C.
    c_required = uses_c and (mode != "add_difference" or cm.reads_c)
    usebeta = USES_BETA[mode] or cm.uses_beta

    wa, wb, dice_elemental, dice = _weights(recipe, family, usebeta, presets)
    inex = compile_inex(recipe.include_exclude, family)
    extended = family.extended is not None and (recipe.elemental_extended or dice.extend_xl
                                                or (wa is not None and wa.extended))
    rules = parse_elemental(",".join(t for t in (recipe.elemental, dice_elemental) if t), family, extended,
                            recipe.calcmode)
    elemental = None
    if rules:
        ratio = elemental_ratio(random_table(recipe.seed, len(a.keys) + 101), dice) if recipe.seed >= 0 else None
        elemental = Elemental(tuple(rules), extended, ratio)
    adjust = compile_adjust(recipe.adjust, family.name)

    steps = []
    seen, tried = [], []  # keys Include/Exclude and the elemental rules looked at, for typos that match nothing
    for num, key in enumerate(a.keys):
        if not _selected(key, family, b, c, c_required):
            steps.append(Step(key, KEEP))
            continue
        ref = family.block_of(key)
        if ref is not None:
            seen.append((ref, key))
        if ref is None or (inex is not None and inex.skips(ref, key)):
            steps.append(Step(key, KEEP))
            continue
        if wa is not None and wa.extended and ref.fine not in family.extended:
            steps.append(Step(key, KEEP))  # a fine block SuperMerger has no slot for
            continue
        alpha = wa.for_block(family, ref) if wa is not None else recipe.alpha
        beta = wb.for_block(family, ref) if wb is not None else recipe.beta
        if elemental is not None:
            alpha = elemental.alpha(ref, key, family.slot_index(ref.coarse), num, alpha)
            tried.append((ref.fine if elemental.extended else ref.coarse, key))
        if cm.skip_key(key) or (cm.min_dim and len(a.shape(key)) < cm.min_dim):
            steps.append(Step(key, KEEP, alpha, beta, ref.coarse, ref.fine))
            continue
        if cm.check is not None:
            problem = cm.check(alpha, beta, recipe.gamma)
            if problem:
                where = f"block {ref.coarse}" if (wa is not None or wb is not None or elemental) else "recipe"
                raise MergeError(where, problem)
        _check_shapes(key, a, b, c if c_required or (uses_c and key in c) else None)
        adj = adjust.get(key)
        if cm.unchanged is not None and cm.unchanged(mode, alpha, beta):
            # exactly A (B is not read), still adjusted
            steps.append(Step(key, KEEP, alpha, beta, ref.coarse, ref.fine, adjust=adj))
            continue
        steps.append(Step(key, MERGE, alpha, beta, ref.coarse, ref.fine, reads_c=uses_c and key in c, adjust=adj))

    if inex is not None:
        notes += inex.unmatched(seen)
    if elemental is not None:
        notes += unmatched(list(elemental.rules), tried)
    if family.name != "flux":  # Stage 2: B's model keys that A lacks are copied in (SPEC §0 step 28)
        steps += [Step(k, FROM_B) for k in b.keys
                  if k not in a and "model" in k and k != CLIP_POSITION_IDS]
    return Plan(recipe=recipe, family=family, mode=mode, calcmode=cm, steps=steps, notes=notes,
                weights_alpha=wa, weights_beta=wb)


def adjust_plan(family: Family, keys: list, adjust_text: str) -> list:
    """Steps that apply Adjust to a model on its own (every other key kept as it is)."""
    ops = compile_adjust(adjust_text, family.name)
    if not ops:
        raise MergeError("adjust", "all eight values are 0: nothing to adjust")
    return [Step(k, KEEP, adjust=ops.get(k)) for k in keys]
