"""What the parameter nodes produce and how merge-node inputs become a Recipe. ComfyUI-free.

The parameter nodes pass one value along a chain (type SUPERMERGER_PARAMS): a dict of Recipe fields. Each
node sets its own fields; elemental entries accumulate (later entries win, as in the elemental syntax).
"""
from __future__ import annotations

from typing import Optional

from ._engine import merge_core

MergeError = merge_core.MergeError
PARAM_FIELDS = ("weights_alpha", "weights_beta", "elemental", "elemental_extended", "include_exclude", "seed",
                "dice", "adjust")
NO_PRESET = "(none)"
NO_LORA = "(none)"


calcmodes_for = merge_core.calcmodes.for_mode


def readers(mode: str, field: str) -> list:
    """The calcmodes of `mode` that read β or γ (`field` "beta"/"gamma"), from their declarations."""
    return [n for n in calcmodes_for(mode) if getattr(merge_core.calcmodes.CALCMODES[n], f"uses_{field}")]


def only_read_by(mode: str, field: str) -> str:
    """What a merge node's β/γ tooltip adds where the mode itself ignores the value: which calcmodes read it."""
    names = readers(mode, field)
    return f" Read only by calcmode {' and '.join(names)}; the others ignore it." if names else ""


def preset_choices() -> list:
    return [NO_PRESET] + merge_core.presets.mbw_preset_names(26)


def _chain(prev: Optional[dict]) -> dict:
    out = dict(prev or {})
    unknown = set(out) - set(PARAM_FIELDS)
    if unknown:
        raise MergeError("weights", f"not a SuperMerger parameters value (fields {', '.join(sorted(unknown))})")
    return out


def block_weights(prev, weights_alpha: str, weights_beta: str, preset_alpha: str = NO_PRESET,
                  preset_beta: str = NO_PRESET) -> dict:
    """A preset, when chosen, wins over the text box of the same list."""
    out = _chain(prev)
    for which, text, preset in (("alpha", weights_alpha, preset_alpha), ("beta", weights_beta, preset_beta)):
        value = check_weights(text, preset, which)
        if value:
            out[f"weights_{which}"] = value
    return out


def check_weights(text: str, preset: str, which: str) -> str:
    """The weights one list of the Block Weights node sets (its preset or its text), checked as far as no model
    is needed: a preset that exists, numbers, a count some family takes. Errors name the input at fault."""
    if preset and preset != NO_PRESET:
        choices = preset_choices()
        if preset not in choices:
            raise MergeError(f"preset_{which}",
                             f"unknown preset '{preset}'{merge_core.errors.suggest(preset, choices[1:], 'Presets')}")
        return preset
    where = f"weights_{which}"
    numbers = merge_core.weights.parse_numbers(text, where)
    if numbers is None:
        return ""
    counts = sorted({n for f in merge_core.FAMILIES.values() for n in f.weight_counts})
    if len(numbers) not in counts:
        raise MergeError(where, f"{len(numbers)} values; a block-weight list has "
                                f"{', '.join(map(str, counts[:-1]))} or {counts[-1]} (BASE first)")
    return text.strip()


def elemental(prev, text: str, extended: bool = False) -> dict:
    out = _chain(prev)
    text = (text or "").strip()
    merge_core.elemental.check_syntax(text)
    if text:
        out["elemental"] = ",".join(t for t in (out.get("elemental", ""), text) if t)
    if extended:
        out["elemental_extended"] = True
    return out


def include_exclude(prev, mode: str, blocks: str, elements: str) -> dict:
    out = _chain(prev)
    out["include_exclude"] = {"mode": mode, "blocks": blocks.replace(",", " ").split(),
                              "elements": [e.strip() for e in elements.split(",") if e.strip()]}
    merge_core.Recipe(model_a="A", model_b="B", include_exclude=out["include_exclude"])  # syntax check
    return out


