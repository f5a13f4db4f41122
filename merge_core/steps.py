"""One step of a Plan, evaluated: the only code that turns a step and its input tensors into an output tensor.

The eager executor (files and dicts) and the lazy ComfyUI patch both call `evaluate`, each with its own way to
read an input tensor, so a key merges the same way whichever door the merge came through: the same operands
(Stage 0's B − C), the same calcmode call, Adjust in one place, one rule for NaN and infinity.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from .calcmodes import KEEP as UNCHANGED, KeyArgs
from .errors import MergeError
from .modes import difference, stage0_applies
from .plan import Action, Plan, Step

# read(role, key) → a tensor in checkpoint key space; role is "a", "b", "c" or "vae"
Reader = Callable[[str, str], torch.Tensor]
ROLE_NAMES = {"a": "model_a", "b": "model_b", "c": "model_c", "vae": "bake_vae"}


def takes_difference(plan: Plan) -> bool:
    """Add difference hands a calcmode B − C (Stage 0) unless it reads C's weights itself."""
    return plan.mode == "add_difference" and not plan.calcmode.reads_c


def operands(plan: Plan, key: str, reads_c: bool, read: Reader) -> tuple:
    """(A, B, C) as the calcmode of `plan` sees them: B − C in place of B under add difference (zeros where C
    lacks the key), C only for calcmodes that read it."""
    a, b = read("a", key), read("b", key)
    c = read("c", key) if reads_c else None
    if takes_difference(plan) and stage0_applies(key):
        b, c = difference(b, c), None
    return a, b, c


def _narrow(t: torch.Tensor, n: int) -> torch.Tensor:
    return t if t.dim() < 2 or t.shape[1] == n else t[:, :n]


def aligned(a, b, c):
    """Inpainting / instruct-pix2pix: merge only the channels all inputs have (SPEC §1). Returns the three
    tensors and the channel count cut to (None when nothing was cut)."""
    if a.shape == b.shape and (c is None or c.shape == a.shape):
        return a, b, c, None
    n = min(t.shape[1] for t in (a, b, c) if t is not None)
    return _narrow(a, n), _narrow(b, n), (_narrow(c, n) if c is not None else None), n


def adjusted(step: Step, t: torch.Tensor) -> torch.Tensor:
    """Adjust (SPEC §6), after the calcmode, on the whole tensor (inpainting channels included)."""
    return step.adjust.apply(t) if step.adjust is not None else t


def merge_tensors(plan: Plan, step: Step, a, b, c=None, stats=None, out=None) -> Optional[torch.Tensor]:
    """The calcmode's result for one MERGE step from its operands (see `operands`), before Adjust and in any
    dtype; None when the result is `a` unchanged and must not be adjusted either. `out`: see `evaluate`."""
    cm = plan.calcmode
    av, bv, cv, n = aligned(a, b, c)
    r = plan.recipe
    if out is not None and (n is not None or out.shape != a.shape or out.dtype != a.dtype):
        out = None
    p = KeyArgs(key=step.key, alpha=step.alpha, beta=step.beta, gamma=r.gamma, mode=plan.mode,
                old_calc=r.use_old_calc, stats=stats, seed=r.seed, out=out)
    try:
        result = cm.fn(av, bv, cv, p)
    except RuntimeError as e:  # torch's own words would not tell the user which key or why
        raise MergeError(f"key {step.key}", f"calcmode {cm.name} failed: {str(e).strip() or type(e).__name__}") from None
    if result is UNCHANGED:
        return None
    if n is not None:  # back into a copy of A's full tensor, as SuperMerger writes into A
        full = a.clone()
        full[:, :n] = result.to(a.dtype)
        result = full
    return result


def finite(t: torch.Tensor) -> bool:
    """No NaN or infinity anywhere: one pass, no full-size temporary. The extremes carry both (a NaN anywhere
    makes them NaN); a float32 sum of fp16 would too, but converts every element and costs ten times more."""
    if not t.is_floating_point() or t.numel() == 0:
        return True
    try:
        lo, hi = torch.aminmax(t)
    except (RuntimeError, NotImplementedError):  # dtypes without it (fp8)
        return bool(torch.isfinite(t.sum(dtype=torch.float32)))
    return bool(torch.isfinite(lo) & torch.isfinite(hi))


def non_finite(plan: Plan, step: Step, read: Reader, names: Optional[dict] = None) -> MergeError:
    """Which input holds NaN/inf values at this key, or that the merge itself produced them. `names` gives
    each role's display name (e.g. "model_b (b.safetensors)")."""
    roles = ["a", "b"] + (["c"] if step.reads_c else [])
    for role in roles:
        if not finite(read(role, step.key)):
            where = (names or {}).get(role, ROLE_NAMES[role])
            return MergeError(where, f"has NaN or infinite values at key {step.key}")
    return MergeError(f"key {step.key}", f"the merge produced NaN or infinite values "
                                         f"(calcmode {plan.calcmode.name}, alpha {step.alpha}, beta {step.beta})")


def evaluate(plan: Plan, step: Step, read: Reader, stats=None, names: Optional[dict] = None,
             out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """The output tensor of `step`, in model A's dtype (the caller may get A's own tensor back: never modify
    the result in place). `stats` is the calcmode's pre-pass result; `names` names the inputs in errors.

    `out`: a tensor the caller gives up, which the result may be written into instead of a new one (ComfyUI's
    scratch copy of A: a fresh model-sized buffer per key costs more than the maths). It may be the very tensor
    `read` gives for A, so a `read` of A after this call must not return it."""
    key = step.action
    if key is Action.KEEP:
        a = read("a", step.key)
        return adjusted(step, a).to(a.dtype)
    if key is Action.FROM_B:
        return read("b", step.key)
    if key is Action.FROM_VAE:
        return read("vae", step.source_key)
    if key is Action.RESET_IDS:
        return torch.arange(77, dtype=torch.int64).unsqueeze(0)
    a, b, c = operands(plan, step.key, step.reads_c, read)
    result = merge_tensors(plan, step, a, b, c, stats, out)
    if result is None:
        return a
    if result is a and result is not out and step.adjust is None:  # A unchanged: nothing to check
        return a
    out = adjusted(step, result).to(a.dtype)
    if not finite(out):
        raise non_finite(plan, step, read, names)
    return out
