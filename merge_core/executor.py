"""Carries out a Plan, key by key, handing each output tensor to `emit` in plan order.

This is the only key loop of the engine. Inputs are read one key at a time from their sources and their
pages dropped once the key is done, so memory stays near one tensor per input whatever the model size.
Computation runs in worker threads while the caller writes the previous result; calcmodes declared
`parallel` (single-threaded scipy filters) get one worker per core.
"""
from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from .calcmodes import KEEP as CALC_KEEP, KeyArgs
from .errors import MergeError, MergeInterrupted
from .modes import difference, stage0_applies
from .plan import FROM_B, FROM_VAE, KEEP, MERGE, RESET_IDS, Plan
from .calcmodes.cosine import prepass_key


@dataclass
class Inputs:
    a: object
    b: object
    c: object = None
    vae: object = None

    def close(self):
        for src in {id(s): s for s in (self.a, self.b, self.c, self.vae) if s is not None}.values():
            src.close()


def _narrow(t: torch.Tensor, n: int) -> torch.Tensor:
    return t if t.dim() < 2 or t.shape[1] == n else t[:, :n]


def _aligned(a, b, c):
    """Inpainting / instruct-pix2pix: merge only the channels all inputs have (SPEC §1)."""
    if a.shape == b.shape and (c is None or c.shape == a.shape):
        return a, b, c, None
    n = min(t.shape[1] for t in (a, b, c) if t is not None)
    return _narrow(a, n), _narrow(b, n), (_narrow(c, n) if c is not None else None), n


class _Runner:
    def __init__(self, plan: Plan, inputs: Inputs, device: str = "cpu"):
        self.plan, self.inputs, self.device = plan, inputs, torch.device(device)
        self.c = inputs.c if inputs.c is not None else inputs.a  # no model C: A stands in (SPEC §0 step 10)
        self.cm = plan.calcmode
        self.stage0 = plan.mode == "add_difference" and not self.cm.reads_c
        self.stats = None

    def operands(self, key, reads_c):
        a, b = self.inputs.a.get(key), self.inputs.b.get(key)
        c = self.c.get(key) if reads_c else None
        if self.stage0 and stage0_applies(key):
            b, c = difference(b, c), None
        return a, b, c

    def prepass(self, cancel, progress=None):
        keys = [s.key for s in self.plan.steps
                if s.action in (KEEP, MERGE) and prepass_key(s.key) and s.key in self.inputs.b]
        self.stats = self.cm.prepass(iter_pairs(keys, lambda k: self.operands(k, k in self.c)[:2], self.release,
                                                cancel, progress, "similarity pre-pass"))  # B − C as in Stage 0

    def release(self, key):
        for src in (self.inputs.a, self.inputs.b, self.c):
            if src is not None and key in src:
                src.release(key)

    def non_finite(self, step) -> MergeError:
        """Say which input holds NaN/inf values, or that the merge itself produced them."""
        roles = [("model_a", self.inputs.a), ("model_b", self.inputs.b)]
        if step.reads_c:
            roles.append(("model_c", self.c))
        for role, src in roles:
            t = src.get(step.key)
            if t.is_floating_point() and not torch.isfinite(t).all():
                return MergeError(f"{role} ({src.name})", f"has NaN or infinite values at key {step.key}")
        return MergeError(f"key {step.key}", f"the merge produced NaN or infinite values "
                                             f"(calcmode {self.cm.name}, alpha {step.alpha}, beta {step.beta})")

    def compute(self, step) -> torch.Tensor:
        key = step.key
        if step.action == KEEP:
            return kept(step, self.inputs.a.get(key))
        if step.action == FROM_B:
            return self.inputs.b.get(key)
        if step.action == FROM_VAE:
            return self.inputs.vae.get(step.source_key)
        if step.action == RESET_IDS:
            return torch.arange(77, dtype=torch.int64).unsqueeze(0)
        a, b, c = self.operands(key, step.reads_c)
        if self.device.type != "cpu":
            a, b, c = (t.to(self.device) if t is not None else None for t in (a, b, c))
        out = merge_key(self.plan, step, a, b, c, self.stats, stage0_done=True)
        if out is None:
            return self.inputs.a.get(key)
        if out.is_floating_point() and not torch.isfinite(out.sum(dtype=torch.float32)):
            raise self.non_finite(step)
        return out.cpu()


