"""ComfyUI nodes: thin adapters from ComfyUI objects to merge_core (the only code that touches comfy.*
lives in `patching.py` and `extension.py`)."""
