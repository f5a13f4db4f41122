"""What every node module shares: the category, the parameter chain's type and common tooltips."""
from comfy_api.v0_0_2 import io

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
