"""SuperMerger's merge engine, host-free: torch, numpy, scipy and safetensors only (never imports comfy).

Recipe → Plan (per key: keep A, or calcmode with α/β) → one executor, into a dict or a safetensors file.
"""
from . import analysis, csvfile, editor, history, run, steps, weight_analysis, xyz  # noqa: F401  (submodules the nodes use)
from .errors import MergeError, MergeInterrupted
from .executor import Inputs, run_plan
from .families import FAMILIES, Family, detect
from .merge import SaveOptions, make_plan, merge_to_dict, merge_to_file, open_inputs
from .plan import ModelInfo, Plan, Step, build_plan
from .recipe import MODES, Recipe
from .run import RunContext
from .sources import DictSource, SafetensorsFile, open_model

__all__ = ["MergeError", "MergeInterrupted", "Inputs", "run_plan", "FAMILIES", "Family", "detect", "SaveOptions",
           "make_plan", "merge_to_dict", "merge_to_file", "open_inputs", "ModelInfo", "Plan", "Step", "build_plan",
           "MODES", "Recipe", "RunContext", "DictSource", "SafetensorsFile", "open_model"]
