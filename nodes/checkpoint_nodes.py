"""Nodes that work with checkpoint files: merge them by name (SuperMerger's panel in one node), save a model,
and reload any earlier merge from the history."""
from __future__ import annotations


from comfy_api.v0_0_2 import io, ui

from . import checkpoints, params, saving
from .common import CATEGORY, TIPS, Params
from .messages import DISPLAY, node_error

NO_MODEL = "(none)"
MODES = list(params.merge_core.MODES)


def _checkpoint_names() -> list:
    import folder_paths

    return folder_paths.get_filename_list("checkpoints")


class SuperMergerCheckpointMerge(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        names = _checkpoint_names()
        calcmodes = list(params.merge_core.calcmodes.CALCMODES)
        return io.Schema(
            node_id="SuperMergerCheckpointMerge", display_name=DISPLAY["SuperMergerCheckpointMerge"],
            category=f"{CATEGORY}/checkpoint",
            description="SuperMerger's merge panel: checkpoints by name, merged tensor by tensor from their "
                        "files (only model A's size in memory), ready for the sampler; every merge gets an ID "
                        "in the history.",
            inputs=[
                io.Combo.Input("model_a", options=names, tooltip="Model A: the base; its keys and dtypes define "
                                                                 "the result."),
                io.Combo.Input("model_b", options=names, tooltip="Model B (read from its file, never loaded)."),
                io.Combo.Input("model_c", options=[NO_MODEL] + names, default=NO_MODEL,
                               tooltip="Model C for add difference, triple sum and sum twice ((none) = model A "
                                       "for add difference)."),
                io.Combo.Input("mode", options=MODES, default="weight_sum",
                               tooltip="weight_sum A·(1−α)+B·α; add_difference A+(B−C)·α; triple_sum "
                                       "A·(1−α−β)+B·α+C·β; sum_twice (A·(1−α)+B·α)·(1−β)+C·β."),
                io.Combo.Input("calcmode", options=calcmodes, default="normal",
                               tooltip=TIPS["calcmode"] + " trainDifference and extract use add difference."),
                io.Float.Input("alpha", default=0.5, min=-2.0, max=3.0, step=0.001, tooltip=TIPS["alpha"]),
                io.Float.Input("beta", default=0.25, min=-2.0, max=3.0, step=0.001, tooltip=TIPS["beta"]),
                io.Float.Input("gamma", default=0.3, min=-1.0, max=20.0, step=0.01, tooltip=TIPS["gamma"]),
                io.String.Input("weights_alpha", multiline=True, default="",
                                tooltip="Block weights for α (comma-separated, or a preset name); empty = α for "
                                        "every block."),
                io.String.Input("weights_beta", multiline=True, default="", tooltip="Block weights for β."),
                io.String.Input("elemental", multiline=True, default="",
                                tooltip="Elemental merge rules, e.g. IN05:attn2:0.2 (one per line or comma)."),
                io.Combo.Input("include_exclude", options=["off", "include", "exclude"], default="off",
                               tooltip="Merge only (include) or all but (exclude) the blocks and elements "
                                       "below."),
                io.String.Input("blocks", default="", tooltip="Blocks for include/exclude, e.g. BASE IN00 VAE."),
                io.String.Input("elements", default="", tooltip="Key fragments for include/exclude, comma-separated."),
                io.String.Input("adjust", default="", tooltip="Adjust: IN,OUT,OUT2,CONT,BRI,COL1,COL2,COL3 "
                                                              "(empty = off)."),
                io.Boolean.Input("use_old_calc", default=False, tooltip=TIPS["use_old_calc"]),
                io.Boolean.Input("merge_vae", default=True,
                                 tooltip="Merge the VAE with the BASE weight as SuperMerger does; off keeps A's."),
                io.Int.Input("cache_models", default=2, min=0, max=3,
                             tooltip="Keep up to this many inputs in RAM between runs (1 = A, 2 = A and B, 3 = "
                                     "all), when RAM allows; 0 empties the cache."),
                Params.Input("weights", optional=True, tooltip=TIPS["weights"] + " Dice rolls come from here."),
                io.String.Input("recipe", optional=True, force_input=True,
                                tooltip="A recipe (e.g. from the History node): when connected it replaces "
                                        "every setting above except merge_vae and cache_models."),
            ],
            outputs=[io.Model.Output(display_name="MODEL"), io.Clip.Output(display_name="CLIP"),
                     io.Vae.Output(display_name="VAE"),
                     io.String.Output(display_name="recipe", tooltip="The merge as recipe JSON (seed as drawn)."),
                     io.Int.Output(display_name="merge_id", tooltip="The merge's ID in the history.")])

    @classmethod
    def execute(cls, model_a, model_b, model_c, mode, calcmode, alpha, beta, gamma, weights_alpha, weights_beta,
                elemental, include_exclude, blocks, elements, adjust, use_old_calc, merge_vae, cache_models,
                weights=None, recipe=None) -> io.NodeOutput:
        node = "SuperMergerCheckpointMerge"
        try:
            if recipe:
                r = params.merge_core.Recipe.from_json(recipe)
                r = r.replace(**{f: checkpoints.resolve_checkpoint(getattr(r, f), f"recipe {f}")
                                 for f in ("model_a", "model_b", "model_c") if getattr(r, f)})
            else:
                fields = params.panel(weights, weights_alpha, weights_beta, elemental, include_exclude, blocks,
                                      elements)
                r = params.build_recipe(mode, calcmode, alpha, beta, gamma, fields, use_old_calc,
                                        (model_a, model_b, None if model_c == NO_MODEL else model_c), adjust)
            model, clip, vae, plan, entry = checkpoints.merge(node, r, merge_vae, cache_models)
        except params.MergeError as e:
            raise node_error(node, e) from None
        name = params.merge_core.merge.display_name(plan)
        notes = "".join(f"\n• {n}" for n in plan.notes)
        return io.NodeOutput(model, clip, vae, plan.recipe.to_json(), entry.id,
                             ui=ui.PreviewText(f"merge ID {entry.id}: {name}{notes}"))


class SuperMergerSave(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SuperMergerSave", display_name=DISPLAY["SuperMergerSave"], category=f"{CATEGORY}/checkpoint",
            description="Save a model (and its CLIP and VAE) as .safetensors, in the precision asked for, with the "
                        "merge recipe and input hashes as metadata. Written atomically; never over an existing "
                        "file unless overwrite is on.",
            is_output_node=True,
            inputs=[
                io.Model.Input("model", tooltip="The model to save (e.g. a merge)."),
                io.String.Input("filename", default="",
                                tooltip="File name (subfolders allowed, inside the destination only); empty = "
                                        "SuperMerger's automatic name from the recipe."),
                io.Combo.Input("destination", options=list(saving.DESTINATIONS), default="checkpoints",
                               tooltip="ComfyUI's checkpoints folder (ready for the loaders) or its output folder."),
                io.Combo.Input("precision", options=params.merge_core.precision.choices(), default="fp16",
                               tooltip="Dtype of the stored weights (ComfyUI holds fp32 on CPU)."),
                io.Boolean.Input("prune", default=False, tooltip="Keep only U-Net, text encoder and VAE weights."),
                io.Boolean.Input("save_metadata", default=True,
                                 tooltip="Store the recipe and the inputs' sha256 (SuperMerger's sd_merge_recipe)."),
                io.Boolean.Input("reset_clip_ids", default=False, tooltip="Rewrite SD1's CLIP position ids as 0…76."),
                io.Boolean.Input("overwrite", default=False, tooltip="Replace a file of the same name."),
                io.Clip.Input("clip", optional=True, tooltip="The text encoder to save with it."),
                io.Vae.Input("vae", optional=True, tooltip="The VAE to save with it (connect another VAE to bake "
                                                           "it in)."),
                io.String.Input("recipe", optional=True, force_input=True,
                                tooltip="The merge's recipe output: metadata and the automatic name."),
            ],
            outputs=[io.String.Output(display_name="path", tooltip="Where the file was written, relative to the "
                                                                   "destination folder.")])

    @classmethod
    def execute(cls, model, filename, destination, precision, prune, save_metadata, reset_clip_ids, overwrite,
                clip=None, vae=None, recipe=None) -> io.NodeOutput:
        node = "SuperMergerSave"
        options = params.merge_core.SaveOptions(precision=precision, prune=prune, metadata=save_metadata,
                                                reset_clip_ids=reset_clip_ids, overwrite=overwrite)
        try:
            rel = saving.save(node, model, clip, vae, filename, destination, options, recipe)
        except params.MergeError as e:
            raise node_error(node, e) from None
        return io.NodeOutput(rel, ui=ui.PreviewText(f"saved {destination}/{rel}"))


class SuperMergerHistory(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SuperMergerHistory", display_name=DISPLAY["SuperMergerHistory"], category=f"{CATEGORY}/checkpoint",
            description="Any earlier merge by its ID (−1 = the last listed, −2 = the one before), or found by "
                        "words; its recipe feeds Checkpoint Merge to run it again exactly.",
            inputs=[io.Int.Input("id", default=-1, min=-1000000, max=1000000,
                                 tooltip="Merge ID; −1 = the last merge, −2 = the one before (among the search "
                                         "matches when searching)."),
                    io.String.Input("search", default="", tooltip="Words to look for (model names, mode, calcmode, "
                                                                  "weights…); empty = all merges."),
                    io.Combo.Input("match", options=["and", "or"], default="and",
                                   tooltip="and: every word must match; or: any word."),
                    io.Int.Input("listing", default=20, min=1, max=1000, tooltip="How many merges to list."),
                    io.Boolean.Input("files_only", default=True, optional=True,
                                     tooltip="List only merges of checkpoint files (Checkpoint Merge, command line), "
                                             "which Checkpoint Merge can run again; off: in-graph merges too.")],
            outputs=[io.String.Output(display_name="recipe", tooltip="The chosen merge's recipe JSON."),
                     io.Int.Output(display_name="merge_id"),
                     io.String.Output(display_name="listing", tooltip="The matching merges, newest first.")])

    @classmethod
    def fingerprint_inputs(cls, **_inputs):
        return checkpoints.history_stamp()

    @classmethod
    def execute(cls, id, search, match, listing, files_only=True) -> io.NodeOutput:
        node = "SuperMergerHistory"
        try:
            found = checkpoints.history().search(search, match)  # newest first
            if files_only:
                found = [e for e in found if e.origin != "in-graph"]
            if not found:
                what = f"matches '{search}'" if search.strip() else "has been recorded yet"
                raise params.MergeError("search" if search.strip() else "id",
                                        f"no {'checkpoint ' if files_only else ''}merge {what}")
            if id < 0:
                if -id > len(found):
                    raise params.MergeError("id", f"{id} goes back further than the {len(found)} merges listed")
                entry = found[-id - 1]
            else:
                entry = next((e for e in found if e.id == id), None)
                if entry is None:
                    raise params.MergeError("id", f"no merge with ID {id} among the {len(found)} listed")
        except params.MergeError as e:
            raise node_error(node, e) from None
        text = params.merge_core.history.table(found[:listing])
        return io.NodeOutput(entry.recipe.to_json(), entry.id, text,
                             ui=ui.PreviewText(f"merge ID {entry.id} ({entry.time}): {entry.name}\n\n{text}"))


def _draw_id(images, text: str):
    """SPEC §10.9 "save merged model ID to image": the ID drawn at the top left, font size (w + h) // 25."""
    import numpy as np
    import torch
    from PIL import Image, ImageDraw, ImageFont

    out = []
    for image in images:
        pil = Image.fromarray(np.clip(image.cpu().numpy() * 255.0, 0, 255).astype(np.uint8))
        size = max(8, (pil.width + pil.height) // 25)
        try:
            font = ImageFont.load_default(size=size)
        except TypeError:  # pillow < 10.1
            font = ImageFont.load_default()
        ImageDraw.Draw(pil).text((size // 4, size // 4), text, fill="white", font=font, stroke_width=max(1, size // 12),
                                 stroke_fill="black")
        out.append(torch.from_numpy(np.asarray(pil, dtype=np.float32) / 255.0))
    return torch.stack(out)


class SuperMergerSaveImage(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SuperMergerSaveImage", display_name=DISPLAY["SuperMergerSaveImage"],
            category=f"{CATEGORY}/checkpoint", is_output_node=True,
            description="Saves images like Save Image and adds the merge ID and recipe to the PNG info "
                        "(supermerger_id, supermerger_recipe), so any picture leads back to its merge; optionally "
                        "draws the ID on the image.",
            inputs=[io.Image.Input("images", tooltip="The images to save."),
                    io.String.Input("filename_prefix", default="SuperMerger", tooltip="As for Save Image."),
                    io.Int.Input("merge_id", force_input=True, tooltip="The merge ID from Checkpoint Merge."),
                    io.Boolean.Input("draw_id", default=False, tooltip="Also write 'ID n' at the top left of the "
                                                                       "image (SuperMerger's 'save ID to image')."),
                    io.String.Input("recipe", optional=True, force_input=True,
                                    tooltip="The merge's recipe, stored in the PNG info too.")],
            hidden=[io.Hidden.prompt, io.Hidden.extra_pnginfo])

    @classmethod
    def execute(cls, images, filename_prefix, merge_id, draw_id, recipe=None) -> io.NodeOutput:
        import json
        from types import SimpleNamespace

        info = dict(cls.hidden.extra_pnginfo or {}, supermerger_id=merge_id)
        if recipe:
            info["supermerger_recipe"] = json.loads(recipe)
        if draw_id:
            images = _draw_id(images, f"ID {merge_id}")
        # ComfyUI's own PNG writer, given our PNG info next to the prompt and workflow it always stores
        meta = SimpleNamespace(hidden=SimpleNamespace(prompt=cls.hidden.prompt, extra_pnginfo=info))
        results = ui.ImageSaveHelper.save_images(images, filename_prefix, io.FolderType.output, meta)
        return io.NodeOutput(ui=ui.SavedImages(results))


NODES = [SuperMergerCheckpointMerge, SuperMergerSave, SuperMergerHistory, SuperMergerSaveImage]
