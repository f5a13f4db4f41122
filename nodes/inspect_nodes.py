"""Nodes that look at models and merges without changing anything: a file's metadata, and how the block
weights of earlier merges spread."""
from __future__ import annotations

import numpy as np
import torch
from comfy_api.v0_0_2 import io, ui

from . import checkpoints, params
from .chart import weight_chart
from .common import CATEGORY
from .messages import DISPLAY, node_error

NONE = "(none)"


def image_tensor(image) -> torch.Tensor:
    """A pillow image as ComfyUI's IMAGE (batch, height, width, channel floats in 0–1)."""
    return torch.from_numpy(np.asarray(image, dtype=np.float32) / 255.0).unsqueeze(0)


def write_table(node: str, filename: str, rows) -> str:
    """A CSV in ComfyUI's output folder (subfolders allowed, nothing outside it); returns its relative path."""
    from pathlib import Path

    import folder_paths

    base = Path(folder_paths.get_output_directory())
    try:
        path = params.merge_core.naming.inside(base, filename, ".csv")
        path.parent.mkdir(parents=True, exist_ok=True)
        params.merge_core.csvfile.write_csv(path, rows)
    except params.MergeError as e:
        where = "csv_filename" if e.where == "filename" else e.where
        raise node_error(node, params.MergeError(where, e.reason)) from None
    return path.relative_to(base.resolve()).as_posix()


class SuperMergerMetadata(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        import folder_paths

        return io.Schema(
            node_id="SuperMergerMetadata", display_name=DISPLAY["SuperMergerMetadata"], category=f"{CATEGORY}/analysis",
            description="The metadata in a checkpoint's or LoRA's safetensors header (a merge's recipe, training "
                        "tags, …) as indented JSON. Reads only the header.",
            inputs=[io.Combo.Input("ckpt_name", options=[NONE] + folder_paths.get_filename_list("checkpoints"),
                                   tooltip="A checkpoint to read."),
                    io.Combo.Input("lora_name", options=[NONE] + folder_paths.get_filename_list("loras"),
                                   default=NONE, tooltip="Or a LoRA (used when no checkpoint is chosen).")],
            outputs=[io.String.Output(display_name="metadata", tooltip="The metadata as JSON.")])

    @classmethod
    def execute(cls, ckpt_name, lora_name) -> io.NodeOutput:
        import folder_paths

        node = "SuperMergerMetadata"
        folder, name = ("checkpoints", ckpt_name) if ckpt_name != NONE else ("loras", lora_name)
        path = folder_paths.get_full_path(folder, name) if name != NONE else None
        if path is None:
            raise node_error(node, params.MergeError("ckpt_name", "choose a checkpoint or a LoRA"))
        try:
            text = params.merge_core.sources.metadata_json(path)
        except params.MergeError as e:
            raise node_error(node, e) from None
        return io.NodeOutput(text, ui=ui.PreviewText(f"{name}\n{text}"))


class SuperMergerHistoryWeights(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SuperMergerHistoryWeights", display_name=DISPLAY["SuperMergerHistoryWeights"],
            category=f"{CATEGORY}/analysis",
            description="For chosen merges from the history: the mean and spread (σ) of the α each block got, as a "
                        "table and a bar chart with ±σ whiskers — e.g. what the dice rolls you kept have in common.",
            inputs=[io.String.Input("ids", default="-1", tooltip="Merge IDs and ranges, e.g. 3, 5-8, -1 (−1 = the "
                                                                 "last merge)."),
                    io.String.Input("csv_filename", default="", optional=True,
                                    tooltip="Also save the table as CSV in the output folder (empty = don't).")],
            outputs=[io.String.Output(display_name="table", tooltip="block, mean, σ, 2σ, 3σ"),
                     io.Image.Output(display_name="chart", tooltip="Mean α per block with ±σ whiskers.")])

    @classmethod
    def fingerprint_inputs(cls, **_inputs):
        return checkpoints.history_stamp()

    @classmethod
    def execute(cls, ids, csv_filename="") -> io.NodeOutput:
        node = "SuperMergerHistoryWeights"
        analysis = params.merge_core.weight_analysis
        hist = checkpoints.history()
        try:
            entries = [hist.get(i) for i in analysis.parse_ids(ids)]
            stats = analysis.weight_stats(entries)
        except params.MergeError as e:
            raise node_error(node, e) from None
        text = stats.table_text()
        if csv_filename.strip():
            rel = write_table(node, csv_filename, [("block", "mean", "sigma", "2sigma", "3sigma"), *stats.rows()])
            text += f"\nsaved output/{rel}"
        chart = image_tensor(weight_chart(list(zip(stats.labels, stats.mean)), list(stats.std),
                                          # pillow's built-in font has no Greek letters
                                          f"alpha per block over merges {ids.strip()} (mean +/- sigma)"))
        return io.NodeOutput(text, chart, ui=ui.PreviewImage(chart, cls=cls))


NODES = [SuperMergerMetadata, SuperMergerHistoryWeights]
