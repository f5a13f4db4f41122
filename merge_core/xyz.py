"""XYZ plot (SPEC §9): axis texts → the cells of one or more grids, each cell a Recipe plus the generation seed
and prompt it is sampled with. Pure data: no tensors, no ComfyUI, no images.

SuperMerger's order is kept everywhere: cells run `for z: for y: for x:` (x fastest), an axis value is applied
z first, then y, then x (a later axis wins), and the pinpoint axes read the value of the alpha (or beta) axis
they are paired with. Where SuperMerger has a defect (SPEC §17 #8) the evident intent is implemented; each such
choice is listed in docs/compatibility.md.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable, Optional

from .adjust import NAMES as ADJUST_NAMES, parse_adjust
from .families import FAMILIES
from .elemental import expand_blocks
from .errors import MergeError
from .recipe import Recipe
from .weights import expand_preset

SD_BLOCKS = FAMILIES["sd1"].blocks  # BASE, IN00…IN11, M00, OUT00…OUT11: the 26-value list
AXIS_TYPES = ("none", "alpha", "beta", "alpha and beta", "seed", "mbw alpha", "mbw beta", "mbw alpha and beta",
              "model_A", "model_B", "model_C", "pinpoint blocks", "include blocks", "exclude blocks", "add include",
              "add exclude", "elemental", "add elemental", "pinpoint element", "pinpoint element ext",
              "effective elemental checker", "adjust", "pinpoint adjust", "calcmode", "prompt", "prompt2", "prompt3",
              "random", "merge ID")
LABEL_NAMES = {"effective elemental checker": "effective"}  # SuperMerger's internal id is what its labels show
EXCLUDE_CHOICES = SD_BLOCKS + ("Adjust", "VAE")
ADJUST_ALL = ("IN", "OUT", "OUT2", "CONT", "COL1", "COL2", "COL3")  # SuperMerger's ALL leaves out BRI
COLOUR_NAMES = {"COL1": "cyan-red", "COL2": "magenta-green", "COL3": "yellow-blue"}
GENERATION_TYPES = ("seed", "prompt", "prompt2", "prompt3")
PINPOINTS = ("pinpoint blocks", "pinpoint element", "pinpoint element ext", "effective elemental checker",
             "pinpoint adjust")
AXES = ("x", "y", "z")


@dataclass(frozen=True)
class Axis:
    type: str
    values: tuple  # parsed values (None for a disabled axis)
    texts: tuple  # what the labels show, one per value

    @property
    def used(self) -> bool:
        return self.type != "none"

    @property
    def label_type(self) -> str:
        return LABEL_NAMES.get(self.type, self.type)


@dataclass
class Cell:
    part: int
    index: tuple  # (x, y, z) positions
    recipe: Recipe
    seed: int
    prompt: str


@dataclass
class Grid:
    """One `|` part of a plot: its axes and its cells (z, y, x order; x fastest)."""
    part: int
    axes: tuple  # (x, y, z) Axis
    cells: list = field(default_factory=list)
    notes: list = field(default_factory=list)

    def shape(self) -> tuple:
        return tuple(len(a.values) for a in self.axes)


# ---------------------------------------------------------------------------------------------- parsing


def split_parts(texts: tuple) -> list:
    """SPEC §9.6: `|` splits a values field into separate plots. The first segments of every field make the
    first plot; each further segment of a field makes one more plot with the other fields at their first
    segment (SuperMerger queues it as a reservation; here all run in the same prompt)."""
    segments = [t.split("|") for t in texts]
    parts = [tuple(s[0] for s in segments)]
    for i, segs in enumerate(segments):
        for seg in segs[1:]:
            part = list(parts[0])
            part[i] = seg
            parts.append(tuple(part))
    return parts


def _lines(text: str) -> list:
    return [line.strip() for line in text.splitlines() if line.strip()]


def _blank_line_blocks(text: str) -> list:
    blocks, current = [], []
    for line in text.splitlines() + [""]:
        if line.strip():
            current.append(line.strip())
        elif current:
            blocks.append("\n".join(current))
            current = []
    return blocks


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def _number(text: str, where: str, what: str = "a number") -> float:
    try:
        return float(text)
    except ValueError:
        raise MergeError(where, f"'{text}' is not {what}") from None


def expand_all(axis_type: str, text: str, blocks: tuple = SD_BLOCKS) -> str:
    """`ALL` (SPEC §9.2): every block for pinpoint blocks, every Adjust slot but BRI for pinpoint adjust.
    SuperMerger's pinpoint ALL holds a `|` that nothing splits (§17 #8); its evident intent, one grid of the
    blocks up to the middle and one of the output blocks, is what the `|` gives here."""
    if text.strip() != "ALL":
        return text
    if axis_type == "pinpoint blocks":
        middle = next((i for i, b in enumerate(blocks) if b.startswith(("M", "MID"))), len(blocks) - 1)
        return ",".join(blocks[:middle + 1]) + "|" + ",".join(blocks[middle + 1:])
    if axis_type == "pinpoint adjust":
        return ",".join(ADJUST_ALL)
    return text


def parse_values(axis_type: str, text: str, where: str, others: tuple = (),
                 rng: Optional[random.Random] = None, blocks: tuple = SD_BLOCKS) -> Axis:
    """One axis: its values and label texts (SPEC §9.2). `others`: the types of the other axes. An empty result
    is returned as an axis without values (the caller decides whether that is an error)."""
    if axis_type not in AXIS_TYPES:
        raise MergeError(where.replace("values", "type"), f"unknown axis type '{axis_type}'")
    draw = (rng or random).randrange
    if axis_type == "none":
        return Axis("none", (None,), ("",))
    text = text or ""
    if axis_type == "prompt3":
        items = [text.strip()] if text.strip() else []
    elif axis_type in ("prompt2", "elemental", "add elemental"):
        items = _blank_line_blocks(text)
    elif axis_type in ("prompt", "mbw alpha", "mbw beta", "adjust", "mbw alpha and beta"):
        items = _lines(text)
    elif axis_type == "random":
        items = [t.strip() for t in text.split(",") if t.strip()]
        if len(items) != 1 or not items[0].isdigit() or int(items[0]) < 1:
            raise MergeError(where, f"a random axis takes the number of dice rolls (e.g. 4), not '{text.strip()}'")
        seeds = tuple(draw(4294967294) for _ in range(int(items[0])))
        return Axis(axis_type, seeds, tuple(str(s) for s in seeds))
    else:
        if axis_type in ("pinpoint element", "pinpoint element ext"):
            text = text.replace("\n", ",")
        if axis_type == "effective elemental checker":
            text = "," + text.replace("\n", ",")  # the baseline (no element) comes first
        items = [t.strip() for t in text.split(",")]
        if axis_type != "effective elemental checker":
            items = [t for t in items if t]
        if axis_type in ("alpha", "beta"):
            items = [t for t in items if _is_number(t)]  # SuperMerger drops what is not a number
    if axis_type == "alpha" and "effective elemental checker" in others:
        items = items[:1]  # the checker compares elements at one α
    if not items:
        return Axis(axis_type, (), ())
    return _typed(axis_type, items, where, draw, blocks)


def _typed(axis_type: str, items: list, where: str, draw, blocks: tuple) -> Axis:
    texts = list(items)
    if axis_type in ("alpha", "beta"):
        values = [float(t) for t in items]
    elif axis_type == "alpha and beta":
        values = []
        for t in items:
            parts = t.split()
            if len(parts) > 2:
                raise MergeError(where, f"'{t}' is not 'alpha beta' or one number for both")
            a = _number(parts[0], where)
            values.append((a, _number(parts[1], where) if len(parts) == 2 else a))
    elif axis_type == "seed":
        values = []
        for i, t in enumerate(items):
            n = int(_number(t, where, "a whole number")) if t.lstrip("-").isdigit() else None
            if n is None or n < -1:
                raise MergeError(where, f"'{t}' is not a seed (a whole number ≥ 0, or -1 for a random one)")
            if n == -1:
                n = draw(4294967294)  # drawn once here, so every row uses the same seeds
                texts[i] = str(n)
            values.append(n)
    elif axis_type == "mbw alpha and beta":
        if len(items) % 2:
            raise MergeError(where, f"mbw alpha and beta takes lines in pairs (alpha, then beta); got {len(items)} "
                                    "lines")
        values = [(items[i], items[i + 1]) for i in range(0, len(items), 2)]
        texts = [f"alpha:({a}),beta({b})" for a, b in values]
    elif axis_type == "pinpoint blocks":
        values = [_pinpoint_blocks(t, blocks, where) for t in items]
    elif axis_type in ("include blocks", "exclude blocks", "add include", "add exclude"):
        values = [_inex_blocks(t, where) for t in items]
    elif axis_type in ("pinpoint element", "pinpoint element ext", "effective elemental checker"):
        for t in items:
            if t and t.count(":") != 1:
                raise MergeError(where, f"'{t}' is not BLOCKS:ELEMENTS (the ratio comes from the alpha axis)")
        values = list(items)
    elif axis_type == "pinpoint adjust":
        for t in items:
            if t not in ADJUST_NAMES:
                raise MergeError(where, f"'{t}' is not one of {', '.join(ADJUST_NAMES)} (or ALL)")
        values = list(items)
        texts = [f"{t} {COLOUR_NAMES[t]}" if t in COLOUR_NAMES else t for t in items]
    elif axis_type == "merge ID":
        values = [int(_number(t, where, "a merge ID")) for t in items]
    else:  # text values, checked when the cell's recipe is built
        values = list(items)
    return Axis(axis_type, tuple(values), tuple(texts))


def _pinpoint_blocks(text: str, blocks: tuple, where: str) -> tuple:
    """(positions of the list to set, as a frozenset) — `NOT` selects every other position, BASE included."""
    words = text.split()
    negate = bool(words) and words[0] == "NOT"
    words = words[1:] if negate else words
    chosen = set()
    for name in expand_blocks(" ".join(words), blocks, where) if words else []:
        if name not in blocks:
            raise MergeError(where, f"'{name}' is not a block of this model ({blocks[0]}, {blocks[1]}…{blocks[-1]})")
        chosen.add(blocks.index(name))
    if negate:
        chosen = set(range(len(blocks))) - chosen
    return tuple(sorted(chosen))


def _inex_blocks(text: str, where: str) -> tuple:
    words = text.split()
    negate = bool(words) and words[0] == "NOT"
    words = words[1:] if negate else words
    for w in words:
        if w not in EXCLUDE_CHOICES:
            raise MergeError(where, f"'{w}' is not a block id, Adjust or VAE")
    if negate:
        return tuple(c for c in EXCLUDE_CHOICES if c not in words)
    return tuple(words)


# ---------------------------------------------------------------------------------------------- cells


@dataclass(frozen=True)
class Base:
    """What the plan node was given besides its axes: the merge (a Recipe) and the generation seed and
    prompt. `blocks`: the block ids of the model family's MBW list (for pinpoint blocks)."""
    recipe: Recipe
    seed: int
    prompt: str
    blocks: tuple = SD_BLOCKS


