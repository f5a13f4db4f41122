"""What every node module shares: the category, the parameter chain's type, common tooltips and the way
engine work stops on ComfyUI's Interrupt."""
from contextlib import contextmanager

from comfy_api.v0_0_2 import io

from ._engine import merge_core

CATEGORY = "SuperMerger"
Params = io.Custom("SUPERMERGER_PARAMS")

TIPS = {
    "alpha": "α: how much of B (the difference B−C for add difference). Replaced per block by the weights input.",
    "beta": "β: how much of C (triple sum, sum twice); the slice position for tensor/tensor2; feature "
            "choice for extract.",
    "gamma": "γ: extract's sharpness (option(gamma)); other calcmodes ignore it.",
    "calcmode": "How each tensor is combined. 'normal' is the formula above; see the help page for the others.",
    "weights": "Block weights, elemental, Include/Exclude and dice settings from the SuperMerger parameter nodes.",
    "use_old_calc": "SuperMerger's 'use old calc method': plain formulas in the inputs' precision.",
}


def run_context():
    """The engine's run context for one node execution: ComfyUI's progress bar on the node, Interrupt as the
    cancel check, and threads beside the host's own torch setting (never changed: the sampler shares it)."""
    import comfy.utils

    bar = comfy.utils.ProgressBar(1)  # its total becomes the engine's
    return merge_core.run.RunContext(progress=lambda done, total, _phase: bar.update_absolute(done, total),
                                     cancel=interrupted)


def interrupted() -> bool:
    """The engine's cancel check: true once ComfyUI's Interrupt was pressed."""
    import comfy.model_management as mm

    return mm.processing_interrupted()


@contextmanager
def stops_on_interrupt():
    """Engine work inside stops on Interrupt (the engine raises MergeInterrupted when `interrupted()` turns
    true); ComfyUI is handed its own interrupt exception, so the run shows as interrupted, not failed."""
    import comfy.model_management as mm

    try:
        yield
    except merge_core.MergeInterrupted:
        mm.throw_exception_if_processing_interrupted()
        raise


def show_notes(node_id, notes: list) -> None:
    """A merge's notes (entries that match no key, a mode switched by the calcmode…) as text on the node and in
    the server log, so nothing the user typed is ignored silently."""
    if not notes:
        return
    import logging

    text = "\n".join(f"• {n}" for n in notes)
    logging.warning("SuperMerger (node %s):\n%s", node_id, text)
    try:
        from server import PromptServer

        PromptServer.instance.send_progress_text(text, str(node_id))
    except Exception:  # noqa: BLE001 - no server (a script): the log has it
        pass
