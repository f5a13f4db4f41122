"""The one atomic-write and no-overwrite rule (merge_core/atomic.py)."""
import os

import pytest

from merge_core import MergeError
from merge_core.atomic import atomic_write, refuse_existing
from merge_core.csvfile import write_csv


def test_a_file_appears_only_when_complete_and_an_error_leaves_nothing(tmp_path):
    target = tmp_path / "t.bin"
    with pytest.raises(RuntimeError):
        with atomic_write(target) as f:
            f.write(b"half")
            assert not target.exists()
            raise RuntimeError("stop")
    assert os.listdir(tmp_path) == []
    with atomic_write(target) as f:
        f.write(b"whole")
    assert target.read_bytes() == b"whole" and os.listdir(tmp_path) == ["t.bin"]


def test_an_existing_file_is_kept_unless_overwrite(tmp_path):
    target = tmp_path / "t.csv"
    target.write_text("mine")
    with pytest.raises(MergeError, match="already exists"):
        refuse_existing(target, overwrite=False)
    with pytest.raises(MergeError, match="already exists"):
        write_csv(target, [("a", 1)], overwrite=False)
    assert target.read_text() == "mine"
    write_csv(target, [("a", 1), ("é", 2.5)], overwrite=True)
    assert target.read_bytes().decode("utf-8") == "a,1\r\né,2.5\r\n"  # csv writes CRLF rows
    assert sorted(os.listdir(tmp_path)) == ["t.csv"]
