"""The one way a number with its confidence interval is written: ``0.512 [0.490, 0.534]``."""

from __future__ import annotations

import math
from typing import Any


def _missing(x: Any) -> bool:
    if x is None:
        return True
    try:
        return math.isnan(float(x))
    except (TypeError, ValueError):
        return True


def fmt_ci(value: Any, low: Any = None, high: Any = None, *, digits: int = 3,
           signed: bool = False) -> str:
    """``value [low, high]`` with ``digits`` decimals.

    Args:
        value: the point estimate; missing / NaN gives ``–``.
        low, high: the interval; missing gives the value alone.
        digits: decimals.
        signed: always print the sign (differences: ``+0.039 [+0.029, +0.049]``).
    """
    if _missing(value):
        return "–"
    spec = f"{'+' if signed else ''}.{digits}f"
    if _missing(low) or _missing(high):
        return format(float(value), spec)
    return f"{float(value):{spec}} [{float(low):{spec}}, {float(high):{spec}}]"