def kept(step, a):
    """A KEEP step's tensor: A's, adjusted when Adjust targets the key."""
    return step.adjust.apply(a).to(a.dtype) if step.adjust is not None else a


def merge_key(plan: Plan, step, a, b, c=None, stats=None, stage0_done: bool = False):
    """The merged tensor of one MERGE step from its input tensors, in `a`'s dtype; None when the result
    is `a` unchanged. `c` is model C's tensor when the step reads C. The lazy (ComfyUI) path calls this
    with B and C as they are; the executor has already formed B − C (`stage0_done`)."""
    cm = plan.calcmode
    if not stage0_done and plan.mode == "add_difference" and not cm.reads_c:
        b, c = difference(b, c), None  # every merged key has "model" and "weight"/"bias" (plan)
    av, bv, cv, n = _aligned(a, b, c)
    r = plan.recipe
    p = KeyArgs(key=step.key, alpha=step.alpha, beta=step.beta, gamma=r.gamma, mode=plan.mode,
                old_calc=r.use_old_calc, stats=stats, seed=r.seed)
    try:
        result = cm.fn(av, bv, cv, p)
    except RuntimeError as e:  # torch's own words would not tell the user which key or why
        raise MergeError(f"key {step.key}", f"calcmode {cm.name} failed: {str(e).strip() or type(e).__name__}") from None
    if result is CALC_KEEP:  # unchanged and, by SuperMerger's rule, not adjusted either
        return None
    if result is av and n is None and step.adjust is None:
        return None
    if n is not None:  # back into a copy of A's full tensor, as SuperMerger writes into A
        full = a.clone()
        full[:, :n] = result.to(a.dtype)
        result = full
    if step.adjust is not None:  # after the calcmode, on the whole tensor (inpainting channels included)
        result = step.adjust.apply(result)
    return result.to(a.dtype)


def iter_pairs(keys: list, read: Callable, release: Optional[Callable] = None, cancel: Optional[Callable] = None,
               progress: Optional[Callable] = None, phase: str = "compare"):
    """(key, a, b) for each key, read one key at a time (channel-aligned, pages released after use): the
    loop behind every whole-model statistic (cosine pre-pass, similarity analysis)."""
    for done, key in enumerate(keys):
        if cancel is not None and cancel():
            raise MergeInterrupted()
        if progress:
            progress(done, len(keys), phase)
        a, b = read(key)
        a, b, _, _ = _aligned(a, b, None)
        yield key, a, b
        if release is not None:
            release(key)
    if progress:
        progress(len(keys), len(keys), phase)


def run_prepass(plan: Plan, inputs: Inputs, cancel: Optional[Callable] = None,
                progress: Optional[Callable] = None):
    """The calcmode's global statistics (cosineA/B's similarity range), or None if it has no pre-pass."""
    if plan.calcmode.prepass is None or not plan.merged():
        return None
    runner = _Runner(plan, inputs)
    runner.prepass(cancel, progress)
    return runner.stats


def run_plan(plan: Plan, inputs: Inputs, emit: Callable, *, progress: Optional[Callable] = None,
             cancel: Optional[Callable] = None, workers: Optional[int] = None, device: str = "cpu") -> None:
    """Compute every step of `plan` and call `emit(step, tensor)` in plan order.

    `progress(done, total, phase)` is called as keys complete; `cancel()` returning True stops the run
    with MergeInterrupted between keys. Tensors handed to `emit` may view an input's memory: never
    modify them in place.
    """
    runner = _Runner(plan, inputs, device)
    total = len(plan.steps)
    if plan.calcmode.prepass is not None and plan.merged():
        runner.prepass(cancel, progress)
    if workers is None:
        workers = (os.cpu_count() or 1) if plan.calcmode.parallel else 1
    window = 2 * workers + 1
    pending = deque()
    steps = iter(plan.steps)
    done = 0
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="merge") as pool:
        try:
            while True:
                while len(pending) < window:
                    step = next(steps, None)
                    if step is None:
                        break
                    if cancel is not None and cancel():
                        raise MergeInterrupted()
                    pending.append((step, pool.submit(runner.compute, step)))
                if not pending:
                    break
                step, future = pending.popleft()
                emit(step, future.result())
                runner.release(step.key)
                done += 1
                if progress:
                    progress(done, total, "merge")
        except BaseException:
            for _step, future in pending:
                future.cancel()
            raise
