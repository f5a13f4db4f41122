"""The XYZ plot as two nodes (SPEC §9). The plan node turns a merge's inputs and three axes into per-cell lists
(MODEL, CLIP, seed, prompt, recipe) that the user's own CLIPTextEncode / KSampler / VAEDecode run once per cell;
the grid node lays the rendered cells out with SuperMerger's labels.

Cells are lazy merges: each distinct recipe becomes one patched clone of model A (nothing is computed until the
sampler loads it), and cells that differ only in seed or prompt get the very same MODEL/CLIP object, so
ComfyUI computes the merged weights once for them.
"""
from __future__ import annotations

import numpy as np
import torch
from comfy_api.v0_0_2 import io, ui

from . import checkpoints, params, patching
from ._engine import merge_core
from .common import CATEGORY, TIPS, Params, show_notes
from .messages import DISPLAY, node_error
from .xyz_grid import XYZPlot, grids_for

xyz = merge_core.xyz
Plot = io.Custom("SUPERMERGER_XYZ_PLAN")
PLAN_NODE, GRID_NODE = "SuperMergerXYZPlan", "SuperMergerXYZGrid"
VALUE_TIP = ("Values of this axis: comma-separated (alpha, beta, seed, models, blocks, calcmode…), one per line "
             "(prompt, mbw, adjust) or blocks separated by a blank line (elemental, prompt2). '|' splits the plot "
             "into separate grids.")


class _Models:
    """The models a plot's cells name: the connected ones under their loader names, any other checkpoint loaded
    through ComfyUI's own loader once per plot."""

    def __init__(self, names: dict, connected: dict):
        self.by_name = {}
        for role in ("a", "b", "c"):
            model, clip = connected.get(role, (None, None))
            if model is not None:
                self.by_name.setdefault(names[role], (model, clip))

    def get(self, name: str, where: str):
        if name not in self.by_name:
            import comfy.sd
            import folder_paths

            path = checkpoints.checkpoint_path(checkpoints.resolve_checkpoint(name, where), where)
            out = comfy.sd.load_checkpoint_guess_config(
                str(path), output_vae=False, output_clip=True,
                embedding_directory=folder_paths.get_folder_paths("embeddings"))
            self.by_name[name] = (out[0], out[1])
        return self.by_name[name]


def build_plot(node: str, base_recipe, seed: int, prompt: str, axes: tuple, connected: dict, names: dict,
               record: bool = True):
    """(per-cell lists, XYZPlot). Raises MergeError naming the axis or the cell."""
    import comfy.model_management as mm
    import comfy.utils

    family = patching.family_of(connected["a"][0])
    history = checkpoints.history()
    grids = xyz.plan_plot(xyz.Base(base_recipe, seed, prompt, family.blocks), axes,
                          lambda merge_id: history.get(merge_id).recipe)
    models = _Models(names, connected)
    use_clips = any(clip is not None for _model, clip in connected.values())
    merges, jobs, entries = {}, [], {}
    out = {"model": [], "clip": [], "seed": [], "prompt": [], "recipe": []}
    earlier = history.entries() if record else []
    plot = XYZPlot(grids, [], jobs, plot_id=earlier[-1].id + 1 if earlier else 1)
    cells = [c for g in grids for c in g.cells]
    bar = comfy.utils.ProgressBar(len(cells))
    for n, cell in enumerate(cells):
        mm.throw_exception_if_processing_interrupted()  # Interrupt stops between cells
        key = cell.recipe.to_json(indent=None)
        if key not in merges:
            r = cell.recipe
            ma, ca = models.get(r.model_a, "model_A")
            mb, cb = models.get(r.model_b, "model_B")
            mc, cc = models.get(r.model_c, "model_C") if r.model_c else (None, None)
            # CLIPs take part when the node's own clip inputs do (a checkpoint an axis loads brings one anyway)
            clips = (ca, cb, cc) if use_clips else (None, None, None)
            model, clip, merge_plan = patching.merge_models(node, r, ma, mb, mc, *clips)
            merges[key] = (model, clip, merge_plan)
            jobs.append(patching.merge_job(model))
            for note in merge_plan.notes:
                if note not in plot.notes:
                    plot.notes.append(note)
        model, clip, merge_plan = merges[key]
        if record and key not in entries:
            entries[key] = _record(history, merge_plan, plot, cell)
        out["model"].append(model)
        out["clip"].append(clip)
        out["seed"].append(int(cell.seed))
        out["prompt"].append(cell.prompt)
        out["recipe"].append(merge_plan.recipe.to_json())
        bar.update_absolute(n + 1, len(cells))
    for g in grids:
        plot.notes += [n for n in g.notes if n not in plot.notes]
        plot.titles.append(xyz.grid_title(g.cells[0].recipe, g.axes))
    return out, plot


