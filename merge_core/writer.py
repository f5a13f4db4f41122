"""Streaming, atomic safetensors writer.

The header (every key's dtype and shape) is known from the plan before any tensor exists, so tensors are
written one by one as they are computed and never held together. Bytes go to a temporary file beside the
target, which replaces the target only when the last byte is written and synced: an error or Ctrl-C leaves
no partial file, and an existing file is never touched without `overwrite`. Metadata that depends on the
data (hashes) is written as placeholders of its final length and filled in before the file is committed.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Optional

import torch

from .atomic import AtomicFile, refuse_existing
from .errors import MergeError
from .sources import DTYPE_NAMES


def tensor_bytes(t: torch.Tensor) -> memoryview:
    """The tensor's bytes without a copy (little-endian, C order), for any dtype numpy lacks (bf16, fp8)."""
    t = t.detach().contiguous()
    if t.numel() == 0:
        return memoryview(b"")
    return memoryview(t.reshape(-1).view(torch.uint8).numpy())


def free_bytes(folder) -> Optional[int]:
    """Bytes an unprivileged writer may still use in `folder`'s file system; None when it cannot be told."""
    try:
        return shutil.disk_usage(folder).free
    except OSError:  # no such folder: the writer says so itself
        return None


def header_bytes(entries: list, metadata: Optional[dict] = None) -> tuple:
    """(the file's header — 8-byte length and JSON —, the size of the data after it) for `entries`
    [(key, dtype, shape)] in write order."""
    header, offset = {}, 0
    for key, dtype, shape in entries:
        numel = 1
        for d in shape:
            numel *= int(d)
        size = numel * dtype.itemsize
        header[key] = {"dtype": DTYPE_NAMES[dtype], "shape": [int(d) for d in shape],
                       "data_offsets": [offset, offset + size]}
        offset += size
    if metadata:
        header = {"__metadata__": {str(k): str(v) for k, v in metadata.items()}, **header}
    blob = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    blob += b" " * (-len(blob) % 8)  # keep the data 8-byte aligned
    return len(blob).to_bytes(8, "little") + blob, offset


class SafetensorsWriter:
    def __init__(self, path, entries: list, metadata: Optional[dict] = None, overwrite: bool = False):
        """`entries`: (key, dtype, shape) in the order the tensors will be written."""
        self.path = Path(path)
        refuse_existing(self.path, overwrite)
        for key, dtype, _shape in entries:
            if dtype not in DTYPE_NAMES:
                raise MergeError(f"key {key}", f"dtype {dtype} cannot be stored in safetensors")
        self._expected = [(key, dtype, tuple(int(d) for d in shape)) for key, dtype, shape in entries]
        head, offset = header_bytes(entries, metadata)
        self._head_size = len(head)
        self._index = 0
        # A full disk should fail now, not half-way. Asking the file system beats reserving the file with
        # posix_fallocate, whose extents cost about a second per GB more to write into than plain appends.
        free = free_bytes(self.path.parent)
        if free is not None and free < len(head) + offset:
            raise MergeError(f"output {self.path}", f"cannot be written: {(len(head) + offset) / 2**30:.2f} GiB "
                                                    f"needed, {free / 2**30:.2f} GiB free")
        self._out = AtomicFile(self.path, overwrite)
        self._f = self._out.file
        try:
            self._write_all(head)
        except BaseException:
            self.abort()
            raise

    def write(self, key: str, tensor: torch.Tensor) -> None:
        exp_key, dtype, shape = self._expected[self._index]
        if key != exp_key or tensor.dtype != dtype or tuple(tensor.shape) != shape:
            raise RuntimeError(f"writer expected {exp_key} {dtype} {list(shape)}, got {key} {tensor.dtype} "
                               f"{list(tensor.shape)}")
        self.write_raw(key, tensor_bytes(tensor))

    def write_raw(self, key: str, data) -> None:
        if key != self._expected[self._index][0]:
            raise RuntimeError(f"writer expected {self._expected[self._index][0]}, got {key}")
        self._write_all(data)
        self._index += 1

    def _write_all(self, data) -> None:
        view = memoryview(data)
        try:
            while view.nbytes:  # raw writes may be partial
                view = view[self._f.write(view):]
        except OSError as e:  # the disk filled up meanwhile, or went away; the caller's abort removes the part
            raise MergeError(f"output {self.path}", f"cannot be written ({e.strerror})") from None

    def replace_metadata(self, metadata: Optional[dict]) -> None:
        """Rewrite the header with other metadata before `commit`, the tensors staying where they are. The new
        header may not be longer than the first (it is padded with spaces to the same length), so write
        values known only at the end — hashes of the data — first as placeholders of their final length."""
        head, _ = header_bytes(self._expected, metadata)
        if len(head) > self._head_size:
            raise RuntimeError(f"the new header ({len(head)} bytes) is longer than the one written "
                               f"({self._head_size} bytes)")
        blob = head[8:] + b" " * (self._head_size - len(head))  # JSON allows trailing spaces
        pos = self._f.tell()
        self._f.seek(0)
        self._write_all((self._head_size - 8).to_bytes(8, "little") + blob)
        self._f.seek(pos)

    def commit(self) -> Path:
        if self._index != len(self._expected):
            raise RuntimeError(f"writer got {self._index} of {len(self._expected)} tensors")
        return self._out.commit()

    def abort(self) -> None:
        self._out.abort()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.commit()
        else:
            self.abort()
        return False
