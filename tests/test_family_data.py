"""The family descriptions (merge_core/data/blocks.json read by merge_core/families.py): each is consistent in
itself, agrees with SPEC Appendix B and §13.2, and is the only place that spells block tables."""
import os
import re
from pathlib import Path

import pytest

from merge_core import MergeError
from merge_core.families import CONTEXT_KEY, FAMILIES, SD2_CLIP_KEY, XL_CLIPG_KEY, detect, of_list_length
from merge_core.synthetic import sd1_layout, sdxl_layout

ROOT = Path(__file__).resolve().parents[1]
ALL = list(FAMILIES.values())


def expand(text: str) -> list:
    """SPEC's id listings: 'BASE, IN00…IN11, M00' or 'BASE,IN01..OUT11', a range A…B (or A..B) running over
    the digits after the longest prefix A and B share."""
    out = []
    for item in (i.strip() for i in text.split(",")):
        ends = re.split(r"…|\.\.", item)
        if len(ends) == 1:
            out.append(item)
            continue
        a, b = ends
        prefix = os.path.commonprefix([a, b])
        lo, hi = a[len(prefix):], b[len(prefix):]
        assert lo.isdigit() and hi.isdigit() and len(lo) == len(hi), item
        out += [f"{prefix}{n:0{len(lo)}}" for n in range(int(lo), int(hi) + 1)]
    return out


def test_expand_reads_spec_ranges():
    assert expand("BASE, IN00…IN02, M00") == ["BASE", "IN00", "IN01", "IN02", "M00"]
    assert expand("IN710…IN712,OUT03..OUT05") == ["IN710", "IN711", "IN712", "OUT03", "OUT04", "OUT05"]


# SPEC Appendix B and §13.2, as written there --------------------------------------------------------------

BLOCKID = "BASE, IN00…IN11, M00, OUT00…OUT11"
BLOCKIDXLL = "BASE, IN00…IN08, M00, OUT00…OUT08, VAE"
BLOCKIDXLLL = ("CLIPL, CLIPG, IN0, IN00, IN10, IN20, IN30, IN40, IN41, IN410, IN411, IN50, IN51, IN510, IN511, IN60, "
               "IN70, IN71, IN710…IN719, IN80, IN81, IN810…IN819, MID00, MID10, MID100…MID109, MID20, OUT00, OUT01, "
               "OUT010…OUT019, OUT10, OUT11, OUT110…OUT119, OUT20, OUT21, OUT210…OUT219, OUT22, OUT30, OUT31, OUT310, "
               "OUT311, OUT40, OUT41, OUT410, OUT411, OUT50, OUT51, OUT510, OUT511, OUT52, OUT60, OUT70, OUT80, OUT9, "
               "TIME, LABEL, VAE")
BLOCKIDFLUX = "CLIP, T5, IN, D00…D18, S00…S37, OUT"
SHORT = {17: "BASE,IN01,IN02,IN04,IN05,IN07,IN08,M00,OUT03..OUT11", 12: "BASE,IN04,IN05,IN07,IN08,M00,OUT00..OUT05",
         20: "BASE,IN00..IN08,M00,OUT00..OUT08"}


def test_block_tables_are_spec_appendix_b():
    assert len(expand(BLOCKID)) == 26 and len(expand(BLOCKIDXLLL)) == 110 and len(expand(BLOCKIDFLUX)) == 61
    for name in ("sd1", "sd2"):
        assert list(FAMILIES[name].blocks) == expand(BLOCKID) == list(FAMILIES[name].slots)
    xl = FAMILIES["sdxl"]
    assert list(xl.slots) == expand(BLOCKIDXLL) and list(xl.blocks) == expand(BLOCKIDXLL)[:-1]
    assert list(xl.extended) == expand(BLOCKIDXLLL)
    assert list(FAMILIES["flux"].blocks) == expand(BLOCKIDFLUX)


