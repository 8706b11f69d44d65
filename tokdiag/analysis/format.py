"""Figures and names for people: units, signs, intervals, short names.

Everything tokdiag prints (verdict reasons, the answer, tables, chart labels)
formats its numbers here, so a figure reads the same wherever it appears:

>>> format_value(10752, "bytes"), format_value(1, "objects"), format_value(1500, "entries")
('10.5 KiB', '1 object', '1,500 entries')
>>> format_signed(10752, "bytes"), format_rate(-2, "objects")
('+10.5 KiB', '-2 objects/step')
>>> format_interval(1.0, 1.0, "objects"), format_interval(0.9, 1.1, "objects")
('', '0.9 to 1.1 objects')
>>> short_name("watch", "myapp.jobs.Job"), short_name("cache", "app.render:_TEMPLATES")
(('Job', 'myapp.jobs'), ('_TEMPLATES', 'app.render'))
"""

from __future__ import annotations

import math

__all__ = [
    "COUNT_UNITS",
    "format_interval",
    "format_rate",
    "format_signed",
    "format_value",
    "measure_words",
    "short_name",
]

COUNT_UNITS = frozenset({"objects", "entries", "blocks", "files"})
"""Units of exact counts (not sizes)."""

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


def format_signed(value: float | None, unit: str) -> str:
    """:func:`format_value` with its sign always written: ``+10.5 KiB``, ``-3 objects``, ``+0 B``."""
    text = format_value(value, unit)
    if text == "n/a" or text.startswith("-"):
        return text
    return "+" + text


def format_interval(low: float | None, high: float | None, unit: str, *, per_step: bool = False) -> str:
    """``low to high`` in ``unit`` (the unit written once), or ``""`` when the interval says nothing.

    An interval carries no information when a bound is missing or infinite
    (too few snapshots) or when both bounds print the same (an exact count:
    ``1 object to 1 object``; ``0 B to 0 B``): the caller prints nothing
    rather than that.

    >>> format_interval(10240.0, 11264.0, "bytes", per_step=True)
    '10 KiB to 11 KiB/step'
    >>> format_interval(0.0, 0.0, "bytes"), format_interval(float("nan"), 3.0, "objects")
    ('', '')
    """
    if low is None or high is None or not (math.isfinite(float(low)) and math.isfinite(float(high))):
        return ""
    lo, hi = format_value(low, unit), format_value(high, unit)
    if lo == hi:
        return ""
    if unit != "bytes" and unit:
        # "0.9 to 1.1 objects": the count unit once, at the end (plural: the span is not one object)
        lo = lo.rsplit(" ", 1)[0]
        hi = hi.rsplit(" ", 1)[0] + " " + unit
    return f"{lo} to {hi}" + ("/step" if per_step else "")


def short_name(probe: str, subject: str) -> tuple[str, str]:
    """(short name, where it lives) of a series' subject: ``("Job", "myapp.jobs")``.

    Classes and census or native types are shown by their bare name with the
    module beside it (long qualified names are cut off in tables); cache
    labels ``"module:attr"`` by the attribute; everything else as it is.
    """
    if probe in ("watch", "census", "native") and "." in subject and ":" not in subject:
        module, name = subject.rsplit(".", 1)
        return name, module
    if probe == "cache" and ":" in subject:
        module, name = subject.rsplit(":", 1)
        return name, module
    return subject, ""


_MEASURES: dict[tuple[str, str], str] = {
    ("process", "rss"): "RSS",
    ("process", "uss"): "USS",
    ("process", "traced"): "memory traced by tracemalloc",
    ("process", "gc_objects"): "objects tracked by the garbage collector",
    ("watch", "count"): "instances",
    ("watch", "bytes"): "reachable bytes",
    ("census", "count"): "instances",
    ("census", "bytes"): "shallow bytes",
    ("census", "unowned_bytes"): "bytes no other owner holds",
    ("native", "count"): "instances",
    ("native", "native_bytes"): "native memory (estimate)",
    ("cache", "entries"): "entries",
    ("cache", "bytes"): "deep bytes",
    ("cache", "native_bytes"): "native memory (estimate)",
    ("cache", "distinct_payloads"): "distinct payloads",
    ("alloc", "bytes"): "bytes allocated here (tracemalloc)",
    ("alloc", "count"): "blocks allocated here (tracemalloc)",
    ("allocator", "free"): "free memory kept by the allocator",
    ("allocator", "in_use"): "heap in use",
    ("tracker", "self_bytes"): "tokdiag's own memory",
}


def measure_words(probe: str, metric: str) -> str:
    """What a ``(probe, metric)`` series measures, in words: ``("watch", "bytes")`` -> ``"reachable bytes"``.

    The probe is not named (``("census", "bytes")`` -> ``"shallow bytes"``);
    unknown pairs read as the metric with underscores as spaces.
    """
    known = _MEASURES.get((probe, metric))
    return known if known is not None else metric.replace("_", " ")
