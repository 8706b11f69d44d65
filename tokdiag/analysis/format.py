"""Figures for people: a value or a rate in its series' unit (``1.21 MiB``, ``1,500 objects``, ``42.6 MiB/step``).

Verdict reasons, charts, headlines and reports all format through here, so a
figure reads the same everywhere.
"""

from __future__ import annotations

import math

__all__ = ["COUNT_UNITS", "format_rate", "format_value"]

COUNT_UNITS = frozenset({"objects", "entries", "blocks", "files"})
"""Units of exact counts (not sizes): see the every-interval rule in :mod:`tokdiag.analysis.classification`."""

_SINGULAR = {"objects": "object", "entries": "entry", "calls": "call", "blocks": "block", "files": "file"}


def format_value(value: float | None, unit: str) -> str:
    """A figure in its series' unit, for people: ``1.21 MiB``, ``512 B``, ``1,500 objects``, ``1 entry``.

    Bytes in binary units to three significant figures; counts as integers
    with thousands separators (fractions to three figures); ``n/a`` for
    None or a non-finite value. Verdict reasons and charts both use it.
    """
    if value is None or not math.isfinite(float(value)):
        return "n/a"
    v = float(value)
    if unit == "bytes":
        a = abs(v)
        for div, suffix in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
            if a >= div:
                return f"{v / div:.3g} {suffix}"
        return f"{v:.3g} B"
    a = abs(v)
    if a >= 1000:
        number = f"{v:,.0f}"
    elif a == int(a):
        number = f"{v:.0f}"
    else:
        number = f"{v:.3g}"
    if number in ("1", "-1"):  # "1 object", not "1 objects"
        unit = _SINGULAR.get(unit, unit)
    return f"{number} {unit}" if unit else number


def format_rate(value: float | None, unit: str) -> str:
    """:func:`format_value` per step: ``42.6 MiB/step``; ``n/a`` stays ``n/a``."""
    text = format_value(value, unit)
    return text if text == "n/a" else f"{text}/step"


