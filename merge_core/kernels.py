"""Maths over large tensors in cache-sized pieces: elementwise chunks, blocks of whole rows, and one-thread slices
where torch's threading would change the bits.

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


SERIAL = 1 << 14  # elements: under ATen's parallel grain (32768), so a call on this many runs on one thread
ALIGN = 64  # elements: a multiple of every SIMD loop step, so slices starting here meet no scalar tail


def serial(fn: Callable, t: torch.Tensor) -> torch.Tensor:
    """`fn(t)` for an elementwise `fn`, the same bits whatever torch's thread count: `t ** 0.3` takes SIMD
    lanes for most elements and a scalar loop for each thread's last few, and the two round differently, so
    which elements are a tail depends on how the threads split the tensor. Run in slices that each stay on one
    thread and start at a multiple of ALIGN, every element but the tensor's own tail takes the SIMD lanes, as
    on one thread."""
    n = t.numel()
    if n <= SERIAL:
        return fn(t)
    flat = t.reshape(-1)
    result = None
    for i in range(0, n, SERIAL):
        part = fn(flat[i:i + SERIAL])
        if result is None:
            result = torch.empty(n, dtype=part.dtype, device=part.device)
        result[i:i + part.numel()].copy_(part)
    return result.reshape(t.shape)


def by_rows(fn: Callable, *tensors: torch.Tensor, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """`fn(*tensors)` for a `fn` that works row by row on the last axis (cosine similarity along it, then
    elementwise maths), run on blocks of whole rows so that its temporaries stay cache-sized. All tensors share
    one shape; `fn` must not modify its arguments (they are views of the callers' tensors). `out`, when given,
    receives the result (cast to its dtype) block by block, each block after `fn` has read it: it may be one of
    `tensors`.

    Every block has at least two rows, since torch reduces each row of a many-row tensor the same way whatever
    the row count, but a single row as a whole tensor, in another order. Blocks start at multiples of ALIGN rows,
    so a per-row quantity `fn` passes through `serial` gets the bits it has in the whole tensor.
    """
    shape = tensors[0].shape
    n = tensors[0].numel()
    width = shape[-1] if len(shape) else 1
    rows = n // width if width else 0
    step = max(ALIGN, CHUNK // max(width, 1) // ALIGN * ALIGN)
    if len(shape) < 2 or rows < 2 * step:
        return fn(*tensors)
    flat = [t.reshape(rows, width) for t in tensors]
    starts = list(range(0, rows, step))
    if rows - starts[-1] < 2:  # a last block of one row joins the one before it
        starts.pop()
    into = out if out is not None and out.is_contiguous() else None
    result = into.view(rows, width) if into is not None else None
    for i, start in enumerate(starts):
        stop = starts[i + 1] if i + 1 < len(starts) else rows
        block = fn(*(f[start:stop] for f in flat))
        if result is None:
            result = torch.empty((rows, width), dtype=block.dtype, device=block.device)
        result[start:stop].copy_(block)
    return into if into is not None else result.reshape(shape)
