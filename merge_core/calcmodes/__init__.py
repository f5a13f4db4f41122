"""Calculation modes: one small pure function each, plus its declaration (SPEC §2).

A calcmode function takes the aligned tensors of one key and its parameters and returns the merged tensor
(any dtype: the executor casts to model A's), `a` itself for "unchanged", or `KEEP` for "unchanged and
not adjusted" (trainDifference's B == C rule). It never modifies its inputs, except `KeyArgs.out`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from ..recipe import MODES

KEEP = object()


@dataclass(frozen=True)
class KeyArgs:
    key: str
    alpha: float
    beta: float
    gamma: float
    mode: str
    old_calc: bool = False
    stats: Any = None  # the result of the calcmode's pre-pass
    seed: int = 0
    # A tensor of A's shape and dtype the caller gives up, which the result may be written into (see
    # steps.evaluate). It may be `a` itself: a calcmode that uses it writes each part only after reading it.
    out: Any = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Prepass:
    """A statistic of the whole model: `per_key(key, a, b)` for each key it reads — keys need nothing from each
    other, so the run computes them side by side — then `combine([(key, that), …])`, in key order."""
    per_key: Callable
    combine: Callable


@dataclass(frozen=True)
class Calcmode:
    """A calcmode and what callers need to know of it, so that none of them tests its name."""
    name: str
    fn: Callable
    modes: tuple  # modes the calcmode is meant for (the UI offers it there)
    # What it reads: the weights of A, B and C itself (True), or what the mode hands it (False: add difference
    # gives it B − C, formed in Stage 0, and no C).
    reads_c: bool = False
    forced_mode: Optional[str] = None  # SuperMerger switches the mode to this one
    uses_beta: bool = False  # β (and an MBW β list) apply whatever the mode
    uses_gamma: bool = False
    prepass: Optional[Prepass] = None  # a whole-model statistic over `prepass_keys`, taken before the merge
    skip_key: Callable[[str], bool] = field(default=lambda key: False)  # keys left as A
    min_dim: int = 0  # tensors with fewer dimensions are left as A
    check: Optional[Callable] = None  # (alpha, beta, gamma) -> problem text or None, checked per key at plan time
    costly: bool = False  # minutes for a whole model: worth keeping a result that is asked for twice
    needs_seed: bool = False  # draws random numbers from the recipe's seed
    # (mode, alpha, beta) -> True where the result is model A exactly, without reading B: such keys stay A
    unchanged: Optional[Callable] = None


CALCMODES: dict = {}


def register(name: str, modes=MODES, **decl):
    def wrap(fn):
        CALCMODES[name] = Calcmode(name=name, fn=fn, modes=tuple(modes), **decl)
        return fn
    return wrap


def get(name: str) -> Calcmode:
    return CALCMODES[name]


def for_mode(mode: str) -> list:
    """The calcmodes meant for `mode` (what a merge node offers), in SuperMerger's order."""
    return [name for name, cm in CALCMODES.items() if mode in cm.modes]


from . import normal, cosine, train_difference, smooth, extract, tensor, self_modes  # noqa: E402,F401

ORDER = ("normal", "cosineA", "cosineB", "trainDifference", "smoothAdd", "smoothAdd MT", "extract",
         "tensor", "tensor2", "self", "plus random")
assert tuple(sorted(CALCMODES)) == tuple(sorted(ORDER))
CALCMODES = {name: CALCMODES[name] for name in ORDER}
