"""LoRA extraction nodes (SPEC §13.9, §13.6): a LoRA file from two in-graph models, or from two LoRA files.

`SuperMergerLoraExtract` reads the models' effective weights (their own patches applied) in checkpoint key
space through `patching.ModelView`, so its modules and their names are those of an extraction from the
checkpoint files, and writes the LoRA into the loras folder while showing progress and stopping on Interrupt.
All maths is in merge_core.lora.extract / extract_two.
"""
from __future__ import annotations

from importlib import import_module
from pathlib import Path

from comfy_api.v0_0_2 import io

from . import params, patching
from ._engine import merge_core
from .common import interrupted, progress, stops_on_interrupt
from .messages import DISPLAY, node_error

for _module in ("extract", "extract_two", "files", "merge", "metadata", "syntax"):
    import_module(f"{merge_core.__name__}.lora.{_module}")

MergeError = merge_core.MergeError
CATEGORY = "SuperMerger/lora"
PRECISIONS = merge_core.precision.choices()


def output_path(node: str, filename: str, default: str) -> tuple:
    """(folder, file) for a new LoRA in the first loras folder, by the same rule as every writing node
    (merge_core.naming.inside: subfolders are made, nothing outside the folder)."""
    import folder_paths

    folder = Path(folder_paths.get_folder_paths("loras")[0]).resolve()
    try:
        out = merge_core.naming.inside(folder, (filename or "").strip() or default)
    except MergeError as e:
        raise MergeError("filename", f"{e.reason} (the loras folder)") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    return folder, out


def extract_from_models(node: str, model_a, model_b, clip_a, clip_b, options, filename: str,
                        overwrite: bool) -> str:
    """Write the LoRA α·A − β·B into the loras folder; returns its name there."""
    import comfy.model_base

    if (clip_a is None) != (clip_b is None):
        raise MergeError("clip inputs", "connect clip_a and clip_b together (the text encoder is "
                                                 "extracted from both), or neither")
    a = patching.ModelView("model A", model_a, clip_a)
    b = patching.ModelView("model B", model_b, clip_b)
    patching.same_family({"a": a, "b": b})
    v_prediction = model_a.model.model_type == comfy.model_base.ModelType.V_PREDICTION
    options = merge_core.lora.extract.ExtractOptions(**{**options, "v_prediction": v_prediction})
    folder, out = output_path(node, filename, "lora_extract")
    with stops_on_interrupt():
        merge_core.lora.extract.extract_lora(a, b, options, out, overwrite, family=a.family,
                                             progress=progress(),
                                             cancel=interrupted)
    return out.relative_to(folder).as_posix()


def extract_from_loras(node: str, entries: list, alpha: float, beta: float, gamma: float, same_to_strength: bool,
                       precision: str, filename: str, overwrite: bool) -> str:
    """`entries`: the two `name:ratio[:blocks]` texts. Returns the new file's name in the loras folder."""
    from .lora import _lora_files  # names found in the loras folder as every LoRA node does (lora imports us)

    lora = merge_core.lora
    files = []
    for i, text in enumerate(entries, 1):
        found = _lora_files(node, f"lora_{i}", text)
        if len(found) != 1:
            raise MergeError(f"lora_{i}", f"one name:ratio[:blocks] entry, not {len(found)}")
        files += found
    inputs = []
    try:
        for path, entry in files:
            inputs.append((lora.files.LoraFile.open(path, entry.name), entry))
        stems = ",".join(f"{Path(entry.name).name}:{entry.ratio_text}" for _, entry in files)
        folder, out = output_path(node, filename, lora.merge.default_name(stems))
        with stops_on_interrupt():
            lora.extract_two.extract_two_to_file(inputs, out, alpha, beta, gamma, same_to_strength, "create new",
                                                 precision, overwrite, interrupted, "loras")
    finally:
        for f, _ in inputs:
            f.close()
    return out.relative_to(folder).as_posix()


def _outputs(name: str) -> io.NodeOutput:
    return io.NodeOutput(name, f"{name[:-len('.safetensors')]}:1")


OUTPUTS = [io.String.Output(display_name="lora_name", tooltip="The new file's name in the loras folder."),
           io.String.Output(display_name="lora_list", tooltip="'name:1' for a LoRA to Model node.")]
SAVE_TIPS = {
    "save_precision": "dtype of the saved tensors (fp16, as SuperMerger).",
    "overwrite": "Replace a file of that name (otherwise an existing file is an error and is kept).",
}