def test_lora_block_ids_and_short_lists_are_spec_13_2():
    for name in ("sd1", "sd2", "sdxl"):
        lora = FAMILIES[name].lora
        assert list(lora.blocks) == expand(BLOCKID)
        assert {n: list(ids) for n, ids in lora.short_lists.items()} == {n: expand(t) for n, t in SHORT.items()}
    assert list(FAMILIES["flux"].lora.blocks) == expand(BLOCKIDFLUX) and FAMILIES["flux"].lora.short_lists == {}


def test_sdxl_conversion_is_spec_4_3_oracle():
    # weighttoxl([1..25]) = [1..9, 13..22] (+ the unused VAE 0), BASE kept in front
    assert FAMILIES["sdxl"].from_sd_list(list(range(26))) == [0] + list(range(1, 10)) + list(range(13, 23))


# Each family consistent in itself ------------------------------------------------------------------------

@pytest.mark.parametrize("family", ALL, ids=lambda f: f.name)
def test_block_lists_are_unique_and_slots_extend_blocks(family):
    assert len(set(family.blocks)) == len(family.blocks)
    assert len(set(family.slots)) == len(family.slots)
    assert family.slots[:len(family.blocks)] == family.blocks
    if family.extended:
        assert len(set(family.extended)) == len(family.extended)


@pytest.mark.parametrize("family", ALL, ids=lambda f: f.name)
def test_each_weight_list_count_is_the_length_of_a_list_the_family_has(family):
    lengths = {len(family.blocks): "blocks"}
    if family.sd_list:
        lengths[len(family.sd_list)] = "sd_list"
    if family.extended:
        lengths[len(family.extended)] = "extended"
    counts = family.weight_counts
    assert counts[0] == len(family.blocks) and len(set(counts)) == len(counts)
    assert set(counts) == set(lengths)
    # the text naming the family's own list lists exactly its blocks
    own = dict(family.weight_lists)[len(family.blocks)]
    assert expand(own) == list(family.blocks)
    for count in counts:
        assert f"{count} (" in family.counts_text


@pytest.mark.parametrize("family", ALL, ids=lambda f: f.name)
def test_sd_list_conversion_indices_are_valid_and_keep_exactly_the_family_blocks(family):
    if family.sd_list is None:
        assert family.sd_keep is None
        return
    keep = family.sd_keep
    assert all(0 <= i < len(family.sd_list) for i in keep) and list(keep) == sorted(set(keep))
    assert [family.sd_list[i] for i in keep] == list(family.blocks)
    dropped = [n for i, n in enumerate(family.sd_list) if i not in keep]
    assert dropped and not set(dropped) & set(family.slots)


@pytest.mark.parametrize("family", ALL, ids=lambda f: f.name)
def test_dice_list_is_a_list_the_family_takes_and_names_its_blocks(family):
    assert len(family.dice_blocks) in family.weight_counts
    others = set(family.sd_list or ()) - set(family.slots)
    assert set(family.dice_blocks) <= set(family.slots) | others
    assert family.dice_blocks[0] == family.blocks[0]


@pytest.mark.parametrize("family", ALL, ids=lambda f: f.name)
def test_lora_short_lists_are_in_block_order_subsets_of_the_lora_blocks(family):
    lora = family.lora
    assert len(set(lora.blocks)) == len(lora.blocks)
    for count, ids in lora.short_lists.items():
        assert len(ids) == count != len(lora.blocks)
        positions = [lora.blocks.index(i) for i in ids]  # raises for an id the LoRA blocks lack
        assert positions == sorted(set(positions)) and ids[0] == lora.blocks[0]


@pytest.mark.parametrize("family", ALL, ids=lambda f: f.name)
def test_fixed_rule_blocks_are_blocks_of_the_family(family):
    for rule in family.key_rules:
        if rule.block is not None and "{" not in rule.block:
            assert rule.block in family.slots, rule
        if rule.fine is not None:
            assert rule.fine in family.extended, rule
    for rule in family.lora.module_rules + family.lora.key_rules:
        if "{" not in rule.block:
            assert rule.block in family.lora.blocks, rule


