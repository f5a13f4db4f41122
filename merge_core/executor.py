"""Carries out a Plan, key by key, handing each output tensor to `emit` in plan order.

This is the only key loop of the engine. Inputs are read one key at a time from their sources and their
pages dropped once the key is done, so memory stays near one tensor per input whatever the model size.
Keys are computed side by side by the run context's workers (run.py: one intra-op thread each where the
process is ours) while the caller writes the previous results in order.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch

from .plan import Action, Plan
from .run import RunContext
from .steps import aligned, evaluate, operands
from .calcmodes.cosine import prepass_key


@dataclass
class Inputs:
    a: object
    b: object
    c: object = None
    vae: object = None

    def source(self, role: str):
        """The source of a role; without model C, A stands in (SPEC §0 step 10)."""
        src = getattr(self, role)
        return self.a if src is None and role == "c" else src

    def read(self, role: str, key: str):
        return self.source(role).get(key)

    def names(self) -> dict:
        """Each role's name for messages: `model_b (b.safetensors)`."""
        return {role: f"model_{role} ({self.source(role).name})" for role in ("a", "b", "c")
                if self.source(role) is not None}

    def release(self, key: str) -> None:
        """Drop a finished key's pages from every input that holds it."""
        for src in {id(s): s for s in (self.a, self.b, self.c)}.values():
            if src is not None and key in src:
                src.release(key)

    def close(self):
        for src in {id(s): s for s in (self.a, self.b, self.c, self.vae) if s is not None}.values():
            src.close()


def prepass_keys(plan: Plan, inputs: Inputs) -> list:
    """The keys a calcmode's pre-pass reads (SPEC §2.2): every kept or merged key it accepts that B holds."""
    return [s.key for s in plan.steps
            if s.action in (Action.KEEP, Action.MERGE) and prepass_key(s.key) and s.key in inputs.b]


def run_prepass(plan: Plan, inputs: Inputs, run: Optional[RunContext] = None, reader=None):
    """The calcmode's global statistics (cosineA/B's similarity range), or None if it has no pre-pass.
    `reader(role, key)` reads an input tensor (default: from `inputs`), B − C as in Stage 0."""
    if plan.calcmode.prepass is None or not plan.merged():
        return None
    read = reader or inputs.read
    c = inputs.source("c")
    prepass = plan.calcmode.prepass
    run = run or RunContext()

    def one(key):
        a, b, _, _ = aligned(*operands(plan, key, key in c, read)[:2], None)
        try:
            return prepass.per_key(key, a, b)
        finally:
            inputs.release(key)
    # A key's statistic is computed on one intra-op thread (its sums must not depend on the thread count), so
    # as many keys go side by side as the run has threads in all.
    return prepass.combine(list(run.ordered(one, prepass_keys(plan, inputs), "similarity pre-pass",
                                            workers=run.threads.total)))


def _compute(plan: Plan, inputs: Inputs, stats, device: torch.device, names: dict, step):
    if device.type == "cpu" or step.action is not Action.MERGE:
        return evaluate(plan, step, inputs.read, stats, names)

    def read(role, key):
        return inputs.read(role, key).to(device)
    return evaluate(plan, step, read, stats, names).cpu()


def iter_pairs(keys: list, read: Callable, release: Optional[Callable] = None, run: Optional[RunContext] = None,
               phase: str = "compare"):
    """(key, a, b) for each key, read one key at a time (channel-aligned, pages released after use): the
    loop behind the similarity analysis. One thread: the statistic is computed by the consumer, between reads
    (the cosine pre-pass, whose keys are independent, runs them side by side in `run_prepass` instead)."""
    for key in (run or RunContext()).each(keys, phase):
        a, b = read(key)
        a, b, _, _ = aligned(a, b, None)
        yield key, a, b
        if release is not None:
            release(key)


def run_plan(plan: Plan, inputs: Inputs, emit: Callable, *, run: Optional[RunContext] = None, device: str = "cpu",
             stats=None) -> None:
    """Compute every step of `plan` and call `emit(step, tensor)` in plan order.

    `stats`: the calcmode's pre-pass result, when the caller ran it over a larger plan than this one (a plan
    cut down to the keys that change must not take its similarity range over fewer keys).

    `run` tells progress (phase "merge"), stops on cancel between keys (MergeInterrupted) and says how many
    keys are computed side by side. Tensors handed to `emit` may view an input's memory: never modify them
    in place.
    """
    run = run or RunContext()
    if stats is None:
        stats = run_prepass(plan, inputs, run)
    device = torch.device(device)
    names = inputs.names()

    def compute(step):
        return _compute(plan, inputs, stats, device, names, step)

    for step, tensor in run.ordered(compute, plan.steps, "merge"):
        emit(step, tensor)
        inputs.release(step.key)
