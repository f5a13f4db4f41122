"""SPEC §14: similarity analysis, held against SuperMerger's own procedures written out as oracles."""
import re
from statistics import mean

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers import merge
from merge_core import DictSource, MergeError
from merge_core.analysis import asimilarity, cosine, probe_inputs
from merge_core.families import FAMILIES
from merge_core.synthetic import tiny_sd1

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


# --- SuperMerger's own procedures, written out from SPEC §14 as oracles ------------------------------------

def _supermerger_asimilarity(a: dict, b: dict, blocks: list) -> list:
    """SuperMerger's asimilarity: the global generator seeded once, then per block an input and six real
    nn.Linear probes (their initialisation draws from the same generator), loaded with the weights."""
    with torch.random.fork_rng():
        torch.manual_seed(2244096)
        scores, inputs = [], []
        for block in blocks:
            p = f"model.diffusion_model.{block}.1.transformer_blocks.0.attn1."
            h, e = a[p + "to_q.weight"].shape
            x = torch.randn([e, h])
            inputs.append(x)
            outs = []
            for m in (a, b):
                probes = []
                for w in "qkv":
                    probe = nn.Linear(h, e, bias=False)
                    probe.load_state_dict({"weight": m[p + f"to_{w}.weight"]})
                    probes.append(probe)
                q, k, v = (probe(x) for probe in probes)
                with torch.no_grad():
                    outs.append(torch.einsum("ik, jk -> ik", F.softmax(torch.einsum("ij, kj -> ik", q, k), dim=-1), v))
            scores.append(round(torch.mean(torch.cosine_similarity(outs[0], outs[1])).item() * 100, 3))
    return scores, inputs


def _sd_block(key: str) -> str:
    if "time_embed" in key:
        return "IN00"
    if ".out." in key:
        return "OUT11"
    for pattern, name in ((r"\.input_blocks\.(\d+)\.", "IN"), (r"\.middle_block\.(\d+)\.", "M"),
                          (r"\.output_blocks\.(\d+)\.", "OUT")):
        m = re.search(pattern, key)
        if m:
            return "M00" if name == "M" else f"{name}{int(m.group(1)):02}"
    return "BASE"


def _xl_block(key: str) -> tuple:
    """SPEC §3.3's blockfromkey: (fine, coarse), or None for "Not Merge"."""
    if "weight" not in key and "bias" not in key:
        return None
    for needle, fine, coarse in (("label_emb", "LABEL", "IN00"), ("time_embed", "TIME", "IN00"),
                                 ("conditioner.embedders.0.", "CLIPL", "BASE"),
                                 ("conditioner.embedders.1.", "CLIPG", "BASE"), ("first_stage_model", "VAE", "BASE"),
                                 ("model.diffusion_model.out.", "OUT9", "OUT08")):
        if needle in key:
            return fine, coarse
    kind = next(k for k in ("input", "mid", "output") if k in key).upper().replace("PUT", "")
    digits = "".join(re.findall(r"\d", key))
    nums = digits[0] + "0" if kind == "MID" else digits[:2]
    tb = re.search(r"transformer_blocks\.(\d+)\.", key)
    return kind + nums + (tb.group(1) if tb else ""), {"IN": "IN0" + nums[0], "OUT": "OUT0" + nums[0],
                                                       "MID": "M00"}[kind]


SD_IDS = ["BASE"] + [f"IN{i:02}" for i in range(12)] + ["M00"] + [f"OUT{i:02}" for i in range(12)]
XL_IDS = ["BASE"] + [f"IN{i:02}" for i in range(9)] + ["M00"] + [f"OUT{i:02}" for i in range(9)] + ["VAE"]


def _supermerger_cosine(a: dict, b: dict, xl: bool, mode: str, calc: str) -> list:
    """SuperMerger's calccosinedif with its default Include (text encoder and U-Net, no VAE). Two
    differences, both in our compatibility notes: float64 instead of float32 (float32 scores two identical
    embeddings 100.47), and SDXL's attn2 values looked up by the block they belong to (SuperMerger stores
    them under the fine name and looks them up by the coarse one, so SDXL never gets an attn2 row)."""
    ids = XL_IDS if xl else SD_IDS
    rows, per_block, attn2, values = [], {bl: [] for bl in ids}, {}, []
    for key in a:
        if "model_ema" in key or "model" not in key or "first_stage_model" in key or key not in b:
            continue
        if a[key].size() != b[key].size():
            continue
        fine, coarse = (_xl_block(key) or (None, None)) if xl else (_sd_block(key),) * 2
        if fine is None:
            continue  # "Not Merge"
        sim = round(F.cosine_similarity(a[key].view(-1).double().unsqueeze(0),
                                        b[key].view(-1).double().unsqueeze(0)).item() * 100, 3)
        rows.append((fine, key, sim))
        per_block[coarse].append(sim)
        if "attn2.to_out.0.weight" in key:
            attn2[coarse] = sim
    for bl in ids:
        if not per_block[bl]:
            continue
        val = mean(per_block[bl]) if calc == "mean" else min(per_block[bl]) if calc == "min" else attn2.get(bl)
        if val is not None:
            values.append((bl, "", round(val, 3)))
        if mode != "element":
            rows.insert(0, (bl, "", round(mean(per_block[bl]), 3)))
    return values if mode == "block" else rows