def dice(prev, mode: str, seed: int, alpha: bool = True, beta: bool = False, custom: str = "",
         upper: str = "1", lower: str = "0", clamp_upper: str = "", clamp_lower: str = "", round_to: int = 3,
         extend_xl: bool = False) -> dict:
    out = _chain(prev)
    settings = {"mode": mode, "alpha": alpha, "beta": beta, "upper": upper or "1", "lower": lower or "0",
                "round": int(round_to), "extend_xl": extend_xl}
    if custom.strip():
        settings["custom"] = custom.strip()
    if clamp_upper.strip():
        settings["clamp_upper"] = clamp_upper.strip()
    if clamp_lower.strip():
        settings["clamp_lower"] = clamp_lower.strip()
    merge_core.dice.DiceSettings.from_dict(settings)
    out["dice"] = settings
    out["seed"] = int(seed)
    return out


def adjust(prev, values: list) -> dict:
    """Adjust's eight values (SPEC §6) as part of a merge, applied where the merge applies it: to the six Adjust
    keys it merges, not to those Include/Exclude keeps as model A."""
    out = _chain(prev)
    if any(values):
        out["adjust"] = ",".join(str(float(v)) for v in values)
    else:
        out.pop("adjust", None)
    return out


def panel(prev, weights_alpha: str = "", weights_beta: str = "", elemental_text: str = "",
          inex_mode: str = "off", inex_blocks: str = "", inex_elements: str = "") -> dict:
    """The checkpoint-merge node's own fields, on top of a connected parameter chain: block weights and
    Include/Exclude set here win over the chain's; elemental entries are added after the chain's."""
    out = block_weights(prev, weights_alpha, weights_beta)
    out = elemental(out, elemental_text)
    if inex_mode != "off" or inex_blocks.strip() or inex_elements.strip():
        out = include_exclude(out, inex_mode, inex_blocks, inex_elements)
    return out


def build_recipe(mode: str, calcmode: str, alpha: float, beta: float = 0.25, gamma: float = 0.3,
                 params: Optional[dict] = None, use_old_calc: bool = False,
                 names: tuple = ("model A", "model B", None), adjust: str = "") -> "merge_core.Recipe":
    fields = _chain(params)
    if adjust.strip():  # the panel's own field wins over the chain's
        fields["adjust"] = adjust.strip()
    return merge_core.Recipe(model_a=names[0], model_b=names[1], model_c=names[2], mode=mode, calcmode=calcmode,
                             alpha=alpha, beta=beta, gamma=gamma, use_old_calc=use_old_calc, **fields)


def loader_names(prompt: Optional[dict], node_id, fields=("model_a", "model_b", "model_c")) -> dict:
    """Field → checkpoint name of the loader wired straight into that input of node `node_id`, as far as the
    prompt being run shows one (a loader is a node with a `ckpt_name`), so an in-graph merge's recipe, history
    entry and file name name its real inputs."""
    node = (prompt or {}).get(str(node_id), {})
    out = {}
    for field in fields:
        link = node.get("inputs", {}).get(field)
        if isinstance(link, list) and link:
            name = (prompt.get(str(link[0]), {}).get("inputs", {})).get("ckpt_name")
            if isinstance(name, str) and name:
                out[field] = name
    return out


def two_entries(lora_1: str, ratio_1: float, blocks_1: str, lora_2: str, ratio_2: float, blocks_2: str,
                entry_1=None, entry_2=None) -> list:
    """The two `name:ratio[:blocks]` texts of Extract from two LoRAs: a linked entry (another LoRA node's
    lora_list), else the LoRA chosen from the list with its ratio and blocks."""
    out = []
    for i, (entry, name, ratio, blocks) in enumerate(((entry_1, lora_1, ratio_1, blocks_1),
                                                      (entry_2, lora_2, ratio_2, blocks_2)), 1):
        if entry:
            out.append(entry)
        elif name and name != NO_LORA:
            out.append(f"{name}:{ratio:g}" + (f":{blocks.strip()}" if blocks and blocks.strip() else ""))
        else:
            raise MergeError(f"lora_{i}", "choose a LoRA from the list, or link an entry")
    return out
