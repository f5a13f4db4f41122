"""Saving a ComfyUI model as a checkpoint: ComfyUI's own conversion to checkpoint key names, then the engine's
atomic writer with SuperMerger's save options, into an allowed folder only."""
from __future__ import annotations

from pathlib import Path

import torch

from ._engine import merge_core
from .checkpoints import checkpoint_path
from .common import run_context, stops_on_interrupt

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


def _history_name(recipe) -> str:
    """`merge_<ID>` for an in-graph merge the history holds (its inputs had no checkpoint names), else a plain
    name."""
    from .checkpoints import history

    wanted = recipe.to_json(indent=None)
    entry = next((e for e in history().search("") if e.recipe.to_json(indent=None) == wanted), None)
    return f"merge_{entry.id}" if entry is not None else AUTO_NAME


AUTO_NAME = "SuperMerger"  # a model that comes with no recipe


def metadata_and_name(recipe_text, options) -> tuple:
    """(metadata, automatic name, name tag) for a save: SuperMerger's full metadata and name when the inputs are known
    files (Checkpoint Merge, or an in-graph merge fed by checkpoint loaders), else our recipe alone and the
    merge's history ID."""
    if not recipe_text:
        return {"format": "pt"}, AUTO_NAME, ""
    recipe = merge_core.Recipe.from_json(recipe_text)
    plan, inputs = _plan_for(recipe)
    if plan is None:
        meta = {"format": "pt", "supermerger_recipe": recipe.to_json(indent=None)}
        return (meta if options.metadata else {"format": "pt"}), _history_name(recipe), ""
    try:
        name = merge_core.merge.display_name(plan)
        meta = merge_core.merge.build_metadata(plan, inputs) if options.metadata else {"format": "pt"}
    finally:
        inputs.close()
    return meta, name, merge_core.merge.name_tag(plan.recipe)


class _WithExtras(merge_core.DictSource):
    """A model in checkpoint key space, plus what ComfyUI's saving adds beside its U-Net and text encoder (the
    VAE, markers such as `v_pred`)."""

    def __init__(self, view, extras: dict):
        super().__init__(extras, view.name)
        self.view, self.family = view, view.family
        self._keys = view.keys() + [k for k in extras if k not in view]

    def keys(self):
        return list(self._keys)

    def __contains__(self, key):
        return key in self.view or key in self._t

    def shape(self, key):
        return self.view.shape(key) if key in self.view else super().shape(key)

    def dtype(self, key):
        return self.view.dtype(key) if key in self.view else super().dtype(key)

    def get(self, key):
        return self.view.get(key) if key in self.view else super().get(key)


def checkpoint_source(model, clip=None, vae=None):
    """What a checkpoint of this MODEL (CLIP, VAE) holds, key by key: U-Net and text-encoder weights computed
    when written (their patches — a lazy merge included — applied one key at a time, so no patched copy of the
    model is made), the rest from ComfyUI's own conversion for saving."""
    from . import patching

    view = patching.ModelView("model", model, clip)
    extras = model.model.state_dict_for_saving(None, vae.get_sd() if vae is not None else None, None)
    return _WithExtras(view, {k: v for k, v in extras.items() if k not in view})


def save(node: str, model, clip, vae, filename: str, destination: str, options, recipe_text=None) -> str:
    base = destination_dir(destination)
    metadata, auto_name, tag = metadata_and_name(recipe_text, options)
    if filename.strip():
        path = merge_core.naming.inside(base, filename)
        if path.exists() and not options.overwrite:
            raise MergeError("filename", f"{path.name} already exists in {destination}; turn on overwrite to "
                                         "replace it, or leave filename empty for an automatic name")
    else:  # an automatic name never fails: one that exists gets a number
        channels = model.model.model_config.unet_config.get("in_channels")  # 9: inpainting, 8: pix2pix
        path = merge_core.naming.free_name(base, auto_name, fp16=options.dtype == torch.float16,
                                           in_channels=channels, tag=tag)
    path.parent.mkdir(parents=True, exist_ok=True)

    src = checkpoint_source(model, clip, vae)
    with stops_on_interrupt():
        merge_core.merge.save_source(src, path, options, metadata, family=src.family, run=run_context())
    return path.relative_to(base.resolve()).as_posix()