class SuperMergerLoraExtract(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SuperMergerLoraExtract", display_name=DISPLAY["SuperMergerLoraExtract"],
            category=CATEGORY,
            description="Make a LoRA of α·A − β·B (SuperMerger's 'Make LoRA'): every transformer linear and 1×1 "
                        "conv (optionally the 3×3 convs) of the difference is reduced to a rank by a fast "
                        "truncated SVD; the text encoder is included when it changed. Applied to B at strength 1 "
                        "it turns B towards A.",
            inputs=[io.Model.Input("model_a", tooltip="Model A, the tuned model (its effective weights, patches "
                                                      "applied)."),
                    io.Model.Input("model_b", tooltip="Model B, the original model the LoRA is meant for."),
                    io.Float.Input("alpha", default=1.0, min=-1.0, max=2.0, step=0.01, tooltip="Weight of model A."),
                    io.Float.Input("beta", default=1.0, min=-1.0, max=2.0, step=0.01, tooltip="Weight of model B."),
                    io.Int.Input("rank", default=128, min=1, max=1024,
                                 tooltip="LoRA rank (dimension); a layer smaller than it gets its full rank."),
                    io.Int.Input("conv_rank", default=0, min=0, max=1024,
                                 tooltip="0: transformer linears and 1×1 convs only (kohya's and SuperMerger's "
                                         "default). N: also the 3×3 convs of ResBlocks, down- and upsamplers at "
                                         "rank N (a LoCon)."),
                    io.Boolean.Input("clamp", default=True,
                                     tooltip="Clamp both factors at the 0.99 quantile of their values, as kohya and "
                                             "SuperMerger do. It trims outliers but distorts large differences; off "
                                             "keeps the best rank-r approximation as it is."),
                    io.Combo.Input("save_precision", options=PRECISIONS, default="fp16",
                                   tooltip=SAVE_TIPS["save_precision"]),
                    io.String.Input("filename", default="lora_extract",
                                    tooltip="File name in the loras folder (.safetensors is added)."),
                    io.Boolean.Input("overwrite", default=False, tooltip=SAVE_TIPS["overwrite"]),
                    io.Clip.Input("clip_a", optional=True, tooltip="CLIP of model A: its text encoder is extracted "
                                                                   "too when it differs from B's by more than 0.1."),
                    io.Clip.Input("clip_b", optional=True, tooltip="CLIP of model B.")],
            outputs=OUTPUTS, is_output_node=True)

    @classmethod
    def execute(cls, model_a, model_b, alpha, beta, rank, conv_rank, clamp, save_precision, filename, overwrite,
                clip_a=None, clip_b=None) -> io.NodeOutput:
        node = "SuperMergerLoraExtract"
        try:
            options = {"rank": rank, "conv_rank": conv_rank, "alpha": alpha, "beta": beta,
                       "clamp": merge_core.lora.extract.CLAMP_QUANTILE if clamp else None,
                       "save_dtype": merge_core.lora.files.precision_dtype(save_precision, "save_precision")}
            name = extract_from_models(node, model_a, model_b, clip_a, clip_b, options, filename, overwrite)
        except MergeError as e:
            raise node_error(node, e) from None
        return _outputs(name)


class SuperMergerLoraExtractTwo(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        import folder_paths

        loras = [params.NO_LORA] + folder_paths.get_filename_list("loras")
        blocks_tip = ("Optional block weights: a LoRA block preset (ALL, INS, IND, …; scaled by the ratio) or "
                      "12/17/20/26 numbers used as written; empty = the ratio for every block.")
        ratio_tip = "Its ratio (acts as r², or as r with same_to_strength)."
        entry_tip = ("name:ratio[:blocks], linked from another LoRA node's lora_list; when linked it replaces the "
                     "LoRA, ratio and blocks chosen above.")
        inputs = []
        for i, role in ((1, "The first LoRA (a); the result keeps its alphas."), (2, "The second LoRA (b).")):
            inputs += [io.Combo.Input(f"lora_{i}", options=loras, default=params.NO_LORA,
                                      tooltip=f"{role} A file of the loras folder."),
                       io.Float.Input(f"ratio_{i}", default=1.0, min=-10.0, max=10.0, step=0.01, tooltip=ratio_tip),
                       io.String.Input(f"blocks_{i}", default="", tooltip=blocks_tip)]
        return io.Schema(
            node_id="SuperMergerLoraExtractTwo", display_name=DISPLAY["SuperMergerLoraExtractTwo"],
            category=CATEGORY,
            description="SuperMerger's 'Extract from two LoRAs': each LoRA is merged alone (its ratio acts "
                        "squared), then every factor becomes lerp(a, b, α)·lerp(d, 1−d, β) with "
                        "d = ((cos(a, b) + 1)/2)^γ. The LoRAs must have the same modules and ranks.",
            inputs=inputs + [
                io.Float.Input("alpha", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="0: the first LoRA's factors … 1: the second's."),
                io.Float.Input("beta", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="0: keep what the two LoRAs share … 1: keep what they do not."),
                io.Float.Input("gamma", default=1.0, min=0.0, max=20.0, step=0.01,
                               tooltip="Smoothness: higher values make the shared/different choice sharper."),
                io.Boolean.Input("same_to_strength", default=False,
                                 tooltip="A ratio acts like the LoRA strength (r, sign kept) instead of r²."),
                io.Combo.Input("save_precision", options=PRECISIONS, default="fp16",
                               tooltip=SAVE_TIPS["save_precision"]),
                io.String.Input("filename", default="", tooltip="File name in the loras folder (empty: "
                                                                "<lora_1>_<ratio>+<lora_2>_<ratio>)."),
                io.Boolean.Input("overwrite", default=False, tooltip=SAVE_TIPS["overwrite"]),
                io.String.Input("entry_1", optional=True, force_input=True, tooltip=entry_tip),
                io.String.Input("entry_2", optional=True, force_input=True, tooltip=entry_tip)],
            outputs=OUTPUTS, is_output_node=True)

    @classmethod
    def execute(cls, lora_1, ratio_1, blocks_1, lora_2, ratio_2, blocks_2, alpha, beta, gamma, same_to_strength,
                save_precision, filename, overwrite, entry_1=None, entry_2=None) -> io.NodeOutput:
        node = "SuperMergerLoraExtractTwo"
        try:
            entries = params.two_entries(lora_1, ratio_1, blocks_1, lora_2, ratio_2, blocks_2, entry_1, entry_2)
            name = extract_from_loras(node, entries, alpha, beta, gamma, same_to_strength, save_precision,
                                      filename, overwrite)
        except MergeError as e:
            raise node_error(node, e) from None
        return _outputs(name)


NODES: list = [SuperMergerLoraExtract, SuperMergerLoraExtractTwo]
