"""Numbers as analysis writes them in tables, captions and claims: one set of formatters, so a
value reads the same wherever it appears.

An undefined value (NaN or ±inf where a finite number is meant: fewer than two seeds, a
left-out run, no baseline) is written MISSING. Fixed decimals are rounded before they are
written, so a tiny negative number never shows as "-0.000".
"""

import math

import numpy as np

MISSING = "–"
TRUE_MINUS = "−"  # the typographic minus sign, for text drawn in figures


def fixed(x, digits: int = 3, *, signed: bool = False, minus: str = "-") -> str:
    """`x` with `digits` decimals; `signed` puts '+' before a positive value, `minus` is the minus sign."""
    x = float(x)
    if not math.isfinite(x):
        return MISSING
    text = f"{round(x, digits) + 0.0:{'+' if signed else ''}.{digits}f}"
    return text.replace("-", minus)


def interval(low, high, digits: int = 3, *, signed: bool = False) -> str:
    """'[low, high]', each bound as `fixed` writes it; MISSING when either bound is undefined."""
    if not (math.isfinite(float(low)) and math.isfinite(float(high))):
        return MISSING
    return f"[{fixed(low, digits, signed=signed)}, {fixed(high, digits, signed=signed)}]"


def estimate(value, digits: int = 3, *, signed: bool = False) -> str:
    """'mean [low, high]' of an `analysis.stats.Summary` or of a (point, low, high) tuple such as `sd_ratio`'s."""
    point, low, high = (value.mean, value.ci_low, value.ci_high) if hasattr(value, "ci_low") else value
    return f"{fixed(point, digits, signed=signed)} {interval(low, high, digits, signed=signed)}"


def significant(x) -> str:
    """`x` to three significant digits (scientific below 1e-3), '∞' / '−∞' for infinities, MISSING for NaN."""
    x = float(x)
    if math.isinf(x):
        return "∞" if x > 0 else f"{TRUE_MINUS}∞"
    if math.isnan(x):
        return MISSING
    return f"{x:.3g}" if abs(x) >= 1e-3 or x == 0 else f"{x:.2e}"


def knob_value(value) -> str:
    """A knob value as a label: 'true' / 'false', a categorical choice as it is, a whole number without
    decimals, else the shortest form."""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value)).lower()
    if isinstance(value, str):
        return value
    if float(value).is_integer() and abs(value) < 1e6:
        return str(int(value))
    return f"{float(value):g}"
