"""Saving a ComfyUI model as a checkpoint: ComfyUI's own conversion to checkpoint key names, then the engine's
atomic writer with SuperMerger's save options, into an allowed folder only."""
from __future__ import annotations

from pathlib import Path

import comfy.model_management as mm

from ._engine import merge_core
from .checkpoints import checkpoint_path
from .common import interrupted, progress, stops_on_interrupt

MergeError = merge_core.MergeError
DESTINATIONS = ("checkpoints", "output")


def destination_dir(destination: str) -> Path:
    import folder_paths

    if destination == "checkpoints":
        return Path(folder_paths.get_folder_paths("checkpoints")[0])
    if destination == "output":
        return Path(folder_paths.get_output_directory())
    raise MergeError("destination", f"'{destination}' is not one of {', '.join(DESTINATIONS)}")


def _plan_for(recipe):
    """The plan of a recipe whose inputs are checkpoints ComfyUI knows (headers only, nothing merged), for
    SuperMerger's metadata and name; None for in-graph merges, whose inputs have no file."""
    paths = {}
    for field in ("model_a", "model_b", "model_c"):
        name = getattr(recipe, field)
        if name:
            try:
                paths[field] = str(checkpoint_path(name, field))
            except MergeError:
                return None, None
    inputs = merge_core.open_inputs(recipe.replace(**paths))
    try:
        return merge_core.make_plan(recipe, inputs), inputs
    except BaseException:
        inputs.close()
        raise


def metadata_and_name(recipe_text, options) -> tuple:
    """(metadata, automatic name) for a save: SuperMerger's full metadata when the inputs are known files,
    else our recipe alone."""
    if not recipe_text:
        return {"format": "pt"}, None
    recipe = merge_core.Recipe.from_json(recipe_text)
    plan, inputs = _plan_for(recipe)
    if plan is None:
        meta = {"format": "pt", "supermerger_recipe": recipe.to_json(indent=None)}
        return (meta if options.metadata else {"format": "pt"}), None
    try:
        name = merge_core.merge.display_name(plan)
        meta = merge_core.merge.build_metadata(plan, inputs) if options.metadata else {"format": "pt"}
    finally:
        inputs.close()
    return meta, name


def save(node: str, model, clip, vae, filename: str, destination: str, options, recipe_text=None) -> str:
    base = destination_dir(destination)
    metadata, auto_name = metadata_and_name(recipe_text, options)
    if not filename.strip():
        if auto_name is None:
            raise MergeError("filename", "is needed: without a checkpoint merge's recipe there is no automatic name")
        channels = model.model.model_config.unet_config.get("in_channels")  # 9: inpainting, 8: pix2pix
        filename = merge_core.naming.file_name(auto_name, options.dtype == merge_core.merge.PRECISIONS["fp16"],
                                               in_channels=channels)
    path = merge_core.naming.inside(base, filename)
    if path.exists() and not options.overwrite:
        raise MergeError("filename", f"{path.name} already exists in {destination}; turn on overwrite to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)

    # ComfyUI's own route to checkpoint key names (what its CheckpointSave does), weights patched first
    load = [model] + ([clip.load_model()] if clip is not None else [])
    mm.load_models_gpu(load, force_patch_weights=True)
    clip_sd = clip.get_sd() if clip is not None else None
    vae_sd = vae.get_sd() if vae is not None else None
    sd = model.model.state_dict_for_saving(clip_sd, vae_sd, None)
    with stops_on_interrupt():
        merge_core.merge.save_state_dict(sd, path, options, metadata,
                                         progress=progress(),
                                         cancel=interrupted)
    return path.relative_to(base.resolve()).as_posix()