def test_asimilarity_probe_inputs_are_the_draws_of_supermergers_global_generator():
    shapes = [(8, 8), (16, 16), (24, 24)]  # three blocks of different widths: the probes' draws differ
    with torch.random.fork_rng():
        torch.manual_seed(2244096)
        expect = []
        for h, e in shapes:
            expect.append(torch.randn([e, h]))
            for _ in range(6):
                nn.Linear(h, e, bias=False)
    before = torch.random.get_rng_state()
    got = list(probe_inputs(shapes))
    assert torch.equal(torch.random.get_rng_state(), before)  # the global generator is left alone
    assert len(got) == 3 and all(torch.equal(g, x) for g, x in zip(got, expect))
    with torch.random.fork_rng():  # the inputs alone (the old computation) differ from the second block on
        torch.manual_seed(2244096)
        inputs_alone = [torch.randn([e, h]) for h, e in shapes]
    assert torch.equal(inputs_alone[0], got[0]) and not torch.equal(inputs_alone[1], got[1])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_asimilarity_equals_supermergers_with_its_probes_draws(dtype):
    a, b = tiny_sd1(1, dtype), tiny_sd1(2, dtype)
    expect, _ = _supermerger_asimilarity(a, b, ATTN1)
    got = asimilarity(DictSource(a), DictSource(b), SD1)
    assert [s for _, s in got.blocks] == expect
    assert len(set(expect)) == 16 and all(s < 100 for s in expect)


def test_asimilarity_of_three_blocks_the_supermerger_way(sd1):
    a, b = ({k: v for k, v in m.items() if not any(f".{blk}.1." in k for blk in ATTN1[3:])} for m in sd1[:2])
    expect, inputs = _supermerger_asimilarity(a, b, ATTN1[:3])
    got = asimilarity(DictSource(a), DictSource(b), SD1)
    assert [blk for blk, _ in got.blocks] == ["IN01", "IN02", "IN04"]
    assert [s for _, s in got.blocks] == expect
    shapes = [tuple(a[f"model.diffusion_model.{blk}.1.transformer_blocks.0.attn1.to_q.weight"].shape)
              for blk in ATTN1[:3]]
    assert len(set(shapes)) == 2 and all(torch.equal(x, y) for x, y in zip(probe_inputs(shapes), inputs))


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
@pytest.mark.parametrize("mode", ["block", "element", "both"])
@pytest.mark.parametrize("method", ["mean", "min", "attn2"])
def test_cosine_listing_equals_supermergers(family, mode, method, sd1, sdxl):
    a, b = (sd1 if family == "sd1" else sdxl)[:2]
    expect = _supermerger_cosine(a, b, family == "sdxl", mode, method)
    got = cosine(DictSource(a), DictSource(b), FAMILIES[family], mode, method, ("te", "unet")).csv_rows()
    assert got == expect


def test_both_lists_block_means_whatever_the_method(sd1):
    a, b, parts = DictSource(sd1[0]), DictSource(sd1[1]), ("te", "unet")  # SuperMerger's default Include
    means = cosine(a, b, SD1, "block", "mean", parts).blocks
    by_min = cosine(a, b, SD1, "block", "min", parts).blocks
    both = cosine(a, b, SD1, "both", "min", parts)
    assert means != by_min and both.blocks == means and both.method == "mean"
    rows = both.csv_rows()
    assert rows[:26] == [(blk, "", s) for blk, s in reversed(means)]  # SuperMerger inserts each at the top
    assert rows[0][0] == "OUT11" and rows[25][0] == "BASE" and all(key for _, key, _ in rows[26:])


def test_sd1_position_ids_take_part_in_base(sd1):
    a, b = sd1[0], sd1[1]
    key = "cond_stage_model.transformer.text_model.embeddings.position_ids"
    assert a[key].dtype == torch.int64
    r = cosine(DictSource(a), DictSource(b), SD1, "both", parts=("te", "unet"))
    assert ("BASE", key, 100.0) in r.elements
    base = [s for blk, k, s in r.elements if blk == "BASE"]
    without = [s for blk, k, s in r.elements if blk == "BASE" and k != key]
    assert dict(r.blocks)["BASE"] == round(mean(base), 3) != round(mean(without), 3)


def test_sdxl_lists_fine_names_and_leaves_out_keys_supermerger_never_merges(sdxl):
    a, b = sdxl[0], sdxl[1]
    never = [k for k in a if "model" in k and "weight" not in k and "bias" not in k]
    assert {k.rsplit(".", 1)[1] for k in never} >= {"logit_scale", "text_projection", "positional_embedding",
                                                    "position_ids"}
    r = cosine(DictSource(a), DictSource(b), FAMILIES["sdxl"], "element")
    listed = {k: blk for blk, k, _ in r.elements}
    assert not set(never) & set(listed)
    D = "model.diffusion_model."
    for key, label in ((D + "input_blocks.1.0.in_layers.0.weight", "IN10"),
                       (D + "input_blocks.4.1.transformer_blocks.0.attn1.to_q.weight", "IN410"),
                       (D + "middle_block.1.transformer_blocks.3.attn2.to_k.weight", "MID103"),
                       (D + "time_embed.0.weight", "TIME"), (D + "label_emb.0.0.bias", "LABEL"),
                       (D + "out.2.weight", "OUT9"), ("conditioner.embedders.0.transformer.text_model.encoder."
                                                      "layers.0.mlp.fc1.weight", "CLIPL"),
                       ("conditioner.embedders.1.model.ln_final.weight", "CLIPG"),
                       ("first_stage_model.decoder.conv_in.weight", "VAE")):
        assert listed[key] == label, key
    blocks = [blk for blk, _ in cosine(DictSource(a), DictSource(b), FAMILIES["sdxl"], "block").blocks]
    assert blocks == XL_IDS  # block rows keep the 20 coarse blocks (and VAE)
