"""SPEC §14: similarity analysis."""
import pytest
import torch
from torch.nn.functional import cosine_similarity

from helpers import merge
from merge_core import DictSource, MergeError
from merge_core.analysis import asimilarity, cosine
from merge_core.families import FAMILIES

SD1 = FAMILIES["sd1"]
ATTN1 = [f"input_blocks.{n}" for n in (1, 2, 4, 5, 7, 8)] + ["middle_block"] + \
        [f"output_blocks.{n}" for n in range(3, 12)]


@pytest.mark.parametrize("mode", ["block", "element", "both"])
def test_identical_models_give_100_everywhere(sd1, mode):
    a = DictSource(sd1[0])
    r = cosine(a, a, SD1, mode)
    assert r.csv_rows() and all(score == 100.0 for *_, score in r.csv_rows())


def test_asimilarity_of_identical_models_is_100_for_the_16_sd1_blocks(sd1):
    a = DictSource(sd1[0])
    r = asimilarity(a, a, SD1)
    assert [b for b, _ in r.blocks] == ["IN01", "IN02", "IN04", "IN05", "IN07", "IN08", "M00"] + \
        [f"OUT{n:02}" for n in range(3, 12)]
    assert all(s == 100.0 for _, s in r.blocks)


def test_asimilarity_matches_a_direct_recomputation_of_supermergers_algorithm(sd1):
    a, b = sd1[0], sd1[1]
    torch.manual_seed(2244096)  # SuperMerger seeds the global generator once, then draws per block
    expect = []
    for block in ATTN1:
        p = f"model.diffusion_model.{block}.1.transformer_blocks.0.attn1."
        h, e = a[p + "to_q.weight"].shape
        x = torch.randn(e, h)
        outs = []
        for m in (a, b):
            q, k, v = (x @ m[p + f"to_{w}.weight"].T for w in "qkv")
            outs.append(torch.einsum("ik,jk->ik", torch.softmax(q @ k.T, dim=-1), v))
        expect.append(round(torch.mean(cosine_similarity(outs[0], outs[1], dim=1)).item() * 100, 3))
    got = [s for _, s in asimilarity(DictSource(a), DictSource(b), SD1).blocks]
    assert got == expect and any(s < 100 for s in got)


def test_asimilarity_works_on_sdxl(sdxl):
    r = asimilarity(DictSource(sdxl[0]), DictSource(sdxl[1]), FAMILIES["sdxl"])
    assert len(r.blocks) == 11 and all(-100 <= s <= 100 for _, s in r.blocks)  # IN4,5,7,8, MID, OUT0-5


def test_a_merge_on_one_block_drops_that_block_alone(sd1):
    a, b, _ = sd1
    weights = ",".join(["0"] * 18 + ["1"] + ["0"] * 7)  # OUT04 only (position 18 of BASE,IN00…,M00,OUT00…)
    merged = merge(a, b, weights_alpha=weights)
    r = cosine(DictSource(a), DictSource(merged), SD1, "block")
    scores = dict(r.blocks)
    assert scores["OUT04"] < 90
    assert all(s == 100.0 for blk, s in scores.items() if blk != "OUT04")


def test_block_methods_and_parts(sd1):
    a, b = DictSource(sd1[0]), DictSource(sd1[1])
    by_mean = dict(cosine(a, b, SD1, "block", "mean").blocks)
    by_min = dict(cosine(a, b, SD1, "block", "min").blocks)
    assert all(by_min[k] <= by_mean[k] for k in by_mean)
    attn2 = dict(cosine(a, b, SD1, "block", "attn2").blocks)
    assert set(attn2) == {"IN01", "IN02", "IN04", "IN05", "IN07", "IN08", "M00"} | \
        {f"OUT{n:02}" for n in range(3, 12)}
    unet_only = cosine(a, b, SD1, "element", parts=("unet",))
    assert all(key.startswith("model.diffusion_model.") for _, key, _ in unet_only.elements)
    with pytest.raises(MergeError, match="parts"):
        cosine(a, b, SD1, parts=("clip",))
