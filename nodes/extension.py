"""The node classes (ComfyUI's V3 API through the pinned `comfy_api.v0_0_2`). Thin: each reads its inputs,
asks `params` for a Recipe and `patching` for the patched models; all maths is in merge_core."""
from __future__ import annotations

from comfy_api.v0_0_2 import ComfyExtension, io, ui

from . import checkpoint_nodes, checkpoints, inspect_nodes, lora, lora_extract, params, patching, xyz_nodes
from .common import CATEGORY, TIPS, Params, show_notes
from .messages import DISPLAY, node_error, validation

MODE_NODES = {  # node id → (mode, formula)
    "SuperMergerWeightSum": ("weight_sum", "A·(1−α) + B·α"),
    "SuperMergerAddDifference": ("add_difference", "A + (B − C)·α"),
    "SuperMergerTripleSum": ("triple_sum", "A·(1−α−β) + B·α + C·β"),
    "SuperMergerSumTwice": ("sum_twice", "(A·(1−α) + B·α)·(1−β) + C·β"),
}


def _params_output(node_id: str, build, *args) -> io.NodeOutput:
    """A parameter node's output, or one message naming the node and the input."""
    try:
        return io.NodeOutput(build(*args))
    except params.MergeError as e:
        raise node_error(node_id, e) from None


def _merge_node(node_id: str, mode: str, formula: str) -> type:
    uses_c = mode != "weight_sum"
    uses_beta = mode in ("triple_sum", "sum_twice")
    choices = params.calcmodes_for(mode)

    class Node(io.ComfyNode):
        @classmethod
        def define_schema(cls):
            inputs = [io.Model.Input("model_a", tooltip="Model A: the base; its keys and dtypes define the result."),
                      io.Model.Input("model_b", tooltip="Model B.")]
            if uses_c:
                inputs.append(io.Model.Input("model_c", optional=mode == "add_difference",
                                             tooltip="Model C (for add difference: what B is compared with; "
                                                     "empty = model A)."))
            inputs += [io.Float.Input("alpha", default=0.5, min=-2.0, max=3.0, step=0.001, tooltip=TIPS["alpha"])]
            # β belongs to triple sum and sum twice; the other modes show it only where a calcmode reads it
            if uses_beta or params.readers(mode, "beta"):
                tip = TIPS["beta"] + ("" if uses_beta else params.only_read_by(mode, "beta"))
                inputs.append(io.Float.Input("beta", default=0.25, min=-2.0, max=3.0, step=0.001, tooltip=tip))
            if params.readers(mode, "gamma"):
                inputs.append(io.Float.Input("gamma", default=0.3, min=-1.0, max=20.0, step=0.01,
                                             tooltip=TIPS["gamma"] + params.only_read_by(mode, "gamma")))
            inputs += [io.Combo.Input("calcmode", options=choices, default="normal", tooltip=TIPS["calcmode"]),
                       io.Boolean.Input("use_old_calc", default=False, tooltip=TIPS["use_old_calc"], optional=True),
                       io.Clip.Input("clip_a", optional=True, tooltip="CLIP of model A: merged with the same "
                                                                       "plan (BASE block weight)."),
                       io.Clip.Input("clip_b", optional=True, tooltip="CLIP of model B.")]
            if uses_c:
                inputs.append(io.Clip.Input("clip_c", optional=True, tooltip="CLIP of model C."))
            inputs.append(Params.Input("weights", optional=True, tooltip=TIPS["weights"]))
            return io.Schema(
                node_id=node_id, display_name=DISPLAY[node_id], category=f"{CATEGORY}/merge",
                description=f"{formula}, computed when the sampler loads the model (nothing is copied or saved).",
                inputs=inputs,
                outputs=[io.Model.Output(display_name="MODEL", tooltip="The merged model (lazy patches on A)."),
                         io.Clip.Output(display_name="CLIP", tooltip="The merged CLIP (None without CLIP inputs)."),
                         io.String.Output(display_name="recipe", tooltip="The merge as recipe JSON.")],
                hidden=[io.Hidden.prompt, io.Hidden.unique_id])

        @classmethod
        def execute(cls, model_a, model_b, alpha, calcmode, model_c=None, beta=0.25, gamma=0.3,
                    use_old_calc=False, clip_a=None, clip_b=None, clip_c=None, weights=None) -> io.NodeOutput:
            try:
                names = params.loader_names(cls.hidden.prompt, cls.hidden.unique_id)
                recipe = params.build_recipe(mode, calcmode, alpha, beta, gamma, weights, use_old_calc,
                                             (names.get("model_a", "model A"), names.get("model_b", "model B"),
                                              names.get("model_c", "model C") if model_c is not None else None))
                model, clip, plan = patching.merge_models(node_id, recipe, model_a, model_b, model_c,
                                                          clip_a, clip_b, clip_c)
            except params.MergeError as e:
                raise node_error(node_id, e) from None
            checkpoints.history().append(plan.recipe, params.merge_core.merge.display_name(plan), {}, "in-graph",
                                         plan.family.name)
            show_notes(cls.hidden.unique_id, plan.notes)
            return io.NodeOutput(model, clip, plan.recipe.to_json())

    Node.__name__ = node_id
    Node.__qualname__ = node_id
    return Node


