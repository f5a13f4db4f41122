"""Where input tensors come from: memory-mapped safetensors, safely loaded .ckpt files, or a dict.

The safetensors reader maps the file copy-on-write and hands out tensors that view the mapping, so a key
that stays model A's is never copied, and `release(key)` drops its pages once it has been written, which
keeps resident memory near one tensor per input instead of whole models. Nothing ever writes to a mapping.
"""
from __future__ import annotations

import json
import mmap
import os
import pickle
import struct
from pathlib import Path
from typing import Optional

import torch

from .errors import MergeError

SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}
DTYPE_NAMES = {v: k for k, v in SAFETENSORS_DTYPES.items()}
SAFETENSORS_SUFFIXES = (".safetensors", ".sft")
CKPT_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin")
_PAGE = mmap.PAGESIZE


class DictSource:
    """An in-memory state dict (tests, ComfyUI models). Tensors are handed out as they are."""

    def __init__(self, tensors: dict, name: str = "state dict", metadata: Optional[dict] = None):
        self._t = tensors
        self.name = name
        self._metadata = metadata or {}
        self.path = None

    def keys(self):
        return list(self._t.keys())

    def __contains__(self, key):
        return key in self._t

    def shape(self, key):
        return tuple(self._t[key].shape)

    def dtype(self, key):
        return self._t[key].dtype

    def get(self, key):
        return self._t[key]

    def release(self, key):
        pass

    def metadata(self) -> dict:
        return dict(self._metadata)

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class SafetensorsFile(DictSource):
    """A .safetensors file read through a private memory map (no tensor is copied until used)."""

    def __init__(self, path, name: Optional[str] = None):
        self.path = Path(path)
        self.name = name or self.path.name
        where = f"file {self.path}"
        try:
            self._file = open(self.path, "rb")
        except OSError as e:
            raise MergeError(where, f"cannot be opened ({e.strerror})") from None
        try:
            size = os.fstat(self._file.fileno()).st_size
            head = self._file.read(8)
            if len(head) < 8:
                raise MergeError(where, "is not a safetensors file (shorter than its 8-byte header length)")
            (n,) = struct.unpack("<Q", head)
            if n > min(size - 8, 100 << 20):
                raise MergeError(where, "is not a safetensors file, or is truncated (bad header length)")
            try:
                header = json.loads(self._file.read(n))
            except (ValueError, UnicodeDecodeError):
                raise MergeError(where, "is not a safetensors file, or is corrupt (header is not JSON)") from None
            if not isinstance(header, dict):
                raise MergeError(where, "is corrupt (header is not a JSON object)")
            meta = header.pop("__metadata__", None) or {}
            if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
                raise MergeError(where, "is corrupt (its __metadata__ is not a table of texts)")
            self._metadata = meta
            self._entries = {}
            base = 8 + n
            for key, info in header.items():
                try:
                    dtype = SAFETENSORS_DTYPES[info["dtype"]]
                    shape, offsets = info["shape"], info["data_offsets"]
                    if not (isinstance(shape, list) and isinstance(offsets, list) and len(offsets) == 2
                            and all(type(x) is int and x >= 0 for x in shape + offsets)):
                        raise ValueError
                    shape = tuple(shape)
                    start, end = offsets
                except (KeyError, TypeError, ValueError):
                    raise MergeError(where, f"is corrupt or uses an unsupported dtype at key {key}") from None
                numel = 1
                for d in shape:
                    numel *= d
                if end - start != numel * dtype.itemsize or start < 0 or base + end > size:
                    raise MergeError(where, f"is truncated or corrupt (tensor {key} lies outside the file)")
                self._entries[key] = (dtype, shape, base + start, base + end)
            self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_COPY) if size else None
        except BaseException:
            self._file.close()
            raise

    def keys(self):
        return list(self._entries)

    def __contains__(self, key):
        return key in self._entries

    def shape(self, key):
        return self._entries[key][1]

    def dtype(self, key):
        return self._entries[key][0]

    def span(self, key) -> tuple:
        """Where the key's bytes lie in the file: (start, end) offsets."""
        return self._entries[key][2:]

    def get(self, key):
        dtype, shape, start, end = self._entries[key]
        if end == start:
            return torch.empty(shape, dtype=dtype)
        raw = torch.frombuffer(self._map, dtype=torch.uint8, count=end - start, offset=start)
        return raw.view(dtype).reshape(shape)

    def release(self, key):
        """Drop the pages of `key` from memory; they are read again from the file if touched later."""
        _dtype, _shape, start, end = self._entries[key]
        lo = (start // _PAGE) * _PAGE
        hi = ((end + _PAGE - 1) // _PAGE) * _PAGE
        if hi > lo and self._map is not None and hasattr(mmap, "MADV_DONTNEED"):
            try:
                self._map.madvise(mmap.MADV_DONTNEED, lo, min(hi, len(self._map)) - lo)
            except (OSError, ValueError):
                pass

    def close(self):
        if getattr(self, "_map", None) is not None:
            try:
                self._map.close()
            except BufferError:
                pass  # tensors still view the map; it closes when they are gone
        self._file.close()


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0] if lines else type(e).__name__


def load_ckpt(path: Path) -> dict:
    """A pickled checkpoint, loaded with torch's weights-only unpickler: no code in the file runs."""
    where = f"file {path}"
    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as e:
            if "mmap" not in str(e):
                raise
            obj = torch.load(path, map_location="cpu", weights_only=True)  # legacy, non-zip format
    except pickle.UnpicklingError as e:
        if "Weights only load failed" not in str(e):  # not a pickle at all, or a damaged one
            raise MergeError(where, f"is not a readable checkpoint ({_first_line(e)})") from None
        raise MergeError(where, "holds pickled objects other than tensors, so it was not loaded (loading it "
                                "could run code from the file). Convert it to .safetensors with a tool you "
                                f"trust. Detail: {_first_line(e)}") from None
    except Exception as e:  # noqa: BLE001 - whatever a damaged file makes torch.load raise, say so plainly
        raise MergeError(where, f"is not a readable checkpoint ({_first_line(e)})") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise MergeError(where, "does not hold a state dict")
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def open_model(path, name: Optional[str] = None):
    """Open a model file by its suffix. The caller closes it (or uses it as a context manager)."""
    path = Path(path)
    if not path.is_file():
        raise MergeError(f"file {path}", "does not exist")
    suffix = path.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        return SafetensorsFile(path, name)
    if suffix in CKPT_SUFFIXES:
        src = DictSource(load_ckpt(path), name or path.name)
        src.path = path
        return src
    raise MergeError(f"file {path}", f"has an unknown suffix '{path.suffix}'; expected .safetensors or .ckpt")


def metadata_json(path) -> str:
    """A model file's metadata as indented JSON, with values that are JSON themselves (recipes, ss_* tables)
    unpacked, as SuperMerger's metadata page shows them."""
    import json

    with open_model(path) as src:
        meta = src.metadata()
    pretty = {}
    for k, v in meta.items():
        try:
            pretty[k] = json.loads(v) if isinstance(v, str) and v[:1] in "{[" else v
        except ValueError:
            pretty[k] = v
    return json.dumps(pretty, indent=2, ensure_ascii=False)
