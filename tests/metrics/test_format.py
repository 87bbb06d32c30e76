"""The one interval format."""

from __future__ import annotations

import math

from itsm_core.metrics.format import fmt_ci


def test_value_with_and_without_interval():
    assert fmt_ci(0.5123, 0.49, 0.534) == "0.512 [0.490, 0.534]"
    assert fmt_ci(0.5123) == "0.512"
    assert fmt_ci(0.5, float("nan"), 0.6) == "0.500"
    assert fmt_ci(None) == "–" and fmt_ci(math.nan, 0.1, 0.2) == "–"


def test_signed_differences_and_digits():
    assert fmt_ci(0.039, 0.029, 0.049, signed=True) == "+0.039 [+0.029, +0.049]"
    assert fmt_ci(-0.0026, -0.0055, 0.0001, digits=4, signed=True) == \
        "-0.0026 [-0.0055, +0.0001]"
