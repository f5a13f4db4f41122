"""Reading and writing model files (merge_core.sources / writer): exact bytes, atomic saves, safe loading."""
import hashlib
import json
import os
import pickle
import struct
import warnings

import pytest
import safetensors
import safetensors.torch
import torch

from helpers import CONV_IN
from merge_core import MergeError, MergeInterrupted, Recipe, RunContext, SafetensorsFile, open_model
from merge_core.merge import SaveOptions, merge_to_file, open_inputs
from merge_core.synthetic import tiny_sd1, write_model
from merge_core.writer import SafetensorsWriter

INT_VIEW = {torch.float16: torch.int16, torch.bfloat16: torch.int16, torch.float32: torch.int32,
            torch.float64: torch.int64}


def sample_tensors():
    g = torch.Generator().manual_seed(0)
    special = torch.tensor([0.0, -0.0, float("inf"), float("-inf"), float("nan"), 1e-30, 65504.0])
    return {
        "f16": torch.cat([torch.randn(13, generator=g), special]).to(torch.float16).reshape(4, 5),
        "bf16": torch.cat([torch.randn(13, generator=g), special]).to(torch.bfloat16).reshape(2, 10),
        "f32": torch.cat([torch.randn(5, generator=g), special]).reshape(3, 4),
        "f64": torch.randn(3, generator=g, dtype=torch.float64),
        "i64": torch.tensor([[0, -1, 2**62, -(2**63)]], dtype=torch.int64),
        "bool": torch.tensor([True, False, True]),
        "scalar_f32": torch.tensor(3.25),
        "scalar_i64": torch.tensor(7, dtype=torch.int64),
        "empty": torch.zeros(0, 3, dtype=torch.float16),
    }


def bits(t):
    return t.view(INT_VIEW[t.dtype]) if t.dtype in INT_VIEW else t


def assert_bit_identical(got, want):
    assert got.dtype == want.dtype and got.shape == want.shape
    assert torch.equal(bits(got), bits(want))


def write(path, tensors, metadata=None, overwrite=False):
    entries = [(k, t.dtype, tuple(t.shape)) for k, t in tensors.items()]
    with SafetensorsWriter(path, entries, metadata, overwrite=overwrite) as w:
        for k, t in tensors.items():
            w.write(k, t)


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def leftovers(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".part"))


# Round trips ------------------------------------------------------------------------------------

def test_written_file_reads_back_bit_identically_with_the_safetensors_library(tmp_path):
    tensors = sample_tensors()
    write(tmp_path / "x.safetensors", tensors)
    back = safetensors.torch.load_file(tmp_path / "x.safetensors")
    assert back.keys() == tensors.keys()
    for k, t in tensors.items():
        assert_bit_identical(back[k], t)


def test_written_file_reads_back_bit_identically_with_safetensors_file(tmp_path):
    tensors = sample_tensors()
    write(tmp_path / "x.safetensors", tensors)
    with SafetensorsFile(tmp_path / "x.safetensors") as f:
        assert f.keys() == list(tensors)
        for k, t in tensors.items():
            assert f.dtype(k) == t.dtype and tuple(f.shape(k)) == tuple(t.shape)
            assert_bit_identical(f.get(k), t)


def test_files_from_the_safetensors_library_read_back_bit_identically(tmp_path):
    tensors = sample_tensors()
    safetensors.torch.save_file(tensors, tmp_path / "lib.safetensors", metadata={"format": "pt"})
    with open_model(tmp_path / "lib.safetensors") as f:
        assert set(f.keys()) == set(tensors)
        for k, t in tensors.items():
            assert_bit_identical(f.get(k), t)
        assert f.metadata() == {"format": "pt"}


def test_metadata_round_trips(tmp_path):
    meta = {"format": "pt", "sd_merge_recipe": json.dumps({"a": [1, 2], "b": "é ü"}), "empty": "", "ünï": "ç"}
    write(tmp_path / "m.safetensors", {"w": torch.ones(2)}, meta)
    with safetensors.safe_open(tmp_path / "m.safetensors", "pt") as f:
        assert f.metadata() == meta
    with SafetensorsFile(tmp_path / "m.safetensors") as f:
        assert f.metadata() == meta


