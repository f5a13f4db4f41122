"""The run context (merge_core/run.py): the threading policy with affinity and cgroup quota faked, ordered
side-by-side loops with cancel and progress, and results that do not depend on the thread count."""
import threading

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import merge
from merge_core import DictSource, Inputs, MergeError, MergeInterrupted, Recipe, merge_to_dict, run as runmod
from merge_core.cli import main
from merge_core.lora.bake import bake_to_file
from merge_core.lora.extract import ExtractOptions, extract_lora
from merge_core.lora.files import LoraFile
from merge_core.lora.merge import merge_loras
from merge_core.lora.synthetic import random_lora
from merge_core.lora.syntax import parse_list
from merge_core.run import RunContext, Threads, thread_share, usable_cores
from merge_core.sources import open_model
from merge_core.synthetic import tiny_sd1, write_model


@pytest.fixture(autouse=True)
def torch_threads():
    """Commands set torch's thread count for their process; give the test process its own back."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def cgroup(tmp_path, files: dict, own: str = "0::/\n"):
    for name, text in files.items():
        path = tmp_path / "fs" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (tmp_path / "self").write_text(own)
    return {"root": tmp_path / "fs", "self_cgroup": tmp_path / "self"}


# usable cores ------------------------------------------------------------------------------------

@pytest.mark.parametrize("files, own, expected", [
    ({}, "0::/\n", 8),  # no cgroup files: the affinity
    ({"cpu.max": "max 100000"}, "0::/\n", 8),  # v2 without a quota
    ({"cpu.max": "300000 100000"}, "0::/\n", 3),  # v2: 3 cores' worth
    ({"cpu.max": "150000 100000"}, "0::/\n", 1),  # 1.5 cores: whole cores only
    ({"cpu.max": "50000 100000"}, "0::/\n", 1),  # half a core: still one thread
    ({"box/cpu.max": "200000 100000", "cpu.max": "max 100000"}, "0::/box\n", 2),  # the process's own cgroup
    ({"cpu/cpu.cfs_quota_us": "400000", "cpu/cpu.cfs_period_us": "100000"}, "4:cpu,cpuacct:/\n", 4),  # v1
    ({"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}, "4:cpu,cpuacct:/\n", 8),  # v1, none
    ({"cpu,cpuacct/job/cpu.cfs_quota_us": "200000", "cpu,cpuacct/job/cpu.cfs_period_us": "100000"},
     "4:cpu,cpuacct:/job\n0::/\n", 2),
])
def test_usable_cores_are_the_affinity_cut_to_the_cgroup_quota(tmp_path, files, own, expected):
    assert usable_cores(affinity=range(8), **cgroup(tmp_path, files, own)) == expected


def test_a_quota_larger_than_the_affinity_leaves_the_affinity(tmp_path):
    assert usable_cores(affinity={0, 5}, **cgroup(tmp_path, {"cpu.max": "1600000 100000"})) == 2


def test_the_affinity_is_read_when_not_given(tmp_path, monkeypatch):
    monkeypatch.setattr(runmod.os, "sched_getaffinity", lambda pid: {1, 2, 3})
    assert usable_cores(**cgroup(tmp_path, {})) == 3


# the policy ----------------------------------------------------------------------------------------

def test_a_command_spreads_keys_over_single_threaded_workers():
    assert Threads.choose(owned=True, cores=4, env={}) == Threads(4, 4, 1, True)
    assert Threads.choose(2, owned=True, cores=4, env={}).workers == 2
    assert Threads.choose(16, owned=True, cores=4, env={}).workers == 4  # never more than the cores
    assert Threads.choose(owned=True, cores=4, env={runmod.ENV: "3"}).workers == 3
    assert Threads.choose(1, owned=True, cores=4, env={runmod.ENV: "3"}).workers == 1  # --threads first


@pytest.mark.parametrize("host_intra, cores, workers", [(2, 8, 4), (3, 8, 2), (8, 8, 1), (2, 2, 1), (1, 2, 2)])
def test_inside_a_host_workers_fit_beside_its_torch_threads(host_intra, cores, workers):
    t = Threads.choose(cores=cores, host_intra=host_intra, env={})
    assert (t.workers, t.intra, t.owned) == (workers, host_intra, False)


@settings(max_examples=300, deadline=None)
@given(cores=st.integers(1, 64), host_intra=st.integers(1, 96), owned=st.booleans(),
       requested=st.none() | st.integers(1, 200))
def test_workers_times_intra_op_threads_never_exceed_the_cores(cores, host_intra, owned, requested):
    t = Threads.choose(requested, owned=owned, cores=cores, host_intra=host_intra, env={})
    budget = min(cores, requested or cores)
    assert t.workers >= 1
    if owned:
        assert t.intra == 1 and t.workers == budget
    else:  # the host's torch threads are its own: kept, and no worker beyond them unless the budget has room
        assert t.intra == host_intra and t.workers * t.intra <= max(budget, host_intra)
    if owned or host_intra <= cores:
        assert t.workers * t.intra <= cores


@pytest.mark.parametrize("requested, env, where", [(0, {}, "--threads"), (None, {runmod.ENV: "two"}, runmod.ENV),
                                                    (None, {runmod.ENV: "-1"}, runmod.ENV)])
def test_a_bad_thread_count_is_named(requested, env, where):
    with pytest.raises(MergeError, match=f"^{where}: .* is not a whole number of threads"):
        Threads.choose(requested, owned=True, cores=2, env=env)


def test_only_a_command_sets_torchs_threads(monkeypatch):
    calls = []
    monkeypatch.setattr(runmod.torch, "set_num_threads", calls.append)
    monkeypatch.setattr(runmod.torch, "get_num_threads", lambda: 2)
    Threads.choose(cores=2, env={}).apply()
    assert calls == []
    Threads.choose(cores=2, owned=True, env={}).apply()
    assert calls == [1]


def test_the_command_line_bad_threads_option_is_one_clear_error(tmp_path, capsys):
    write_model(tiny_sd1(1), tmp_path / "a.safetensors")
    write_model(tiny_sd1(2), tmp_path / "b.safetensors")
    (tmp_path / "r.json").write_text(Recipe(model_a="a.safetensors", model_b="b.safetensors").to_json())
    assert main(["merge", str(tmp_path / "r.json"), "--out", str(tmp_path), "--threads", "0", "--no-history"]) == 2
    assert "error: --threads: '0' is not a whole number of threads" in capsys.readouterr().err


# the loops -------------------------------------------------------------------------------------

def context(workers: int, cores: int = 4, intra: int = 1, **kw) -> RunContext:
    return RunContext(threads=Threads(cores, workers, intra), **kw)


@pytest.mark.parametrize("workers", [1, 3])
def test_ordered_gives_every_result_in_order_and_tells_progress(workers):
    seen = []
    out = list(context(workers, progress=lambda *a: seen.append(a)).ordered(lambda x: x * x, range(10), "square"))
    assert out == [(i, i * i) for i in range(10)]
    assert seen == [(i, 10, "square") for i in range(11)]


def test_ordered_keeps_few_items_ahead_of_the_consumer():
    started, ahead = [], []
    lock = threading.Lock()

    def fn(x):
        with lock:
            started.append(x)
        return x

    for taken, (x, _) in enumerate(context(3).ordered(fn, range(40), "x"), 1):
        ahead.append(len(started) - taken)
    assert max(ahead) <= 2 * 3 + 1 - 1


@pytest.mark.parametrize("workers", [1, 2])
def test_cancel_stops_before_every_item_has_started(workers):
    calls = []
    run = context(workers, cancel=lambda: len(calls) >= 5)
    with pytest.raises(MergeInterrupted):
        for _ in run.ordered(calls.append, range(100), "x"):
            pass
    assert len(calls) < 5 + 2 * workers + 1


@pytest.mark.parametrize("threads, share", [(Threads(4, 4, 1), 1), (Threads(4, 1, 1), 1), (Threads(4, 2, 2), 2),
                                            (Threads(6, 3, 1), 1), (Threads(4, 1, 4), 4)])
def test_each_worker_gets_its_share_for_work_torch_does_not_spread(threads, share):
    shares = [s for _, s in RunContext(threads=threads).ordered(lambda _: thread_share(), range(8), "x")]
    assert set(shares) == {share}


def test_a_loop_of_fewer_items_than_workers_shares_the_threads_among_them():
    shares = [s for _, s in context(4).ordered(lambda _: thread_share(), range(2), "x")]
    assert shares == [2, 2]


# the same bits whatever the thread count ---------------------------------------------------------

@pytest.fixture(scope="module")
def models():
    return [tiny_sd1(seed, dtype=torch.float16) for seed in (1, 2, 3)]


@pytest.mark.parametrize("fields", [
    {"calcmode": "normal", "alpha": 0.3},
    {"calcmode": "cosineA", "alpha": 0.2},
    {"calcmode": "cosineB", "alpha": 0.2},
    {"calcmode": "smoothAdd", "mode": "add_difference", "alpha": 0.7},
    {"calcmode": "smoothAdd MT", "mode": "add_difference", "alpha": 0.7},
    {"calcmode": "trainDifference", "mode": "add_difference", "alpha": 0.5},
    {"calcmode": "tensor2", "alpha": 0.5, "beta": 0.3},
    {"calcmode": "plus random", "alpha": 0.5, "seed": 7},
])
def test_a_merge_gives_the_same_bits_with_any_number_of_workers(models, fields, monkeypatch):
    a, b, c = models
    monkeypatch.setattr("merge_core.calcmodes.smooth.PART", 64)  # tiny tensors still cut into parts
    recipe = Recipe(model_a="A", model_b="B", model_c="C", **fields)

    def merged(workers):
        inputs = Inputs(DictSource(a, "A"), DictSource(b, "B"), DictSource(c, "C"))
        return merge_to_dict(recipe, inputs, run=context(workers)).tensors

    one = merged(1)
    assert one.keys() == merge(a, b, c, **fields).keys()
    for workers in (2, 4):
        many = merged(workers)
        assert list(many) == list(one)
        assert all(torch.equal(one[k], many[k]) for k in one), workers


def test_the_command_line_writes_the_same_file_with_any_thread_count(tmp_path, monkeypatch):
    for name, seed in (("a", 1), ("b", 2)):
        write_model(tiny_sd1(seed, dtype=torch.float16), tmp_path / f"{name}.safetensors")
    (tmp_path / "r.json").write_text(Recipe(model_a="a.safetensors", model_b="b.safetensors", calcmode="cosineA",
                                            alpha=0.3).to_json())
    monkeypatch.setattr(runmod, "_machine_cores", lambda: 4)
    outs = []
    for threads in ("1", "3"):
        outs.append(tmp_path / f"out{threads}.safetensors")
        assert main(["merge", str(tmp_path / "r.json"), "--out", str(outs[-1]), "--threads", threads,
                     "--no-history"]) == 0
    monkeypatch.setenv(runmod.ENV, "2")
    outs.append(tmp_path / "env.safetensors")
    assert main(["merge", str(tmp_path / "r.json"), "--out", str(outs[-1]), "--no-history"]) == 0
    assert torch.get_num_threads() == 1  # the command's process: one torch thread per worker
    data = [p.read_bytes() for p in outs]
    assert data[0] == data[1] == data[2]


def test_baking_and_lora_merges_give_the_same_bits_with_any_number_of_workers(tmp_path, models):
    sd = models[0]
    write_model(sd, tmp_path / "m.safetensors")
    shapes = {k: tuple(v.shape) for k, v in sd.items()}
    loras = {"x": random_lora(shapes, "sd1", 4, 1), "y": random_lora(shapes, "sd1", 2, 2)}

    def entries():
        return [(LoraFile.from_dict(loras[e.name], e.name), e) for e in parse_list("x:0.7,y:-0.4")]

    baked, merged = [], []
    for workers in (1, 3):
        out = tmp_path / f"baked{workers}.safetensors"
        bake_to_file(tmp_path / "m.safetensors", entries(), out, run=context(workers))
        with open_model(out) as f:
            baked.append({k: f.get(k).clone() for k in f.keys()})
        merged.append(merge_loras(entries(), rank=3, run=context(workers)).tensors)
    for one, many in (baked, merged):
        assert list(one) == list(many) and all(torch.equal(one[k], many[k]) for k in one)
    assert not torch.equal(baked[0][next(k for k in baked[0] if "attn2.to_k" in k)],
                           sd[next(k for k in sd if "attn2.to_k" in k)])  # the LoRAs did change the model


@pytest.mark.parametrize("process_threads", [1, 2])
def test_worker_threads_factorise_as_the_calling_thread_does(process_threads):
    """torch sets MKL's thread count per thread: a worker must not fall back on MKL's default, whose other
    rounding gave other LoRA factors than the calling thread's."""
    torch.set_num_threads(process_threads)
    tuned, base = DictSource(tiny_sd1(2), "A"), DictSource(tiny_sd1(1), "B")
    here = extract_lora(tuned, base, ExtractOptions(rank=4), run=context(1)).tensors
    there = extract_lora(tuned, base, ExtractOptions(rank=4), run=context(3)).tensors
    assert list(here) == list(there) and all(torch.equal(here[k], there[k]) for k in here)
    assert torch.get_num_threads() == process_threads  # the process's setting is left as it was


@pytest.mark.parametrize("calcmode", ["cosineA", "cosineB"])
def test_cosine_gives_the_same_bits_whatever_the_callers_torch_thread_count(models, calcmode):
    # a host (ComfyUI) merges on its own intra-op thread count, a command on one per worker: BLAS's dot product
    # adds in a thread-count-dependent order, which moved 18 of 723 tiny SD1 keys before the similarities were
    # taken on one thread everywhere
    a, b, _ = models
    recipe = Recipe(model_a="A", model_b="B", calcmode=calcmode, alpha=0.4)
    before = torch.get_num_threads()
    outs = []
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            inputs = Inputs(DictSource(a, "A"), DictSource(b, "B"))
            outs.append(merge_to_dict(recipe, inputs, run=context(1)).tensors)
            assert torch.get_num_threads() == n  # the caller's setting is left as it was
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(outs[0][k], other[k]) for other in outs[1:] for k in outs[0])