def plan_plot(base: Base, axes: tuple, lookup: Optional[Callable[[int], Recipe]] = None,
              rng: Optional[random.Random] = None) -> list:
    """Every grid of the plot (one per `|` part) with its cells. `axes`: ((type, text) for x, y, z).
    `lookup(merge_id)` gives a history recipe for the merge ID axis."""
    types = tuple(t for t, _ in axes)
    for t, name in zip(types, AXES):
        if t not in AXIS_TYPES:
            raise MergeError(f"{name}_type", f"unknown axis type '{t}'")
    if types[0] == "none":
        raise MergeError("x_type", "is none: the X axis is the one every plot needs")
    used = [(n, t) for n, t in zip(AXES, types) if t != "none"]
    for i, (n1, t1) in enumerate(used):
        for n2, t2 in used[i + 1:]:
            if t1 == t2 and t1 not in ("add elemental", "random"):
                raise MergeError(f"{n1}_type, {n2}_type", f"both are '{t1}': an axis type can be used once")
    texts = tuple(expand_all(t, text or "", base.blocks) for t, text in axes)
    rng = rng or random.Random()
    seed = base.seed if base.seed >= 0 else rng.randrange(4294967294)
    grids = []
    for part, part_texts in enumerate(split_parts(texts)):
        parsed = []
        for i, (name, t) in enumerate(zip(AXES, types)):
            others = types[:i] + types[i + 1:]
            axis = parse_values(t, part_texts[i], f"{name}_values", others, rng, base.blocks)
            if not axis.values:
                if name == "x":
                    raise MergeError("x_values", f"is empty: give the {t} values to plot")
                axis = Axis("none", (None,), ("",))  # an empty Y or Z turns the axis off, as in SuperMerger
            parsed.append(axis)
        grid = Grid(part, tuple(parsed))
        grid.notes += _check_pairing(grid.axes, base)
        for z in range(len(parsed[2].values)):
            for y in range(len(parsed[1].values)):
                for x in range(len(parsed[0].values)):
                    grid.cells.append(_cell(base, seed, grid.axes, (x, y, z), part, lookup))
        grids.append(grid)
    return grids


