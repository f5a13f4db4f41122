"""What each XYZ axis type does to a cell (SPEC §9.3), written out by hand; checked on the engine's cells
(tests/test_xyz.py) and on the recipes the plan node outputs in a real ComfyUI (tests/host/test_xyz_host.py).

Every case runs on a base merge with elemental `IN01::0.1`, Include/Exclude exclude VAE + element attn2, α 0.5,
β 0.25, weight sum; the merge ID case looks up an earlier merge with α 0.9 and calcmode cosineB."""

BASE_FIELDS = {"include_exclude": {"mode": "exclude", "blocks": ["VAE"], "elements": ["attn2"]},
               "elemental": "IN01::0.1"}

SEMANTICS = {  # type: (values text, other axis, {recipe field / seed / prompt: expected in the first cell})
    "alpha": ("0.3", None, {"alpha": 0.3, "mode": "weight_sum"}),
    "beta": ("0.4", None, {"beta": 0.4, "mode": "sum_twice"}),
    "alpha and beta": ("0.2 0.6", None, {"alpha": 0.2, "beta": 0.6, "mode": "sum_twice"}),
    "seed": ("42", None, {"seed_gen": 42, "alpha": 0.5}),
    "mbw alpha": ("FLAT_25", None, {"weights_alpha": "FLAT_25", "alpha": 0.0}),
    "mbw beta": ("ALL_B", None, {"weights_beta": "ALL_B", "beta": 1.0, "mode": "sum_twice"}),
    "mbw alpha and beta": ("FLAT_75\nALL_A", None, {"weights_alpha": "FLAT_75", "weights_beta": "ALL_A",
                                                     "mode": "sum_twice"}),
    "model_A": ("mini_c.safetensors", None, {"model_a": "mini_c.safetensors"}),
    "model_B": ("mini_c.safetensors", None, {"model_b": "mini_c.safetensors"}),
    "model_C": ("mini_b.safetensors", None, {"model_c": "mini_b.safetensors"}),
    "pinpoint blocks": ("IN02", ("alpha", "1"), {"alpha": 0.5, "weights_alpha": ",".join(
        ["0.5"] * 3 + ["1.0"] + ["0.5"] * 22)}),
    "include blocks": ("IN01 M00", None, {"include_exclude": {"mode": "include", "blocks": ["IN01", "M00"],
                                                               "elements": ["attn2"]}}),
    "exclude blocks": ("OUT03", None, {"include_exclude": {"mode": "exclude", "blocks": ["OUT03"],
                                                            "elements": ["attn2"]}}),
    "add include": ("IN01", None, {"include_exclude": {"mode": "include", "blocks": ["VAE", "IN01"],
                                                        "elements": ["attn2"]}}),
    "add exclude": ("IN01", None, {"include_exclude": {"mode": "exclude", "blocks": ["VAE", "IN01"],
                                                        "elements": ["attn2"]}}),
    "elemental": ("OUT03::0.9", None, {"elemental": "OUT03::0.9"}),
    "add elemental": ("OUT03::0.9", None, {"elemental": "IN01::0.1,OUT03::0.9"}),
    "pinpoint element": ("OUT03:attn2", ("alpha", "0.8"), {"elemental": "IN01::0.1,OUT03:attn2:0.8", "alpha": 0.5}),
    "pinpoint element ext": ("OUT03:attn2", ("alpha", "0.8"), {"elemental": "IN01::0.1,OUT03:attn2:0.8",
                                                               "elemental_extended": True}),
    "effective elemental checker": ("IN04:", ("alpha", "1,0.2"), {"elemental": "IN01::0.1", "alpha": 0.5}),
    "adjust": ("1,2,0,0,0,0,0,0", None, {"adjust": "1,2,0,0,0,0,0,0"}),
    "pinpoint adjust": ("COL2", ("alpha", "3"), {"adjust": "0.0,0.0,0.0,0.0,0.0,0.0,3.0,0.0"}),
    "calcmode": ("cosineA", None, {"calcmode": "cosineA"}),
    "prompt": ("a dog\na fox", None, {"prompt": "a dog"}),
    "prompt2": ("a dog,\nrunning\n\na fox", None, {"prompt": "a dog,\nrunning"}),
    "prompt3": ("a dog\n\na fox", None, {"prompt": "a dog\n\na fox"}),
    "random": ("2", None, {"dice": {"mode": "R"}}),
    "merge ID": ("-1", None, {"alpha": 0.9, "calcmode": "cosineB"}),
}


def check_cells(axis_type: str, cells: list, base_seed: int, base_prompt: str) -> None:
    """`cells`: (recipe dict, seed, prompt) of each cell of a plot whose X axis is `axis_type`."""
    text, _other, expected = SEMANTICS[axis_type]
    data, seed, prompt = cells[0]
    for name, value in expected.items():
        if name == "seed_gen":
            assert seed == value
        elif name == "prompt":
            assert prompt == value
        elif name == "dice":
            assert data["dice"]["mode"] == "R" and 0 <= data["seed"] < 4294967294
        else:
            assert data[name] == value, (axis_type, name, data[name])
    if axis_type not in ("seed", "prompt", "prompt2", "prompt3"):
        assert seed == base_seed and prompt == base_prompt  # the base generation settings
    if axis_type == "random":
        assert cells[0][0]["seed"] != cells[1][0]["seed"]
    if axis_type == "effective elemental checker":  # baseline first: the base elemental, no element added
        assert len(cells) == 2 and cells[1][0]["elemental"] == "IN01::0.1,IN04::1.0"
