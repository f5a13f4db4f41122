"""The one message format every node uses for bad input: `<Display name> · <input>: <reason>`, raised by the
node whose input is wrong. ComfyUI-free, so the text is tested without ComfyUI.

The display names live here, and the schemas read them from here, so a message and the node's title
cannot drift apart.
"""
from __future__ import annotations

from ._engine import merge_core

MergeError = merge_core.MergeError
SEP = " · "

DISPLAY = {
    "SuperMergerWeightSum": "Weight Sum (SuperMerger)",
    "SuperMergerAddDifference": "Add Difference (SuperMerger)",
    "SuperMergerTripleSum": "Triple Sum (SuperMerger)",
    "SuperMergerSumTwice": "Sum Twice (SuperMerger)",
    "SuperMergerBlockWeights": "Block Weights (SuperMerger)",
    "SuperMergerElemental": "Elemental Merge (SuperMerger)",
    "SuperMergerIncludeExclude": "Include / Exclude (SuperMerger)",
    "SuperMergerDiceRoll": "Dice Roll (SuperMerger)",
    "SuperMergerAdjust": "Adjust (SuperMerger)",
    "SuperMergerAnalysis": "Model Similarity (SuperMerger)",
    "SuperMergerElements": "Model Elements (SuperMerger)",
    "SuperMergerCheckpointMerge": "Checkpoint Merge (SuperMerger)",
    "SuperMergerSave": "Save Checkpoint (SuperMerger)",
    "SuperMergerHistory": "Merge History (SuperMerger)",
    "SuperMergerSaveImage": "Save Image with Merge ID (SuperMerger)",
    "SuperMergerMetadata": "Model Metadata (SuperMerger)",
    "SuperMergerHistoryWeights": "History Weight Analysis (SuperMerger)",
    "SuperMergerLoraToModel": "LoRA to Model (SuperMerger)",
    "SuperMergerLoraMerge": "Merge LoRAs (SuperMerger)",
    "SuperMergerLoraExtract": "Extract LoRA from Models (SuperMerger)",
    "SuperMergerLoraExtractTwo": "Extract LoRA from two LoRAs (SuperMerger)",
    "SuperMergerXYZPlan": "XYZ Plot Plan (SuperMerger)",
    "SuperMergerXYZGrid": "XYZ Plot Grid (SuperMerger)",
}


def message(node_id: str, err: MergeError) -> str:
    """`<Display name> · <input>: <reason>` (`<Display name> · <reason>` when no input is to blame). A `where`
    that already starts with the node's id (an error located by a helper that was handed the id) is not
    prefixed twice."""
    where = err.where or ""
    for prefix in (f"{node_id}:", node_id):
        while where.startswith(prefix):
            where = where[len(prefix):].strip()
    display = DISPLAY.get(node_id, node_id)
    return f"{display}{SEP}{where}: {err.reason}" if where else f"{display}{SEP}{err.reason}"


def node_error(node_id: str, err: Exception) -> Exception:
    """The exception a node raises for `err`: a ValueError with `message` for a MergeError, anything else
    (a bug, out of memory) unchanged."""
    if isinstance(err, MergeError):
        return ValueError(message(node_id, err))
    return err


def validation(node_id: str, check, *args):
    """For a node's `validate_inputs`: True, or the message of the MergeError `check(*args)` raises, which
    ComfyUI shows on the node before anything runs."""
    try:
        check(*args)
    except MergeError as e:
        return message(node_id, e)
    return True
