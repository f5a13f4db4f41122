"""LoRA nodes (SPEC §13): apply LoRAs to a model with block weights, merge LoRAs into a file.

`SuperMergerLoraToModel` loads each LoRA with ComfyUI's own loader (`comfy.lora.load_lora` over the key maps
of `model_lora_keys_unet` / `model_lora_keys_clip`) and adds every weight's patch to clones of the inputs with
its block's ratio as the strength, so nothing is computed until the sampler loads the model, and the result
is what core LoraLoader gives at the same strength. `SuperMergerLoraMerge` writes a merged LoRA into the
loras folder. All maths is in merge_core.lora.
"""
from __future__ import annotations

from collections import OrderedDict
from importlib import import_module
from pathlib import Path

from comfy_api.v0_0_2 import io

from . import params
from ._engine import merge_core
from .common import interrupted, progress, stops_on_interrupt
from .lora_extract import output_path
from .messages import DISPLAY, node_error

for _module in ("files", "merge", "metadata", "names", "syntax"):  # merge_core.lora.<module> as attributes
    import_module(f"{merge_core.__name__}.lora.{_module}")

MergeError = merge_core.MergeError
CATEGORY = "SuperMerger/lora"
LIST_TIP = ("One entry per line or comma: name:ratio[:blocks]. name = a file in the loras folder (suffix optional); "
            "blocks = a LoRA block preset (ALL, INS, IND, INALL, MIDD, OUTD, OUTS, OUTALL, NONE, ALL0.5) scaled by "
            "the ratio, or 12/17/20/26 numbers (61 for Flux) used as they are, BASE (text encoder) first.")


def _lora_files(node: str, where: str, text: str):
    """[(path, LoraEntry)] of a LoRA list, names looked up in ComfyUI's loras folders."""
    import folder_paths

    entries = merge_core.lora.syntax.parse_list(text, where=where)
    available = folder_paths.get_filename_list("loras")
    out = []
    for entry in entries:
        rel = merge_core.lora.files.find_lora(entry.name, available, where)
        out.append((folder_paths.get_full_path_or_raise("loras", rel), entry))
    return out


class _LoadedLoras:
    """The last few LoRA files read, by path, size and mtime (graphs re-run with other ratios often)."""

    def __init__(self, size: int = 4):
        self.size, self._items = size, OrderedDict()

    def get(self, path: str):
        import comfy.utils

        st = Path(path).stat()
        key = (path, st.st_size, st.st_mtime_ns)
        if key not in self._items:
            self._items[key] = comfy.utils.load_torch_file(path, safe_load=True)
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        self._items.move_to_end(key)
        return self._items[key]


LOADED = _LoadedLoras()


def _family(model) -> str:
    """Only Flux has its own LoRA block ids; SD1/SD2/SDXL share the 26 (names.key_block_index)."""
    return merge_core.families.lora_family_of_model(model.get_key_patches("diffusion_model.")).name


def apply_loras(node: str, model, clip, text: str):
    """Clones of `model` (and `clip`) with the list's LoRAs added as ComfyUI LoRA patches, each weight at its
    block's ratio; weights whose ratio is 0 are not patched at all."""
    import comfy.lora
    import comfy.lora_convert
    import comfy.model_management as mm
    import comfy.utils

    files = _lora_files(node, "loras", text)
    family = _family(model)
    names = merge_core.lora.names
    key_map = comfy.lora.model_lora_keys_unet(model.model, {})
    if clip is not None:
        key_map = comfy.lora.model_lora_keys_clip(clip.cond_stage_model, key_map)
    model, clip = model.clone(), (clip.clone() if clip is not None else None)
    bar = comfy.utils.ProgressBar(len(files))
    for i, (path, entry) in enumerate(files):
        mm.throw_exception_if_processing_interrupted()
        weights = entry.weights_for(family, "loras")
        loaded = comfy.lora.load_lora(comfy.lora_convert.convert_lora(LOADED.get(path)), key_map)
        if not loaded:
            raise MergeError("loras", f"none of the modules of {entry.name} fits this model (a LoRA for "
                                               "another model type?)")
        by_ratio = {}
        for key, patch in loaded.items():
            model_key = key[0] if isinstance(key, tuple) else key
            ratio = float(weights[names.key_block_index(model_key, family)])
            if ratio != 0:
                by_ratio.setdefault(ratio, {})[key] = patch
        for ratio, patches in by_ratio.items():
            model.add_patches(patches, ratio)
            if clip is not None:
                clip.add_patches(patches, ratio)
        bar.update_absolute(i + 1, len(files))
    return model, clip


