"""One run's context: progress, cancel and the threads it may use; made once per run (a command, a node's
execution) and handed to every long loop (executor and pre-pass, smoothAdd's filter, LoRA extraction and
bake, similarity analysis).

Threads. Merging is per-tensor maths over keys that need nothing from each other, mostly bound by memory.
torch's intra-op threads meet at a barrier after every operation, so when other processes hold the cores,
each operation waits until its slowest thread is scheduled again: an SD1.5 weight sum that takes 9 s took
70–100 s beside busy neighbours (issue 17), while a loop that never waits for another thread only slows by
its share of the cores. So where the process is ours (the command line) the work is spread over keys:
`workers` threads of one intra-op thread each. Inside ComfyUI torch's setting is the host's (it is process-
wide and the sampler uses it), so it is left alone and only as many key workers run as the cores leave room
for beside it. Either way workers × intra-op threads ≤ the cores this process may use (its CPU affinity and
cgroup quota, which `os.cpu_count()` ignores). On a GPU the same count of host threads feeds the device.
"""
from __future__ import annotations

import os
import threading
from collections import deque
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional

import torch

from .errors import MergeError, MergeInterrupted

ENV = "SUPERMERGER_THREADS"
CGROUP = Path("/sys/fs/cgroup")
SELF_CGROUP = Path("/proc/self/cgroup")


def _read(path: Path) -> Optional[str]:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _own_paths(self_cgroup: Path) -> tuple:
    """This process's cgroup path in the v2 hierarchy and in v1's cpu controller ("" when not listed)."""
    v2 = v1 = ""
    for line in (_read(self_cgroup) or "").splitlines():
        _id, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if controllers == "":
            v2 = path
        elif "cpu" in controllers.split(","):
            v1 = path
    return v2.strip("/"), v1.strip("/")


def _quota_v2(text: Optional[str]) -> Optional[float]:
    parts = (text or "").split()
    if len(parts) == 2 and parts[0] != "max":
        return int(parts[0]) / int(parts[1])
    return None


def cgroup_cpus(root: Path = CGROUP, self_cgroup: Path = SELF_CGROUP) -> Optional[float]:
    """The CPU quota of this process's cgroup in cores (v2 `cpu.max`, v1 `cpu.cfs_quota_us / cfs_period_us`),
    the smallest one found at its own cgroup and at the mount's root; None without a quota."""
    v2, v1 = _own_paths(self_cgroup)
    found = []
    for folder in {root / v2, root}:
        found.append(_quota_v2(_read(folder / "cpu.max")))
    for cpu in (root / "cpu", root / "cpu,cpuacct"):
        for folder in {cpu / v1, cpu}:
            quota, period = _read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us")
            if quota and period and int(quota) > 0 and int(period) > 0:
                found.append(int(quota) / int(period))
    found = [q for q in found if q is not None]
    return min(found) if found else None


def usable_cores(affinity: Optional[Iterable] = None, root: Path = CGROUP, self_cgroup: Path = SELF_CGROUP) -> int:
    """The cores this process may use: its CPU affinity, cut to its cgroup's quota (whole cores, at least
    one: a thread on a fractional core waits for the quota's next period)."""
    if affinity is None:
        affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    cores = max(1, len(set(affinity)))
    quota = cgroup_cpus(root, self_cgroup)
    return max(1, min(cores, int(quota))) if quota is not None else cores


@lru_cache(maxsize=1)
def _machine_cores() -> int:
    return usable_cores()


def requested_threads(value=None, env=os.environ) -> Optional[int]:
    """The thread count asked for: `value` (the command line's --threads) or else $SUPERMERGER_THREADS."""
    where = "--threads"
    if value is None:
        value, where = env.get(ENV) or None, ENV
    if value is None:
        return None
    try:
        n = int(str(value).strip())
    except ValueError:
        n = 0
    if n < 1:
        raise MergeError(where, f"'{value}' is not a whole number of threads (1 or more)")
    return n


