"""Saving never leaves the destination folder (SuperMergerSave's filename input)."""
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from merge_core import MergeError
from merge_core.naming import inside


@pytest.mark.parametrize("name, rel", [("merged", "merged.safetensors"), ("sub/merged.safetensors",
                                                                          "sub/merged.safetensors"),
                                       ("a\\b", "a/b.safetensors"), (" spaced name ", "spaced name.safetensors")])
def test_names_inside_the_folder(tmp_path, name, rel):
    assert inside(tmp_path, name) == (tmp_path / rel).resolve()


@pytest.mark.parametrize("name", ["../../x", "/tmp/x", "a/../../x", "C:/x", "c:x", "", "  ", "a//b", "./a", "..",
                                  "a/.."])
def test_names_that_leave_or_are_empty_are_refused(tmp_path, name):
    with pytest.raises(MergeError, match="filename"):
        inside(tmp_path, name)


def test_a_symlinked_subfolder_pointing_out_is_refused(tmp_path):
    base, outside = tmp_path / "ckpts", tmp_path / "elsewhere"
    base.mkdir()
    outside.mkdir()
    os.symlink(outside, base / "link")
    with pytest.raises(MergeError, match="outside"):
        inside(base, "link/x")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(list("ab./\\:~ ") + ["..", "%2e"]), max_size=12).map("".join))
def test_any_accepted_name_is_inside(tmp_path_factory, name):
    base = tmp_path_factory.getbasetemp() / "dest"
    base.mkdir(exist_ok=True)
    try:
        path = inside(base, name)
    except MergeError:
        return
    assert base.resolve() in path.parents and path.name.endswith(".safetensors")