class SuperMergerLoraToModel(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SuperMergerLoraToModel", display_name=DISPLAY["SuperMergerLoraToModel"], category=CATEGORY,
            description="Apply one or more LoRAs with a ratio per block (SuperMerger's 'Merge to Checkpoint' and "
                        "LoRA Block Weight), lazily through ComfyUI's own LoRA patches; the inputs are untouched.",
            inputs=[io.Model.Input("model", tooltip="The model the LoRAs are applied to (it is not modified; a "
                                                    "patched copy is returned)."),
                    io.String.Input("loras", multiline=True, default="", tooltip=LIST_TIP),
                    io.Clip.Input("clip", optional=True, tooltip="Also apply the LoRAs' text-encoder modules "
                                                                 "(ratio of the BASE block).")],
            outputs=[io.Model.Output(display_name="MODEL", tooltip="The model with the LoRAs applied."),
                     io.Clip.Output(display_name="CLIP", tooltip="The CLIP with the LoRAs applied (None without "
                                                                 "a CLIP input).")])

    @classmethod
    def execute(cls, model, loras, clip=None) -> io.NodeOutput:
        node = "SuperMergerLoraToModel"
        try:
            return io.NodeOutput(*apply_loras(node, model, clip, loras))
        except MergeError as e:
            raise node_error(node, e) from None


RANKS = ["no", "auto", "4", "8", "16", "32", "64", "128", "256", "512", "768", "1024"]


def merge_to_loras_folder(node: str, text: str, rank: str, same_to_strength: bool, metadata: str,
                          precision: str, filename: str, overwrite: bool) -> str:
    """Merge the list's LoRAs into a file of the (first) loras folder; returns its name in that folder."""
    lora = merge_core.lora
    files = _lora_files(node, "loras", text)
    folder, out = output_path(node, filename, lora.merge.default_name(text))
    opened = []
    try:
        for path, entry in files:
            opened.append((lora.files.LoraFile.open(path, entry.name), entry))
        with stops_on_interrupt():
            lora.merge.merge_to_file(opened, out, rank, same_to_strength, metadata, precision, overwrite,
                                     progress=progress(),
                                     cancel=interrupted, where="loras")
    finally:
        for f, _ in opened:
            f.close()
    return out.relative_to(folder).as_posix()


class SuperMergerLoraMerge(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SuperMergerLoraMerge", display_name=DISPLAY["SuperMergerLoraMerge"], category=CATEGORY,
            description="Merge LoRAs into one LoRA file in the loras folder (SuperMerger's 'Merge LoRAs'): equal "
                        "ranks are summed factor by factor, or the weighted sum is decomposed again to a rank.",
            inputs=[io.String.Input("loras", multiline=True, default="", tooltip=LIST_TIP),
                    io.Combo.Input("rank", options=RANKS, default="no",
                                   tooltip="Remake dimension: no = sum the factors (equal ranks needed; a ratio r "
                                           "acts as r²); auto = re-decompose to the largest rank when ranks differ; "
                                           "a number = re-decompose to that rank (ratio acts as r)."),
                    io.Boolean.Input("same_to_strength", default=False,
                                     tooltip="A ratio acts like the LoRA strength (r, sign kept) instead of r² in "
                                             "the factor sum."),
                    io.Combo.Input("metadata", options=list(merge_core.lora.metadata.MODES), default="create new",
                                   tooltip="Metadata of the new file: create new (basic fields of the first LoRA), "
                                           "without output_name, merge (all inputs' metadata, tags united), save "
                                           "all, use first lora."),
                    io.Combo.Input("save_precision", options=params.merge_core.precision.choices(), default="fp16",
                                   tooltip="dtype of the saved tensors."),
                    io.String.Input("filename", default="", tooltip="File name in the loras folder (empty: the "
                                                                    "list with ',' → '+' and ':' → '_')."),
                    io.Boolean.Input("overwrite", default=False, tooltip="Replace a file of that name.")],
            outputs=[io.String.Output(display_name="lora_name", tooltip="The new file's name in the loras folder."),
                     io.String.Output(display_name="lora_list", tooltip="'name:1' for a LoRA to Model node.")],
            is_output_node=True)

    @classmethod
    def execute(cls, loras, rank, same_to_strength, metadata, save_precision, filename, overwrite) -> io.NodeOutput:
        node = "SuperMergerLoraMerge"
        try:
            name = merge_to_loras_folder(node, loras, rank, same_to_strength, metadata, save_precision, filename,
                                         overwrite)
        except MergeError as e:
            raise node_error(node, e) from None
        stem = name[: -len(".safetensors")]
        return io.NodeOutput(name, f"{stem}:1")


NODES: list = [SuperMergerLoraToModel, SuperMergerLoraMerge]
