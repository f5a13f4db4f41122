"""Elementwise maths over large tensors in cache-sized chunks.

`torch.lerp(a.float(), b.float(), w)` on a 50 M-element tensor allocates three fresh 200 MB buffers, and
the kernel spends most of its time having the OS zero new pages. Running the same elementwise op chunk by
chunk through a few reused buffers gives identical values (each element sees the same arithmetic) at a
fraction of the memory traffic.
"""
from __future__ import annotations

import threading
from typing import Callable, Optional

import torch

CHUNK = 1 << 18  # elements: 1 MiB of f32 per buffer, comfortably inside L2
_local = threading.local()


def _buffers(count: int, dtype: torch.dtype, device: torch.device) -> list:
    pool = getattr(_local, "pool", None)
    if pool is None:
        pool = _local.pool = {}
    bufs = pool.setdefault((dtype, device), [])
    while len(bufs) < count:
        bufs.append(torch.empty(CHUNK, dtype=dtype, device=device))
    return bufs[:count]


def elementwise(fn: Callable, *tensors: torch.Tensor, work: torch.dtype, out: torch.dtype,
                whole: Optional[Callable] = None) -> torch.Tensor:
    """`fn(*(t.to(work) for t in tensors)).to(out)`, chunk by chunk. All tensors share one shape.

    `fn` receives work-dtype chunks it may overwrite (write results with `out=` into the first one). `whole`, when
    given, computes the same element by element on whole tensors without modifying them; it is used when no
    dtype changes (float32 models, as ComfyUI holds them): a few large ops then beat thousands of chunk-sized
    ones, which stall when other processes compete for the cores (each small parallel op waits for a thread
    that is not running).
    """
    shape = tensors[0].shape
    n = tensors[0].numel()
    if whole is not None and out == work and all(t.dtype == work for t in tensors):
        return whole(*tensors)
    if n <= CHUNK:
        return fn(*(t.to(work, copy=True) for t in tensors)).to(out)
    flat = [t.reshape(-1) for t in tensors]
    device = tensors[0].device
    result = torch.empty(n, dtype=out, device=device)
    bufs = _buffers(len(tensors), work, device)
    for i in range(0, n, CHUNK):
        m = min(CHUNK, n - i)
        chunks = [buf[:m].copy_(f[i:i + m]) for buf, f in zip(bufs, flat)]
        result[i:i + m].copy_(fn(*chunks))
    return result.reshape(shape)