def test_metadata_replaced_before_commit_keeps_the_tensors_in_place(tmp_path):
    tensors = sample_tensors()
    entries = [(k, t.dtype, tuple(t.shape)) for k, t in tensors.items()]
    with SafetensorsWriter(tmp_path / "x.safetensors", entries, {"hash": "0" * 64, "note": "a"}) as w:
        for k, t in tensors.items():
            w.write(k, t)
        with pytest.raises(RuntimeError, match="longer"):
            w.replace_metadata({"hash": "f" * 80, "note": "a"})
        w.replace_metadata({"hash": "f" * 64, "note": "a"})
    write(tmp_path / "direct.safetensors", tensors, {"hash": "f" * 64, "note": "a"})
    assert (tmp_path / "x.safetensors").read_bytes() == (tmp_path / "direct.safetensors").read_bytes()
    with SafetensorsWriter(tmp_path / "short.safetensors", entries, {"hash": "0" * 64}) as w:
        for k, t in tensors.items():
            w.write(k, t)
        w.replace_metadata({"hash": "short"})  # padded with spaces to the length written first
    with safetensors.safe_open(tmp_path / "short.safetensors", "pt") as f:
        assert f.metadata() == {"hash": "short"}
        for k, t in tensors.items():
            assert_bit_identical(f.get_tensor(k), t)
    write(tmp_path / "first.safetensors", tensors, {"hash": "0" * 64})
    assert (tmp_path / "short.safetensors").stat().st_size == (tmp_path / "first.safetensors").stat().st_size


def test_tensor_data_is_8_byte_aligned(tmp_path):
    write(tmp_path / "a.safetensors", {"w": torch.ones(3, dtype=torch.float16)}, {"k": "odd length!"})
    (n,) = struct.unpack("<Q", (tmp_path / "a.safetensors").read_bytes()[:8])
    assert n % 8 == 0


# Overwrite and atomicity ------------------------------------------------------------------------

def test_writer_refuses_an_existing_file_without_overwrite(tmp_path):
    target = tmp_path / "out.safetensors"
    target.write_bytes(b"precious")
    with pytest.raises(MergeError, match="exists"):
        write(target, {"w": torch.ones(2)})
    assert target.read_bytes() == b"precious"
    assert leftovers(tmp_path) == []


def test_writer_replaces_an_existing_file_with_overwrite(tmp_path):
    target = tmp_path / "out.safetensors"
    target.write_bytes(b"old")
    write(target, {"w": torch.ones(2)}, overwrite=True)
    assert torch.equal(safetensors.torch.load_file(target)["w"], torch.ones(2))
    assert leftovers(tmp_path) == []


def test_writer_refuses_a_missing_folder(tmp_path):
    with pytest.raises(MergeError, match="folder"):
        write(tmp_path / "nope" / "out.safetensors", {"w": torch.ones(2)})


def test_an_error_while_writing_leaves_no_file_and_no_part_file(tmp_path):
    target = tmp_path / "out.safetensors"
    tensors = {"a": torch.ones(2), "b": torch.zeros(3)}
    with pytest.raises(ZeroDivisionError):
        with SafetensorsWriter(target, [(k, t.dtype, tuple(t.shape)) for k, t in tensors.items()]) as w:
            w.write("a", tensors["a"])
            1 / 0
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def _files(tmp_path):
    a, b = tiny_sd1(1), tiny_sd1(2)
    write_model(a, tmp_path / "A.safetensors")
    write_model(b, tmp_path / "B.safetensors")
    return Recipe(model_a=str(tmp_path / "A.safetensors"), model_b=str(tmp_path / "B.safetensors"), alpha=0.3)


def _cancel_after(n):
    calls = [0]

    def cancel():
        calls[0] += 1
        return calls[0] > n
    return cancel


def test_merge_interrupted_half_way_leaves_neither_target_nor_part_file(tmp_path):
    recipe = _files(tmp_path)
    inputs = open_inputs(recipe)
    try:
        with pytest.raises(MergeInterrupted):
            merge_to_file(recipe, inputs, tmp_path / "out.safetensors", run=RunContext(cancel=_cancel_after(100)))
    finally:
        inputs.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["A.safetensors", "B.safetensors"]


def test_merge_interrupted_half_way_leaves_an_existing_target_intact(tmp_path):
    recipe = _files(tmp_path)
    target = tmp_path / "out.safetensors"
    target.write_bytes(b"the previous merge")
    inputs = open_inputs(recipe)
    try:
        with pytest.raises(MergeInterrupted):
            merge_to_file(recipe, inputs, target, SaveOptions(overwrite=True),
                          run=RunContext(cancel=_cancel_after(100)))
    finally:
        inputs.close()
    assert target.read_bytes() == b"the previous merge"
    assert leftovers(tmp_path) == []


