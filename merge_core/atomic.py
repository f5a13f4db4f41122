"""Every file the pack writes appears whole or not at all, and never replaces a user's file unasked.

Bytes go to a temporary file beside the target (same folder, so the final rename is atomic), which replaces
the target only once it is complete and synced; an error or Ctrl-C removes it. `refuse_existing` is the one
no-overwrite rule, also checked before long work so that nothing is computed for a file that will be refused.
"""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .errors import MergeError


def refuse_existing(path, overwrite: bool, where: str = "") -> None:
    path = Path(path)
    if path.exists() and not overwrite:
        raise MergeError(where or f"output {path}", "already exists; choose another name or allow overwrite")


class AtomicFile:
    """A file being written to `path`: `file` takes the bytes; `commit()` puts it in place, `abort()` drops it."""

    def __init__(self, path, overwrite: bool = False, where: str = ""):
        self.path = Path(path)
        refuse_existing(self.path, overwrite, where)
        if not self.path.parent.is_dir():
            raise MergeError(where or f"output {self.path}", "its folder does not exist")
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".part", dir=self.path.parent)
        self.tmp = Path(tmp)
        self.file = os.fdopen(fd, "wb", buffering=0)

    def commit(self) -> Path:
        os.fsync(self.file.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(self.file.fileno(), 0o666 & ~umask)  # mkstemp made it private; what we save is not
        self.file.close()
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        if not self.file.closed:
            self.file.close()
        self.tmp.unlink(missing_ok=True)


@contextmanager
def atomic_write(path, overwrite: bool = False, text: bool = False, where: str = ""):
    """`with atomic_write(path) as f:` — the file appears when the block ends without an error."""
    target = AtomicFile(path, overwrite, where)
    try:
        if text:
            import io

            f = io.TextIOWrapper(target.file, encoding="utf-8", newline="", write_through=True)
            yield f
            f.flush()
            f.detach()  # the bytes file stays open for commit
        else:
            yield target.file
    except BaseException:
        target.abort()
        raise
    target.commit()
