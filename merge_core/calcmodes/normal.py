from ..modes import FORMULAS
from . import register


def _unchanged(mode, alpha, beta) -> bool:
    return mode == "weight_sum" and alpha == 0  # (1 − 0)·A + 0·B


@register("normal", unchanged=_unchanged)
def normal(a, b, c, p):
    return FORMULAS[p.mode](a, b, c, p.alpha, p.beta, p.old_calc)