def test_an_input_error_found_half_way_through_a_merge_leaves_no_file(tmp_path):
    a, b = tiny_sd1(1), tiny_sd1(2)
    late = "first_stage_model.decoder.conv_out.weight"  # one of the last keys written
    assert list(a).index(late) > len(a) // 2
    b[late] = b[late].clone()
    b[late].view(-1)[0] = float("nan")
    write_model(a, tmp_path / "A.safetensors")
    write_model(b, tmp_path / "B.safetensors")
    recipe = Recipe(model_a=str(tmp_path / "A.safetensors"), model_b=str(tmp_path / "B.safetensors"), alpha=0.3)
    inputs = open_inputs(recipe)
    try:
        with pytest.raises(MergeError, match="model_b"):
            merge_to_file(recipe, inputs, tmp_path / "out.safetensors")
    finally:
        inputs.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["A.safetensors", "B.safetensors"]


def test_merge_to_an_existing_file_without_overwrite_is_refused_and_leaves_it(tmp_path):
    recipe = _files(tmp_path)
    target = tmp_path / "out.safetensors"
    target.write_bytes(b"keep me")
    inputs = open_inputs(recipe)
    try:
        with pytest.raises(MergeError, match="exists"):
            merge_to_file(recipe, inputs, target)
    finally:
        inputs.close()
    assert target.read_bytes() == b"keep me" and leftovers(tmp_path) == []


def test_saved_files_have_mode_644_under_umask_022(tmp_path):
    recipe = _files(tmp_path)
    old = os.umask(0o022)
    try:
        write(tmp_path / "w.safetensors", {"w": torch.ones(2)})
        inputs = open_inputs(recipe)
        try:
            merge_to_file(recipe, inputs, tmp_path / "m.safetensors")
        finally:
            inputs.close()
    finally:
        os.umask(old)
    assert (tmp_path / "w.safetensors").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "m.safetensors").stat().st_mode & 0o777 == 0o644


def test_merge_leaves_its_input_files_unchanged(tmp_path):
    a, b, c = tiny_sd1(1), tiny_sd1(2), tiny_sd1(3)
    a[CONV_IN] = torch.randn(a[CONV_IN].shape[0], 9, 3, 3)  # inpainting A: only 4 channels are merged
    paths = {}
    for name, sd in (("A", a), ("B", b), ("C", c)):
        paths[name] = tmp_path / f"{name}.safetensors"
        write_model(sd, paths[name])
    torch.save(b, tmp_path / "B.ckpt")
    paths["Bckpt"] = tmp_path / "B.ckpt"
    before = {n: sha(p) for n, p in paths.items()}
    for model_b, calcmode, mode in (("B.safetensors", "normal", "add_difference"),
                                    ("B.ckpt", "self", "weight_sum"),
                                    ("B.safetensors", "tensor", "weight_sum"),
                                    ("B.ckpt", "trainDifference", "add_difference")):
        recipe = Recipe(model_a="A.safetensors", model_b=model_b, model_c="C.safetensors", mode=mode,
                        calcmode=calcmode, alpha=0.4, beta=0.3)
        inputs = open_inputs(recipe, base_dir=tmp_path)
        try:
            merge_to_file(recipe, inputs, tmp_path / "out.safetensors", SaveOptions(overwrite=True))
        finally:
            inputs.close()
    assert {n: sha(p) for n, p in paths.items()} == before


# Corrupt safetensors ----------------------------------------------------------------------------

def _raw(path, header, data=b""):
    blob = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(blob)) + blob + data)
    return path


def _open_all(path):
    """Open a model and touch every tensor and the metadata, as a merge would."""
    with open_model(path) as f:
        for k in f.keys():
            f.get(k)
        f.metadata()


F32_ONE = {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}