def _record(history, merge_plan, plot: XYZPlot, cell) -> object:
    """Every merge of a plot in the history under one plot ID (the history ID its first merge was expected to
    get), found by searching for `XYZ plot <ID>`; cells that share a merge share its record."""
    x, y, z = cell.index
    tag = f"XYZ plot {plot.plot_id} part {cell.part + 1} cell x{x + 1} y{y + 1} z{z + 1}"
    name = f"{tag}: {merge_core.merge.display_name(merge_plan)}"
    return history.append(merge_plan.recipe, name, {}, f"xyz plot {plot.plot_id}", merge_plan.family.name)


class SuperMergerXYZPlan(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        types = list(xyz.AXIS_TYPES)
        axis_inputs = []
        for name, default, values in (("x", "alpha", "0,0.5,1"), ("y", "none", ""), ("z", "none", "")):
            axis_inputs += [
                io.Combo.Input(f"{name}_type", options=types, default=default,
                               tooltip=f"What the {name.upper()} axis varies (none: no {name.upper()} axis)."),
                io.String.Input(f"{name}_values", multiline=True, default=values, tooltip=VALUE_TIP)]
        return io.Schema(
            node_id=PLAN_NODE, display_name=DISPLAY[PLAN_NODE], category=f"{CATEGORY}/xyz",
            description="SuperMerger's XYZ plot: one lazy merge per cell, as lists (x fastest) that your own "
                        "text encoder, sampler and decoder run once per cell; feed the images and the plan to "
                        "XYZ Plot Grid.",
            inputs=[io.Model.Input("model_a", tooltip="Model A: the base of every cell's merge."),
                    io.Model.Input("model_b", tooltip="Model B."),
                    io.Model.Input("model_c", optional=True, tooltip="Model C (add difference, triple sum, sum "
                                                                      "twice; empty = model A)."),
                    io.Clip.Input("clip_a", optional=True, tooltip="CLIP of model A: merged with the U-Net."),
                    io.Clip.Input("clip_b", optional=True, tooltip="CLIP of model B."),
                    io.Clip.Input("clip_c", optional=True, tooltip="CLIP of model C."),
                    io.Combo.Input("mode", options=list(merge_core.MODES), default="weight_sum",
                                   tooltip="The merge mode (a beta axis turns weight sum into sum twice)."),
                    io.Combo.Input("calcmode", options=list(merge_core.calcmodes.CALCMODES), default="normal",
                                   tooltip=TIPS["calcmode"]),
                    io.Float.Input("alpha", default=0.5, min=-2.0, max=3.0, step=0.001, tooltip=TIPS["alpha"]),
                    io.Float.Input("beta", default=0.25, min=-2.0, max=3.0, step=0.001, tooltip=TIPS["beta"]),
                    io.Float.Input("gamma", default=0.3, min=-1.0, max=20.0, step=0.01, tooltip=TIPS["gamma"]),
                    *axis_inputs,
                    io.Int.Input("seed", default=0, min=-1, max=4294967293,
                                 tooltip="Generation seed of every cell a seed axis does not set (-1: one random "
                                         "seed for the whole plot)."),
                    io.String.Input("prompt", multiline=True, default="",
                                    tooltip="Prompt of every cell a prompt axis does not set."),
                    Params.Input("weights", optional=True, tooltip=TIPS["weights"] + " A random axis needs a "
                                                                                      "Dice Roll here.")],
            outputs=[io.Model.Output(display_name="MODEL", is_output_list=True, tooltip="Each cell's merged model."),
                     io.Clip.Output(display_name="CLIP", is_output_list=True,
                                    tooltip="Each cell's merged CLIP (None without CLIP inputs)."),
                     io.Int.Output(display_name="seed", is_output_list=True, tooltip="Each cell's sampling seed."),
                     io.String.Output(display_name="prompt", is_output_list=True, tooltip="Each cell's prompt."),
                     io.String.Output(display_name="recipe", is_output_list=True,
                                      tooltip="Each cell's merge as recipe JSON."),
                     Plot.Output(display_name="plan", tooltip="For XYZ Plot Grid: axes, labels and cells.")],
            hidden=[io.Hidden.prompt, io.Hidden.unique_id])

    @classmethod
    def execute(cls, model_a, model_b, mode, calcmode, alpha, beta, gamma, x_type, x_values, y_type, y_values,
                z_type, z_values, seed, prompt, model_c=None, clip_a=None, clip_b=None, clip_c=None,
                weights=None) -> io.NodeOutput:
        node = PLAN_NODE
        try:
            found = params.loader_names(cls.hidden.prompt, cls.hidden.unique_id)
            names = {"a": found.get("model_a", "model A"), "b": found.get("model_b", "model B"),
                     "c": found.get("model_c", "model C")}
            recipe = params.build_recipe(mode, calcmode, alpha, beta, gamma, weights, False,
                                         (names["a"], names["b"], names["c"] if model_c is not None else None))
            connected = {"a": (model_a, clip_a), "b": (model_b, clip_b), "c": (model_c, clip_c)}
            out, plot = build_plot(node, recipe, seed, prompt,
                                   ((x_type, x_values), (y_type, y_values), (z_type, z_values)), connected, names)
        except params.MergeError as e:
            raise node_error(node, e) from None
        show_notes(cls.hidden.unique_id, plot.notes)
        return io.NodeOutput(out["model"], out["clip"], out["seed"], out["prompt"], out["recipe"], plot)


class SuperMergerXYZGrid(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id=GRID_NODE, display_name=DISPLAY[GRID_NODE], category=f"{CATEGORY}/xyz",
            description="Lays the cells rendered from an XYZ Plot Plan out as labelled grids: one per Z value and "
                        "per '|' part. Save them with ComfyUI's Save Image.",
            is_input_list=True,
            inputs=[io.Image.Input("images", tooltip="Every cell's image (the VAE Decode after the plan's sampler)."),
                    Plot.Input("plan", tooltip="The plan output of XYZ Plot Plan."),
                    io.Boolean.Input("swap_xy", default=False, tooltip="Columns become rows and rows columns.")],
            outputs=[io.Image.Output(display_name="grids", is_output_list=True,
                                     tooltip="One labelled grid per Z value and per '|' part (and per image of "
                                             "a batch)."),
                     io.Image.Output(display_name="cells", tooltip="Every cell's image as one batch."),
                     io.String.Output(display_name="summary",
                                      tooltip="The grids' labels, the effective checker's percentages and how "
                                              "often merged weights were computed.")])

    @classmethod
    def execute(cls, images, plan, swap_xy) -> io.NodeOutput:
        node = GRID_NODE
        plot = plan[0]
        try:
            grids, lines = grids_for(plot, images, bool(swap_xy[0]))
        except merge_core.MergeError as e:
            raise node_error(node, e) from None
        computed = sum(j.computations for j in plot.jobs if j is not None)
        lines.insert(0, f"XYZ plot {plot.plot_id}: {len(images)} of {plot.cell_count()} cells, {len(plot.jobs)} "
                        f"distinct merges, merged weights computed {computed} times")
        tensors = [torch.from_numpy(np.asarray(g, dtype=np.float32) / 255.0)[None] for g in grids]
        cells = torch.cat([i for i in images], dim=0) if images else torch.zeros(1, 64, 64, 3)
        text = "\n".join(lines)
        return io.NodeOutput(tensors, cells, text, ui=ui.PreviewImage(torch.cat(tensors[:1]), cls=cls))


NODES = [SuperMergerXYZPlan, SuperMergerXYZGrid]