MERGE_NODES = [_merge_node(nid, *spec) for nid, spec in MODE_NODES.items()]


def _weight_counts() -> str:
    return "; ".join(f"{f.label} {f.counts_text}" for f in params.merge_core.FAMILIES.values())


class SuperMergerBlockWeights(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        presets = params.preset_choices()
        return io.Schema(
            node_id="SuperMergerBlockWeights", display_name=DISPLAY["SuperMergerBlockWeights"],
            category=f"{CATEGORY}/parameters",
            description=f"Per-block α/β (MBW), values per family: {_weight_counts()}. The first value replaces "
                        "the slider for BASE.",
            inputs=[io.String.Input("weights_alpha", multiline=True, default="",
                                    tooltip="Comma-separated block weights for α, or a preset name."),
                    io.Combo.Input("preset_alpha", options=presets, default=params.NO_PRESET,
                                   tooltip="A preset for α (wins over the text box)."),
                    io.String.Input("weights_beta", multiline=True, default="",
                                    tooltip="Block weights for β (triple sum, sum twice, tensor modes)."),
                    io.Combo.Input("preset_beta", options=presets, default=params.NO_PRESET,
                                   tooltip="A preset for β (wins over the text box)."),
                    Params.Input("weights", optional=True, tooltip="Chain: settings from another parameter node.")],
            outputs=[Params.Output(display_name="weights")])

    @classmethod
    def validate_inputs(cls, weights_alpha=None, preset_alpha=None, weights_beta=None, preset_beta=None):
        """Typos and unknown presets are shown on this node before anything runs (ComfyUI leaves the preset
        combos to this check). An input fed by a link is not known yet: it is checked when the node runs."""
        for text, preset, which in ((weights_alpha, preset_alpha, "alpha"), (weights_beta, preset_beta, "beta")):
            ok = validation("SuperMergerBlockWeights", params.check_weights, text or "", preset or params.NO_PRESET,
                            which)
            if ok is not True:
                return ok
        return True

    @classmethod
    def execute(cls, weights_alpha, preset_alpha, weights_beta, preset_beta, weights=None) -> io.NodeOutput:
        return _params_output("SuperMergerBlockWeights", params.block_weights, weights, weights_alpha, weights_beta,
                              preset_alpha, preset_beta)


class SuperMergerElemental(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SuperMergerElemental", display_name=DISPLAY["SuperMergerElemental"],
            category=f"{CATEGORY}/parameters",
            description="BLOCKS:ELEMENTS:RATIO entries (one per line) that set α for matching keys; later win.",
            inputs=[io.String.Input("elemental", multiline=True, default="",
                                    tooltip="e.g. OUT03-OUT05:attn2:0.8 — blocks (ranges, NOT), key substrings "
                                            "(NOT), ratio (a number or R/U/X)."),
                    io.Boolean.Input("extended_xl", default=False,
                                     tooltip="SDXL: block names are the 110 fine names (IN411, MID103, TIME…)."),
                    Params.Input("weights", optional=True, tooltip="Chain: settings from another parameter node.")],
            outputs=[Params.Output(display_name="weights")])

    @classmethod
    def validate_inputs(cls, elemental=None):
        """Entries that are not BLOCKS:ELEMENTS:RATIO are shown on this node before anything runs."""
        if elemental is None:  # fed by a link: checked when the node runs
            return True
        return validation("SuperMergerElemental", params.merge_core.elemental.check_syntax, elemental)

    @classmethod
    def execute(cls, elemental, extended_xl, weights=None) -> io.NodeOutput:
        return _params_output("SuperMergerElemental", params.elemental, weights, elemental, extended_xl)


class SuperMergerIncludeExclude(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SuperMergerIncludeExclude", display_name=DISPLAY["SuperMergerIncludeExclude"],
            category=f"{CATEGORY}/parameters",
            description="Merge only the matching keys (include) or keep them as model A (exclude).",
            inputs=[io.Combo.Input("mode", options=["exclude", "include", "off"], default="exclude",
                                   tooltip="include: only matches merge; exclude: matches stay model A."),
                    io.String.Input("blocks", default="", tooltip="Block ids separated by spaces (BASE IN00 … "
                                                                  "OUT11, M00), plus Adjust and VAE."),
                    io.String.Input("elements", default="", tooltip="Comma-separated key substrings or SDXL fine "
                                                                    "block names (e.g. attn2, IN411)."),
                    Params.Input("weights", optional=True, tooltip="Chain: settings from another parameter node.")],
            outputs=[Params.Output(display_name="weights")])

    @classmethod
    def execute(cls, mode, blocks, elements, weights=None) -> io.NodeOutput:
        return _params_output("SuperMergerIncludeExclude", params.include_exclude, weights, mode, blocks, elements)


class SuperMergerDiceRoll(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SuperMergerDiceRoll", display_name=DISPLAY["SuperMergerDiceRoll"],
            category=f"{CATEGORY}/parameters",
            description="Random block weights, reproducible from the seed (the recipe output records it).",
            inputs=[io.Combo.Input("mode", options=["R", "U", "X", "D", "ER", "EU", "EX", "custom"], default="R",
                                   tooltip="R [0,1), U (−0.5,1.5], X between lower and upper, D around upper "
                                           "(width lower), E*: per-key random ratios, custom: your token list."),
                    io.Int.Input("seed", default=0, min=0, max=4294967293, control_after_generate=True,
                                 tooltip="Seed of the roll."),
                    io.Boolean.Input("alpha", default=True, tooltip="Roll the α block weights."),
                    io.Boolean.Input("beta", default=False, tooltip="Roll the β block weights."),
                    io.String.Input("custom", default="", tooltip="Tokens for mode custom, e.g. U,0,…,R,R."),
                    io.String.Input("upper", default="1", tooltip="Upper limit for X, mid point of D (one value "
                                                                  "or one per block)."),
                    io.String.Input("lower", default="0", tooltip="Lower limit for X, range of D; 'vRp' = v with "
                                                                  "probability p, else 0."),
                    io.String.Input("clamp_upper", default="", tooltip="Optional clamp for every value."),
                    io.String.Input("clamp_lower", default="", tooltip="Optional clamp for every value."),
                    io.Int.Input("round", default=3, min=0, max=8, tooltip="Decimal places."),
                    io.Boolean.Input("extend_xl", default=False, tooltip="SDXL: roll all 110 fine blocks."),
                    Params.Input("weights", optional=True, tooltip="Chain: settings from another parameter node.")],
            outputs=[Params.Output(display_name="weights")])

    @classmethod
    def execute(cls, mode, seed, alpha, beta, custom, upper, lower, clamp_upper, clamp_lower, round, extend_xl,
                weights=None) -> io.NodeOutput:
        return _params_output("SuperMergerDiceRoll", params.dice, weights, mode, seed, alpha, beta, custom, upper,
                              lower, clamp_upper, clamp_lower, round, extend_xl)


ADJUST_TIPS = {"IN": "Detail (input conv)", "OUT": "Detail (final norm)", "OUT2": "Detail (output conv)",
               "CONT": "Contrast", "BRI": "Brightness", "COL1": "Cyan–red", "COL2": "Magenta–green",
               "COL3": "Yellow–blue"}


class SuperMergerAdjust(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SuperMergerAdjust", display_name=DISPLAY["SuperMergerAdjust"], category=f"{CATEGORY}/model",
            description="Detail, contrast, brightness and colour, by scaling the U-Net's first and last layers: of "
                        "a model (MODEL in, MODEL out), or as part of a merge (weights chain in, weights out to the "
                        "merge node), where, as in SuperMerger, keys Include/Exclude keeps as A are not adjusted.",
            inputs=[io.Model.Input("model", optional=True,
                                   tooltip="A model to adjust (it is not modified; a patched copy is returned).")]
            + [io.Float.Input(name.lower(), default=0.0, min=-10.0 if i >= 3 else -6.0, max=10.0 if i >= 3 else 6.0,
                              step=0.01, tooltip=ADJUST_TIPS[name])
               for i, name in enumerate(ADJUST_TIPS)]
            + [Params.Input("weights", optional=True, tooltip="Chain: settings from another parameter node.")],
            outputs=[io.Model.Output(display_name="MODEL", tooltip="The adjusted model (None without a model)."),
                     Params.Output(display_name="weights", tooltip="The chain with Adjust added, for a merge node.")])

    @classmethod
    def execute(cls, model=None, weights=None, **values) -> io.NodeOutput:
        node = "SuperMergerAdjust"
        numbers = [float(values[name.lower()]) for name in ADJUST_TIPS]
        try:
            chain = params.adjust(weights, numbers)
            if model is None or not any(numbers):
                return io.NodeOutput(model, chain)  # nothing to adjust: the model itself, no patches
            text = ",".join(str(v) for v in numbers)
            return io.NodeOutput(patching.adjust_model(node, model, text), chain)
        except params.MergeError as e:
            raise node_error(node, e) from None


class SuperMergerAnalysis(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SuperMergerAnalysis", display_name=DISPLAY["SuperMergerAnalysis"],
            category=f"{CATEGORY}/analysis",
            description="How alike two models are, per block (a bar per block) or per key (SPEC §14).",
            inputs=[io.Model.Input("model_a", tooltip="The first model."),
                    io.Model.Input("model_b", tooltip="The model compared with it."),
                    io.Combo.Input("mode", options=["block", "element", "both", "asimilarity"], default="block",
                                   tooltip="block: cosine similarity per block; element: per key; both: the "
                                           "block means, then every key; asimilarity: how alike the "
                                           "self-attention blocks respond."),
                    io.Combo.Input("block_method", options=["mean", "min", "attn2"], default="mean",
                                   tooltip="A block's value in block mode: the mean or minimum of its keys, "
                                           "or its cross-attention output weight (both: always the mean)."),
                    io.Clip.Input("clip_a", optional=True, tooltip="Also compare the text encoders (BASE)."),
                    io.Clip.Input("clip_b", optional=True, tooltip="The second text encoder."),
                    io.String.Input("csv_filename", default="", optional=True,
                                    tooltip="Also save the table as CSV in the output folder (empty = don't).")],
            outputs=[io.String.Output(display_name="table", tooltip="The scores as text (block, score, key)."),
                     io.Image.Output(display_name="chart", tooltip="A bar per block (100 = identical).")])

    @classmethod
    def execute(cls, model_a, model_b, mode, block_method, clip_a=None, clip_b=None,
                csv_filename="") -> io.NodeOutput:
        from .chart import bar_chart
        from .inspect_nodes import image_tensor, write_table

        node = "SuperMergerAnalysis"
        try:
            result, family = patching.analyze(node, model_a, model_b, mode, block_method, clip_a, clip_b)
        except params.MergeError as e:
            raise node_error(node, e) from None
        analysis = params.merge_core.analysis
        rows = result.blocks or [(b, s) for b, _k, s in result.elements]
        title = ("ASimilarity per attention block" if mode == "asimilarity"
                 else f"{family.label}: cosine similarity ({result.method} per block)")
        tensor = image_tensor(bar_chart(rows, title))
        text = analysis.table_text(result)
        if csv_filename.strip():
            text += f"\nsaved output/{write_table(node, csv_filename, result.csv_rows())}"
        return io.NodeOutput(text, tensor, ui=ui.PreviewImage(tensor, cls=cls))


class SuperMergerElements(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        import folder_paths

        return io.Schema(
            node_id="SuperMergerElements", display_name=DISPLAY["SuperMergerElements"],
            category=f"{CATEGORY}/analysis",
            description="Every key of a model with its block, SDXL fine block and shape: the names elemental "
                        "merge and Include/Exclude use (SPEC §15).",
            inputs=[io.Combo.Input("ckpt_name", options=["(connected model)"] + folder_paths.get_filename_list(
                        "checkpoints"), default="(connected model)",
                        tooltip="A checkpoint file, read without loading it; or use the model input."),
                    io.String.Input("filter", default="", tooltip="Only keys containing this text."),
                    io.Model.Input("model", optional=True, tooltip="A loaded model (its U-Net keys)."),
                    io.Clip.Input("clip", optional=True, tooltip="Also list its text encoder keys.")],
            outputs=[io.String.Output(display_name="elements", tooltip="key, block, fine block, shape, dtype")])

    @classmethod
    def execute(cls, ckpt_name, filter, model=None, clip=None) -> io.NodeOutput:
        node = "SuperMergerElements"
        try:
            rows = patching.elements(node, ckpt_name if ckpt_name != "(connected model)" else None, model, clip,
                                     filter)
        except params.MergeError as e:
            raise node_error(node, e) from None
        text = "\n".join("\t".join([k, b, f, str(s), d]) for k, b, f, s, d in rows)
        return io.NodeOutput(text, ui=ui.PreviewText(f"{len(rows)} keys\n" + text[:20000]))


class SuperMergerExtension(ComfyExtension):
    async def get_node_list(self) -> list:
        return [*MERGE_NODES, SuperMergerBlockWeights, SuperMergerElemental, SuperMergerIncludeExclude,
                SuperMergerDiceRoll, SuperMergerAdjust, SuperMergerAnalysis, SuperMergerElements,
                *checkpoint_nodes.NODES, *inspect_nodes.NODES, *lora.NODES, *lora_extract.NODES, *xyz_nodes.NODES]