def _check_pairing(axes: tuple, base: Base) -> list:
    types = [a.type for a in axes]
    if "pinpoint blocks" in types and not ({"alpha", "beta"} & set(types)):
        raise MergeError("pinpoint blocks", "needs an alpha or beta axis: its values are what the named blocks "
                                            "are set to")
    if "pinpoint adjust" in types and "alpha" not in types:
        raise MergeError("pinpoint adjust", "needs an alpha axis: its values are what the named slider is set to")
    if "random" in types and base.recipe.dice is None:
        raise MergeError("random", "needs Dice Roll settings: connect a Dice Roll node to the weights input")
    notes = []
    if any("beta" in t for t in types) and _beta_switch(base.recipe):
        notes.append(f"a beta axis needs β: mode {base.recipe.mode} was switched to sum_twice")
    return notes


def _beta_switch(recipe: Recipe) -> bool:
    return recipe.mode not in ("triple_sum", "sum_twice") and "tensor" not in recipe.calcmode


def _first(text: str) -> Optional[float]:
    head = text.split(",", 1)[0].strip()
    return float(head) if _is_number(head) else None


def _cell(base: Base, seed: int, axes: tuple, index: tuple, part: int, lookup) -> Cell:
    state = {"recipe": base.recipe.to_dict(), "seed": seed, "prompt": base.prompt}
    values = {a.type: a.values[i] for a, i in zip(axes, index) if a.used}
    where = {a.type: f"{n}_values" for a, n in zip(axes, AXES) if a.used}
    # the value of the axis a pinpoint axis is paired with is what the pinpoint sets, not the slider
    consumed = {"alpha"} if any(t in PINPOINTS for t in values) else set()
    if "pinpoint blocks" in values and "alpha" not in values:
        consumed.add("beta")
    for axis, i, name in zip(reversed(axes), reversed(index), reversed(AXES)):  # z, then y, then x
        if axis.used:
            _apply(state, axis.type, axis.values[i], base, consumed, f"{name}_values", lookup)
    r = state["recipe"]
    for t in PINPOINTS:
        if t in values:
            _apply_pinpoint(r, t, values[t], values, base, where[t])
    if any("beta" in a.type for a in axes if a.used) and _beta_switch(Recipe.from_dict(r)):
        r["mode"] = "sum_twice"
    try:
        recipe = Recipe.from_dict(r)
    except MergeError as e:
        shown = ", ".join(f"{a.label_type} = {a.texts[i]}" for a, i in zip(axes, index) if a.used)
        raise MergeError(f"cell ({shown})", str(e)) from None
    return Cell(part, index, recipe, state["seed"], state["prompt"])


