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

from .errors import MergeInterrupted
from .plan import Action, Plan
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


def run_prepass(plan: Plan, inputs: Inputs, cancel: Optional[Callable] = None,
                progress: Optional[Callable] = None, reader=None):
    """The calcmode's global statistics (cosineA/B's similarity range), or None if it has no pre-pass.
    `reader(role, key)` reads an input tensor (default: from `inputs`), B − C as in Stage 0."""
    if plan.calcmode.prepass is None or not plan.merged():
        return None
    read = reader or inputs.read
    c = inputs.source("c")
    pairs = iter_pairs(prepass_keys(plan, inputs), lambda k: operands(plan, k, k in c, read)[:2],
                       inputs.release, cancel, progress, "similarity pre-pass")
    return plan.calcmode.prepass(pairs)


def _compute(plan: Plan, inputs: Inputs, stats, device: torch.device, names: dict, step):
    if device.type == "cpu" or step.action is not Action.MERGE:
        return evaluate(plan, step, inputs.read, stats, names)

    def read(role, key):
        return inputs.read(role, key).to(device)
    return evaluate(plan, step, read, stats, names).cpu()


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
        a, b, _, _ = aligned(a, b, None)
        yield key, a, b
        if release is not None:
            release(key)
    if progress:
        progress(len(keys), len(keys), phase)


def run_plan(plan: Plan, inputs: Inputs, emit: Callable, *, progress: Optional[Callable] = None,
             cancel: Optional[Callable] = None, workers: Optional[int] = None, device: str = "cpu",
             stats=None) -> None:
    """Compute every step of `plan` and call `emit(step, tensor)` in plan order.

    `stats`: the calcmode's pre-pass result, when the caller ran it over a larger plan than this one (a plan
    cut down to the keys that change must not take its similarity range over fewer keys).

    `progress(done, total, phase)` is called as keys complete; `cancel()` returning True stops the run
    with MergeInterrupted between keys. Tensors handed to `emit` may view an input's memory: never
    modify them in place.
    """
    total = len(plan.steps)
    if stats is None:
        stats = run_prepass(plan, inputs, cancel, progress)
    device = torch.device(device)
    names = inputs.names()
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
                    pending.append((step, pool.submit(_compute, plan, inputs, stats, device, names, step)))
                if not pending:
                    break
                step, future = pending.popleft()
                emit(step, future.result())
                inputs.release(step.key)
                done += 1
                if progress:
                    progress(done, total, "merge")
        except BaseException:
            for _step, future in pending:
                future.cancel()
            raise