@pytest.mark.parametrize("name, make", [
    ("empty", lambda p: p.write_bytes(b"")),
    ("shorter than 8 bytes", lambda p: p.write_bytes(b"\x10\x00\x00")),
    ("header length beyond the file", lambda p: p.write_bytes(struct.pack("<Q", 10**6) + b"{}")),
    ("header length 2**64-1", lambda p: p.write_bytes(b"\xff" * 8 + b"{}")),
    ("non-JSON header", lambda p: _raw(p, b"this is not json")),
    ("non-UTF-8 header", lambda p: _raw(p, b"\xff\xfe{}")),
    ("header is a list", lambda p: _raw(p, [1, 2])),
    ("offsets beyond the end", lambda p: _raw(p, {"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}},
                                              b"\0" * 8)),
    ("offsets disagree with the shape", lambda p: _raw(p, {"w": {"dtype": "F32", "shape": [4],
                                                                 "data_offsets": [0, 8]}}, b"\0" * 16)),
    ("unknown dtype", lambda p: _raw(p, {"w": {"dtype": "F4", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4)),
    ("entry is not an object", lambda p: _raw(p, {"w": 5})),
    ("missing data_offsets", lambda p: _raw(p, {"w": {"dtype": "F32", "shape": [1]}}, b"\0" * 4)),
    ("negative start offset", lambda p: _raw(p, {"w": {"dtype": "F32", "shape": [1], "data_offsets": [-4, 0]}},
                                             b"\0" * 8)),
])
def test_corrupt_safetensors_is_refused_with_merge_error(tmp_path, name, make):
    path = tmp_path / "bad.safetensors"
    make(path)
    with pytest.raises(MergeError, match="bad.safetensors"):
        _open_all(path)


def test_safetensors_with_a_negative_dimension_is_refused(tmp_path):
    # shape [-1] with offsets [0, -4] passes the size check (-1 * 4 == -4) and hands out a wrong tensor
    path = _raw(tmp_path / "neg.safetensors", {"w": {"dtype": "F32", "shape": [-1], "data_offsets": [0, -4]}},
                b"\0" * 8)
    with pytest.raises(MergeError):
        _open_all(path)


def test_safetensors_with_two_negative_dimensions_is_refused(tmp_path):
    path = _raw(tmp_path / "neg2.safetensors", {"w": {"dtype": "F32", "shape": [-1, -1], "data_offsets": [0, 4]}},
                b"\0" * 4)
    with pytest.raises(MergeError):
        _open_all(path)


@pytest.mark.parametrize("meta", [5, [1, 2], "text"])
def test_safetensors_whose_metadata_is_not_an_object_is_refused(tmp_path, meta):
    path = _raw(tmp_path / "meta.safetensors", {"__metadata__": meta, "w": F32_ONE}, b"\0" * 4)
    with pytest.raises(MergeError):
        _open_all(path)


def test_safetensors_truncated_at_any_length_is_refused(tmp_path):
    write(tmp_path / "ok.safetensors", {"a": torch.arange(6.0), "b": torch.ones(3, dtype=torch.float16)}, {"x": "y"})
    data = (tmp_path / "ok.safetensors").read_bytes()
    path = tmp_path / "cut.safetensors"
    for n in range(len(data)):
        path.write_bytes(data[:n])
        with pytest.raises(MergeError):
            _open_all(path)


def test_missing_file_is_refused(tmp_path):
    with pytest.raises(MergeError, match="does not exist"):
        open_model(tmp_path / "nope.safetensors")
    with pytest.raises(MergeError, match="nope.safetensors"):
        SafetensorsFile(tmp_path / "nope.safetensors")


def test_missing_input_is_refused_by_a_merge(tmp_path):
    recipe = _files(tmp_path).replace(model_b=str(tmp_path / "gone.safetensors"))
    with pytest.raises(MergeError, match="gone.safetensors"):
        open_inputs(recipe)


@pytest.mark.parametrize("suffix", [".onnx", ".txt", ".gguf", ""])
def test_unknown_suffix_is_refused(tmp_path, suffix):
    path = tmp_path / f"model{suffix}"
    write(tmp_path / "real.safetensors", {"w": torch.ones(1)})
    path.write_bytes((tmp_path / "real.safetensors").read_bytes())
    with pytest.raises(MergeError, match="suffix"):
        open_model(path)


# .ckpt ------------------------------------------------------------------------------------------

def _sd():
    return {CONV_IN: torch.randn(2, 4, 3, 3), "model.diffusion_model.out.2.bias": torch.arange(4.0),
            "cond_stage_model.transformer.text_model.embeddings.position_ids": torch.arange(77).unsqueeze(0)}


@pytest.mark.parametrize("zipfile", [True, False])
def test_ckpt_of_a_plain_dict_of_tensors_loads(tmp_path, zipfile):
    sd = _sd()
    torch.save(sd, tmp_path / "m.ckpt", _use_new_zipfile_serialization=zipfile)
    with open_model(tmp_path / "m.ckpt") as f:
        assert set(f.keys()) == set(sd)
        for k in sd:
            assert_bit_identical(f.get(k), sd[k])


@pytest.mark.parametrize("zipfile", [True, False])
def test_ckpt_with_a_state_dict_entry_loads(tmp_path, zipfile):
    sd = _sd()
    torch.save({"state_dict": sd, "global_step": 470000, "epoch": 6}, tmp_path / "m.ckpt",
               _use_new_zipfile_serialization=zipfile)
    with open_model(tmp_path / "m.ckpt") as f:
        assert set(f.keys()) == set(sd)
        for k in sd:
            assert_bit_identical(f.get(k), sd[k])


class _Evil:
    command = None

    def __reduce__(self):
        return (os.system, (self.command,))


def _evil(tmp_path):
    evil = _Evil()
    evil.command = f"echo pwned > {tmp_path / 'pwned'}"
    return evil


@pytest.mark.parametrize("how", ["torch zip", "torch legacy", "plain pickle"])
def test_ckpt_that_would_run_code_is_refused_and_the_code_does_not_run(tmp_path, how):
    path = tmp_path / "evil.ckpt"
    payload = {"state_dict": _sd(), "callback": _evil(tmp_path)}
    if how == "plain pickle":
        path.write_bytes(pickle.dumps(payload))
    else:
        torch.save(payload, path, _use_new_zipfile_serialization=(how == "torch zip"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(MergeError, match="evil.ckpt"):
            open_model(path)
    assert not (tmp_path / "pwned").exists()


def test_the_evil_payload_really_runs_when_unpickled_unsafely(tmp_path):
    """Guards the test above: the payload is live, so its file not appearing means the loader refused it."""
    pickle.loads(pickle.dumps(_evil(tmp_path)))
    assert (tmp_path / "pwned").read_text().strip() == "pwned"


@pytest.mark.parametrize("zipfile", [True, False])
def test_truncated_or_empty_ckpt_is_refused_with_merge_error(tmp_path, zipfile):
    torch.save(_sd(), tmp_path / "ok.ckpt", _use_new_zipfile_serialization=zipfile)
    data = (tmp_path / "ok.ckpt").read_bytes()
    path = tmp_path / "cut.ckpt"
    failures = []
    for n in sorted({0, 1, 2, 7, 8, 64, len(data) // 3, len(data) // 2, len(data) - 1} | set(range(0, len(data), 37))):
        path.write_bytes(data[:n])
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                open_model(path)
        except MergeError:
            continue
        except Exception as e:  # noqa: BLE001 - the point is that nothing else escapes
            failures.append((n, type(e).__name__, str(e)[:60]))
        else:
            failures.append((n, "loaded", ""))
    assert failures == []


def test_ckpt_that_is_not_a_checkpoint_is_refused(tmp_path):
    (tmp_path / "junk.ckpt").write_bytes(b"PK\x03\x04 definitely not a zip")
    with pytest.raises(MergeError, match="junk.ckpt"):
        open_model(tmp_path / "junk.ckpt")


def test_ckpt_holding_a_list_is_refused(tmp_path):
    torch.save([torch.ones(2)], tmp_path / "list.ckpt")
    with pytest.raises(MergeError, match="state dict"):
        open_model(tmp_path / "list.ckpt")


def test_a_file_larger_than_the_free_space_is_refused_before_anything_is_written(tmp_path, monkeypatch):
    import collections
    import shutil

    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda folder: usage(10 ** 9, 10 ** 9 - 4096, 4096))
    with pytest.raises(MergeError, match=r"GiB needed, 0\.00 GiB free"):
        write(tmp_path / "out.safetensors", {"w": torch.ones(2048)})  # 8 KiB of data
    assert list(tmp_path.iterdir()) == []


def test_a_disk_filling_up_half_way_is_one_merge_error_and_leaves_no_part_file(tmp_path, monkeypatch):
    import errno

    tensors = {"a": torch.ones(2), "b": torch.zeros(3)}
    with pytest.raises(MergeError, match="No space left"):
        with SafetensorsWriter(tmp_path / "out.safetensors", [(k, t.dtype, tuple(t.shape)) for k, t in tensors.items()]) as w:
            w.write("a", tensors["a"])

            def full(data):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            monkeypatch.setattr(w._f, "write", full, raising=False)
            w.write("b", tensors["b"])
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf"), None])
@pytest.mark.parametrize("where", [0, 77, 300_000])
def test_finite_finds_any_single_nan_or_infinity_and_nothing_else(dtype, bad, where):
    from merge_core.steps import finite

    t = (torch.randn(300_001, generator=torch.Generator().manual_seed(where)) * 1000).to(dtype)
    if bad is not None:
        t[where] = bad
    assert finite(t) is (bad is None)
    assert finite(t.reshape(1, -1, 1)) is (bad is None) and finite(torch.empty(0, dtype=dtype))
    big = torch.full((1000,), torch.finfo(dtype).max, dtype=dtype)  # finite, but its sum is not in fp16
    assert finite(big)
