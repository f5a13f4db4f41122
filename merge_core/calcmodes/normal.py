from ..modes import FORMULAS
from . import register


@register("normal")
def normal(a, b, c, p):
    return FORMULAS[p.mode](a, b, c, p.alpha, p.beta, p.old_calc)