def _apply(state: dict, t: str, v, base: Base, consumed: set, where: str, lookup) -> None:
    """SuperMerger's `xydealer`: what one axis value does to a cell."""
    r = state["recipe"]
    if t in ("alpha", "beta"):
        if t not in consumed:
            r[t] = v
    elif t == "alpha and beta":
        r["alpha"], r["beta"] = v
    elif t == "seed":
        state["seed"] = v
    elif t in ("prompt", "prompt2", "prompt3"):
        state["prompt"] = v
    elif t in ("mbw alpha", "mbw beta", "mbw alpha and beta"):
        pairs = {"mbw alpha": [("alpha", v)], "mbw beta": [("beta", v)],
                 "mbw alpha and beta": [("alpha", v[0]), ("beta", v[1])]}[t]
        for which, text in pairs:
            full = expand_preset(text, where)
            r[f"weights_{which}"] = text
            first = _first(full)
            if first is not None:
                r[which] = first  # SuperMerger sets the slider to the list's base, as its history shows
    elif t in ("model_A", "model_B", "model_C"):
        r[f"model_{t[-1].lower()}"] = v
    elif t in ("include blocks", "exclude blocks", "add include", "add exclude"):
        inex = base.recipe.include_exclude
        blocks = list(v)
        if t.startswith("add"):
            blocks = list(inex["blocks"]) + [b for b in v if b not in inex["blocks"]]
        r["include_exclude"] = {"mode": "include" if "include" in t else "exclude", "blocks": blocks,
                                "elements": list(inex["elements"])}
    elif t == "elemental":
        r["elemental"] = v
    elif t == "add elemental":
        r["elemental"] = ",".join(x for x in (r["elemental"], v) if x)
    elif t == "adjust":
        r["adjust"] = v
    elif t == "calcmode":
        r["calcmode"] = v
    elif t == "random":
        r["seed"] = v
    elif t == "merge ID":
        if lookup is None:
            raise MergeError(where, "the merge history is not available")
        state["recipe"] = lookup(v).to_dict()


