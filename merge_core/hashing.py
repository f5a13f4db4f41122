"""Model file hashes for metadata and history: sha256 of the file (what SuperMerger records) and the
web-ui's legacy 8-digit hash. Full hashes are cached by path, size and mtime, since hashing a 7 GB SDXL
file takes seconds and the same inputs are merged again and again."""
from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path

from .atomic import atomic_write

_LOCK = threading.Lock()


def cache_dir() -> Path:
    base = os.environ.get("SUPERMERGER_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "supermerger-comfy")
    return Path(base)


def legacy_hash(path) -> str:
    """The web-ui's old model hash: sha256 of 64 KiB at offset 1 MiB, first 8 hex digits."""
    with open(path, "rb") as f:
        f.seek(0x100000)
        return hashlib.sha256(f.read(0x10000)).hexdigest()[:8]


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        buf = bytearray(8 << 20)
        view = memoryview(buf)
        while n := f.readinto(buf):
            h.update(view[:n])
    return h.hexdigest()


def sha256(path) -> str:
    path = Path(path).resolve()
    st = path.stat()
    ident = f"{path}|{st.st_size}|{st.st_mtime_ns}"
    store = cache_dir() / "hashes.json"
    with _LOCK:
        try:
            cache = json.loads(store.read_text())
        except (OSError, ValueError):
            cache = {}
        if ident in cache:
            return cache[ident]
    digest = _sha256_file(path)
    with _LOCK:
        try:
            cache = json.loads(store.read_text())
        except (OSError, ValueError):
            cache = {}
        cache[ident] = digest
        try:
            store.parent.mkdir(parents=True, exist_ok=True)
            with atomic_write(store, overwrite=True) as f:
                f.write(json.dumps(cache).encode())
        except OSError:
            pass  # a cache that cannot be written only costs time
    return digest