@pytest.mark.parametrize("family", ALL, ids=lambda f: f.name)
def test_every_text_encoder_module_prefix_has_its_lora_block_from_the_name(family):
    prefixes = [p for te in family.text_encoders for p in te.lora_prefixes]
    assert prefixes and len(prefixes) == len(set(prefixes))
    assert all(te.layout in ("clip", "open_clip", "t5") for te in family.text_encoders)
    for prefix in prefixes:
        assert family.lora.module_block(prefix + "text_model_encoder_layers_0_mlp_fc1") is not None, prefix
    assert family.lora_names in ("diffusers", "ldm")


def test_lora_kinds_group_only_sd1_and_sd2():
    kinds = {f.name: f.lora_kind for f in ALL}
    assert kinds["sd1"] == kinds["sd2"] and len(set(kinds.values())) == len(kinds) - 1


def test_families_are_told_apart_by_their_configs_and_context_widths():
    configs = [c for f in ALL for c in f.comfy_configs]
    assert len(configs) == len(set(configs)) and all(f.comfy_configs for f in ALL)
    widths = [f.context_dim for f in ALL if f.context_dim]
    assert len(widths) == len(set(widths))


def test_every_family_is_detected_from_its_own_marker_keys():
    assert detect({XL_CLIPG_KEY}).name == "sdxl" and detect({SD2_CLIP_KEY}).name == "sd2"
    assert detect(sd1_layout()).name == "sd1" and detect(sdxl_layout()).name == "sdxl"
    assert detect({"double_blocks.0.img_attn.qkv.weight"}).name == "flux"
    assert detect({CONTEXT_KEY}, context_dim=FAMILIES["sd2"].context_dim).name == "sd2"
    with pytest.raises(MergeError, match="SD3"):
        detect({"joint_blocks.0.x"})


def test_a_list_length_names_the_first_family_with_such_a_list():
    assert [of_list_length(n).name for n in (26, 20, 110, 61)] == ["sd1", "sdxl", "sdxl", "flux"]
    assert of_list_length(7) is None


# Only families.py spells block tables or detects a family ---------------------------------------------

_ID = r"(?:BASE|M00|(?:IN|OUT|D|S|MID)\d{2,3}|CLIPL|CLIPG|CLIP|T5)"
FORBIDDEN = {
    "a literal list of block ids": re.compile(rf"['\"]{_ID}['\"]\s*,\s*['\"]{_ID}['\"]"),
    "block ids joined in a text": re.compile(rf"\b{_ID},{_ID}\b"),
    "block ids made by an f-string": re.compile(r"\bf['\"](?:IN|OUT|D|S|MID)\{"),
    "a family detection key": re.compile("|".join(re.escape(k) for k in (XL_CLIPG_KEY, SD2_CLIP_KEY, CONTEXT_KEY,
                                                                         "joint_blocks"))),
}


def block_table_spellings(root: Path) -> list:
    """(file, line, what) for every place outside families.py that spells a block table or detection key."""
    files = sorted((root / "merge_core").rglob("*.py")) + sorted((root / "nodes").rglob("*.py")) + [root / "__init__.py"]
    found = []
    for path in files:
        if path == root / "merge_core" / "families.py" or not path.exists():
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for what, pattern in FORBIDDEN.items():
                if pattern.search(line):
                    found.append((str(path.relative_to(root)), n, what))
    return found


def test_the_guard_sees_the_spellings_it_forbids(tmp_path):
    (tmp_path / "merge_core").mkdir()
    (tmp_path / "merge_core" / "families.py").write_text('X = ("BASE", "IN00")\n')
    (tmp_path / "merge_core" / "dice.py").write_text(
        'A = ("BASE",) + tuple(f"IN{i:02}" for i in range(12))\nB = ("IN04", "IN05")\n'
        'C = "26 (BASE,IN00…IN11,M00,OUT00…OUT11)"\nD = ("OUT00",)\n')
    assert [(f, n) for f, n, _ in block_table_spellings(tmp_path)] == [
        ("merge_core/dice.py", 1), ("merge_core/dice.py", 2), ("merge_core/dice.py", 3)]


def test_no_module_but_families_spells_a_block_table_or_detects_a_family():
    assert block_table_spellings(ROOT) == []