def _apply_pinpoint(r: dict, t: str, v, values: dict, base: Base, where: str) -> None:
    if t == "pinpoint blocks":
        which = "alpha" if "alpha" in values else "beta"
        level = values[which]
        n = len(base.blocks)
        text = expand_preset(r[f"weights_{which}"] or "", where)
        tokens = [s.strip() for s in text.split(",")] if text else [repr(float(r[which]))] * n
        if len(tokens) != n:
            raise MergeError(where, f"pinpoint blocks changes a {n}-value weights_{which} list; the one given has "
                                    f"{len(tokens)} values")
        for pos in v:
            tokens[pos] = repr(float(level))
        r[f"weights_{which}"] = ",".join(tokens)
        first = _first(r[f"weights_{which}"])
        r[which] = first if first is not None else r[which]
    elif t == "pinpoint adjust":
        slots = parse_adjust(r["adjust"]) or [0.0] * 8
        slots[ADJUST_NAMES.index(v)] = float(values["alpha"])
        r["adjust"] = ",".join(repr(s) for s in slots)
    elif v:  # pinpoint element (ext), effective checker; the checker's first value ("") is the baseline
        level = values.get("alpha", r["alpha"])
        r["elemental"] = ",".join(x for x in (r["elemental"], f"{v}:{level}") if x)
        if t == "pinpoint element ext":
            r["elemental_extended"] = True


# ---------------------------------------------------------------------------------------------- labels


def axis_labels(axis: Axis) -> list:
    """SPEC §9.5: the first label reads `<type> = <value>`, the others the value alone."""
    if not axis.used:
        return [""] * len(axis.values)
    labels = list(axis.texts)
    labels[0] = f"{axis.label_type} = {labels[0]}"
    return labels


def wrap_label(text: str, width: int = 25) -> str:
    """Labels longer than `width` characters break after a comma (SPEC §9.5); lines already in the text stay."""
    out = []
    for line in text.split("\n"):
        while len(line) > width and "," in line[:-1]:
            cut = line.rfind(",", 0, width)
            cut = cut if cut > 0 else line.find(",")
            out.append(line[:cut + 1])
            line = line[cut + 1:]
        out.append(line)
    return "\n".join(out)


FORMULAS = {"weight_sum": "{a} x (1-alpha) + {b} x alpha",
            "add_difference": "{a} + ({b} - {c}) x alpha",
            "triple_sum": "{a} x (1-alpha-beta) + {b} x alpha + {c} x beta",
            "sum_twice": "({a} x (1-alpha) + {b} x alpha) x (1-beta) + {c} x beta"}


def grid_title(recipe: Recipe, axes: tuple) -> str:
    """The formula of the merge with the parameters the axes vary shown as X / Y (SuperMerger's
    `makegridmodelname`)."""
    from .naming import stem

    names = {"a": stem(recipe.model_a), "b": stem(recipe.model_b), "c": stem(recipe.model_c or recipe.model_a)}
    for axis, letter in zip(axes[:2], "XY"):
        if axis.type.startswith("model_"):
            names[axis.type[-1].lower()] = f"model {axis.type[-1]} ({letter})"
    text = FORMULAS[recipe.mode].format(**names)
    alpha = f"{recipe.alpha:g}" if recipe.weights_alpha is None else f"weights {recipe.weights_alpha}"
    beta = f"{recipe.beta:g}" if recipe.weights_beta is None else f"weights {recipe.weights_beta}"
    for axis, letter in zip(axes[:2], "XY"):
        if "alpha" in axis.type:
            alpha = letter
        if "beta" in axis.type:
            beta = letter
    vals = f"alpha = {alpha}" + (f", beta = {beta}" if recipe.mode in ("triple_sum", "sum_twice") else "")
    calc = f", {recipe.calcmode}" if recipe.calcmode != "normal" else ""
    return f"{text}{calc}\n{wrap_label(vals, 60)}"