@dataclass(frozen=True)
class Threads:
    """How a run's loops use the cores: `workers` items (keys, layers) side by side, each with `intra` torch
    intra-op threads; workers × intra ≤ cores unless the host alone runs more intra-op threads than that."""
    cores: int  # the cores this process may use
    workers: int
    intra: int
    owned: bool = False  # torch's thread setting is ours to set (a command), not a host's

    @classmethod
    def choose(cls, requested: Optional[int] = None, *, owned: bool = False, cores: Optional[int] = None,
               host_intra: Optional[int] = None, env=os.environ) -> "Threads":
        """The policy. `requested`: --threads (else $SUPERMERGER_THREADS, else every usable core), never more
        than the usable cores. `owned`: one intra-op thread per worker, set by `apply`; otherwise the host's
        torch setting (`host_intra`, default torch's current one) is kept and fits as many workers beside it
        as the cores allow."""
        cores = cores or _machine_cores()
        budget = min(requested_threads(requested, env) or cores, cores)
        if owned:
            return cls(cores, budget, 1, True)
        intra = max(1, host_intra or torch.get_num_threads())
        return cls(cores, max(1, budget // intra), intra, False)

    @property
    def total(self) -> int:
        return self.workers * self.intra

    def apply(self) -> "Threads":
        """Set torch's intra-op threads where the process is ours (never inside a host)."""
        if self.owned and torch.get_num_threads() != self.intra:
            torch.set_num_threads(self.intra)
        return self


@contextmanager
def one_intra_thread():
    """Run the enclosed torch operations on one intra-op thread, in this thread only. Some reductions (BLAS's
    dot product) add in an order that depends on the thread count, so a result that feeds a comparison (the
    cosine similarities) would differ between a command (one thread per worker) and a host (its own count),
    and one merge would give two results. torch keeps the count per calling thread, so this leaves the host's
    setting for every other thread as it is, and restores it here afterwards."""
    n = torch.get_num_threads()
    if n == 1:
        yield
        return
    try:
        torch.set_num_threads(1)
    except RuntimeError:  # a native thread pool takes no second setting: nothing can be scoped
        yield
        return
    try:
        yield
    finally:
        torch.set_num_threads(n)


_local = threading.local()


def thread_share() -> int:
    """Threads the calling worker may spend on work torch does not spread by itself (scipy's filters):
    its share of the run's threads, or every usable core outside a run's loop."""
    return getattr(_local, "share", None) or _machine_cores()


def _pool_thread() -> None:
    """Give a worker thread the intra-op count the process has. torch keeps MKL's count per thread and sets it
    in a new thread only on its first parallel loop, so a matrix product there would otherwise run on MKL's
    default (every core), with other rounding than the same product in the calling thread. The value set is
    the process's own, so a host's setting stays as it is."""
    intra = torch.get_num_threads()
    if getattr(_local, "intra", None) != intra:
        try:
            torch.set_num_threads(intra)
        except RuntimeError:  # torch's native thread pool takes no second setting; its threads share one count
            pass
        _local.intra = intra


def _shared(fn: Callable, share: int, pool: bool = False) -> Callable:
    def run(item):
        if pool:
            _pool_thread()
        _local.share = share
        try:
            return fn(item)
        finally:
            _local.share = None
    return run


@dataclass
class RunContext:
    """`progress(done, total, phase)` is told as items complete; `cancel()` returning True stops the run
    with MergeInterrupted between items; `threads` is the run's threading policy."""
    progress: Optional[Callable[[int, int, str], None]] = None
    cancel: Optional[Callable[[], bool]] = None
    threads: Threads = field(default_factory=Threads.choose)

    @classmethod
    def command(cls, threads: Optional[int] = None, progress=None, cancel=None) -> "RunContext":
        """The context of a command-line run: this process is ours, so torch's threads are set once here."""
        return cls(progress, cancel, Threads.choose(threads, owned=True).apply())

    def check(self) -> None:
        if self.cancel is not None and self.cancel():
            raise MergeInterrupted()

    def report(self, done: int, total: int, phase: str) -> None:
        if self.progress is not None:
            self.progress(done, total, phase)

    def each(self, items, phase: str) -> Iterator:
        """The items one by one in this thread: cancel checked before each, progress told after each."""
        items = list(items)
        self.report(0, len(items), phase)
        for done, item in enumerate(items, 1):
            self.check()
            yield item
            self.report(done, len(items), phase)

    def ordered(self, fn: Callable, items, phase: str, workers: Optional[int] = None) -> Iterator:
        """(item, fn(item)) for every item, in order, computed by up to `workers` (default: the policy's)
        threads side by side and at most 2·workers + 1 items ahead of the consumer, so memory stays a few
        items' worth. Cancel is checked before each item starts, progress told as each is taken."""
        items = list(items)
        workers = max(1, min(workers or self.threads.workers, len(items)))
        share = max(1, self.threads.total // workers)
        if workers == 1:
            call = _shared(fn, share)
            for item in self.each(items, phase):
                yield item, call(item)
            return
        call = _shared(fn, share, pool=True)
        self.report(0, len(items), phase)
        pending, started, done = deque(), 0, 0
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="run") as pool:
            try:
                while True:
                    while len(pending) < 2 * workers + 1 and started < len(items):
                        self.check()
                        pending.append((items[started], pool.submit(call, items[started])))
                        started += 1
                    if not pending:
                        break
                    item, future = pending.popleft()
                    yield item, future.result()
                    done += 1
                    self.report(done, len(items), phase)
            finally:
                for _item, future in pending:
                    future.cancel()
