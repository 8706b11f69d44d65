"""Time to the limit: when a leaking service reaches its memory limit and is killed.

From the RSS verdict of a run (growth per step, with its 99% interval),
the pace of the run (steps per hour, from the snapshots' ``elapsed_s``) and
a memory limit (given, or the cgroup limit recorded in the journal header
as ``memory_limit`` by :func:`tokdiag.probes.limits.header_entry`),
:func:`time_to_limit` says when the limit is reached::

    >>> import pandas as pd
    >>> rows = [("svc", s, s * 5.0, "process", "process", "rss", 100 * 2**20 + s * 1.8 * 2**20, "bytes")
    ...         for s in range(0, 61, 5)]
    >>> tl = pd.DataFrame(rows, columns=["run", "step", "elapsed_s", "probe", "subject", "metric", "value", "unit"])
    >>> print(time_to_limit(tl, "4GiB", per="request").text)
    at +1.8 MiB per request and ~720 requests per hour, the 4 GiB limit is reached in ~3 h

How it is computed
------------------
- growth per step: the Theil-Sen slope of ``process/rss`` after its
  warm-up (:func:`tokdiag.analysis.classify`); the pessimistic time uses
  the top of its 99% interval, the optimistic time the bottom;
- steps per hour: steps over elapsed seconds between the first and last
  snapshot of the same window (after warm-up), so a slow first step (imports)
  does not set the pace; its own uncertainty is not included;
- headroom: the limit minus RSS at the last snapshot. A cgroup counts every
  process in it and their page cache: with several workers in one
  container, sum their growth (or expect the limit sooner);
- only a ``leak`` has a time to the limit: anything else returns None.

The result says ``status``: ``"limit"`` (a time), ``"over"`` (RSS is
already above the limit), ``"max"`` (no limit is set) or ``"unknown"``
(no limit given and none recorded).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from tokdiag.analysis.classification import classify
from tokdiag.analysis.format import format_value
from tokdiag.errors import ConfigError
from tokdiag.recording.timeline import check_timeline

__all__ = ["STATUSES", "TimeToLimit", "format_duration", "parse_size", "time_to_limit"]

STATUSES: tuple[str, ...] = ("limit", "over", "max", "unknown")
"""Every :attr:`TimeToLimit.status`."""

_UNITS = {
    "": 1, "b": 1,
    "k": 1 << 10, "ki": 1 << 10, "kib": 1 << 10, "kb": 10**3,
    "m": 1 << 20, "mi": 1 << 20, "mib": 1 << 20, "mb": 10**6,
    "g": 1 << 30, "gi": 1 << 30, "gib": 1 << 30, "gb": 10**9,
    "t": 1 << 40, "ti": 1 << 40, "tib": 1 << 40, "tb": 10**12,
}


def parse_size(value: int | float | str) -> int:
    """Bytes from ``4294967296``, ``"4GiB"``, ``"4Gi"``, ``"4G"``, ``"512 MiB"`` or ``"4GB"``.

    ``KiB``/``Ki``, ``MiB``/``Mi``, ... and bare ``K``, ``M``, ``G``, ``T``
    are powers of 1024 (as Docker's ``--memory 4g``); ``KB``, ``MB``,
    ``GB``, ``TB`` are powers of 1000 (as Kubernetes' ``4G``).

    >>> parse_size("4GiB"), parse_size("4g"), parse_size("1.5 GB"), parse_size(1024)
    (4294967296, 4294967296, 1500000000, 1024)
    """
    if isinstance(value, bool):
        raise ConfigError(f"limit={value!r}: pass a number of bytes or a size such as '4GiB'")
    if isinstance(value, (int, float, np.integer, np.floating)):
        n = float(value)
    elif isinstance(value, str):
        m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([A-Za-z]*)\s*", value)
        if not m or m.group(2).lower() not in _UNITS:
            raise ConfigError(f"limit={value!r} is not a size; write bytes or a number with a unit, e.g. '4GiB', "
                              "'512MiB', '4G' (1024-based) or '4GB' (1000-based)")
        n = float(m.group(1)) * _UNITS[m.group(2).lower()]
    else:
        raise ConfigError(f"limit={value!r}: pass a number of bytes or a size such as '4GiB'")
    if not math.isfinite(n) or n <= 0:
        raise ConfigError(f"limit={value!r}: a memory limit must be a positive size, e.g. '4GiB'")
    return round(n)


def _round2(v: float) -> float:
    """Two significant figures: 723 -> 720, 1.83 -> 1.8, 14.6 -> 15."""
    return float(f"{v:.2g}") if v > 0 else v


def _number(v: float) -> str:
    r = _round2(v)
    if r >= 10:
        return f"{r:,.0f}"
    return f"{r:.1f}".removesuffix(".0")


def format_duration(seconds: float | None) -> str:
    """A duration for people, rounded: ``~40 min``, ``~3 h``, ``~2.5 days``, ``~6 weeks``, ``~4 months``.

    Below a minute it is ``under a minute``; infinite is ``never``; None is ``n/a``.

    >>> [format_duration(s) for s in (30, 2400, 3 * 3600, 1.83 * 3600, 60 * 3600, 50 * 86400, 4e9)]
    ['under a minute', '~40 min', '~3 h', '~1.8 h', '~2.5 days', '~7 weeks', '~130 years']
    """
    if seconds is None:
        return "n/a"
    s = float(seconds)
    if math.isnan(s):
        return "n/a"
    if s == math.inf:
        return "never"
    if s < 60:
        return "under a minute"
    for size, one, many, below in ((60, "min", "min", 90), (3600, "h", "h", 48), (86400, "day", "days", 14),
                                   (7 * 86400, "week", "weeks", 9), (30.4375 * 86400, "month", "months", 24),
                                   (365.25 * 86400, "year", "years", math.inf)):
        v = s / size
        if _round2(v) < below:
            text = _number(v) if v < 3 or v >= 10 else f"{round(v):.0f}"  # ~1.8 h, ~7 weeks, ~15 h
            return f"~{text} {one if text == '1' else many}"
    raise AssertionError("unreachable")  # pragma: no cover


@dataclass(frozen=True, slots=True)
class TimeToLimit:
    """When a leaking run reaches its memory limit; see the module docstring.

    Bytes are per step (``per`` names a step: ``"step"``, ``"request"``);
    ``steps_per_hour`` is None when the snapshots carry no elapsed time.
    ``steps_left`` / ``seconds`` are the central estimate,
    ``*_pessimistic`` from the fastest growth of the 99% interval (sooner),
    ``*_optimistic`` from the slowest (later); all None unless ``status``
    is ``"limit"`` (0 when ``"over"``). ``text`` is the sentence for the
    answer, ``headline`` a short form.
    """

    status: str
    limit_bytes: int | None
    limit_source: str
    rss_bytes: float
    per_step: float
    per_step_low: float
    per_step_high: float
    per: str
    steps_per_hour: float | None
    per_hour: float | None
    steps_left: float | None
    steps_left_pessimistic: float | None
    steps_left_optimistic: float | None
    seconds: float | None
    seconds_pessimistic: float | None
    seconds_optimistic: float | None
    text: str
    headline: str

    def __str__(self) -> str:
        return self.text


def _plural(word: str) -> str:
    return word if word.endswith("s") else word + "s"


_CLOCK_STEPS = ("second", "minute", "hour")
"""Steps that are time already (a recorder's ``per="second"``): their pace goes without saying."""


def _pace(per: str, steps_per_hour: float | None) -> str:
    if steps_per_hour is None or per in _CLOCK_STEPS:
        return ""
    if steps_per_hour >= 1:
        return f" and ~{_number(steps_per_hour)} {_plural(per)} per hour"
    return f" and ~{_number(steps_per_hour * 24)} {_plural(per)} per day"


def _limit_of(header: dict[str, Any], limit_bytes: Any) -> tuple[str, int | None, str]:
    """``(status, bytes, source)`` of the limit to use: given, given when recording, the cgroup's, or unknown."""
    if limit_bytes is not None:
        return "limit", parse_size(limit_bytes), "given"
    recorded = (header.get("params") or {}).get("limit")
    if recorded is not None:  # td.record(limit=...), tokdiag attach --limit
        return "limit", parse_size(recorded), "given when recording"
    rec = header.get("memory_limit")
    if isinstance(rec, dict) and "bytes" in rec:
        b = rec.get("bytes")
        source = str(rec.get("source") or "recorded")
        if b is None:
            return "max", None, source
        return "limit", int(b), source
    return "unknown", None, ""


def time_to_limit(run_or_timeline: Any, limit_bytes: int | float | str | None = None, *,
                  per: str | None = None) -> TimeToLimit | None:
    """When the run's RSS reaches ``limit_bytes``; None when its RSS is not a leak.

    ``run_or_timeline``: a :class:`tokdiag.Run` (its header may carry the
    cgroup limit the process ran under) or a timeline DataFrame of one run.
    ``limit_bytes``: bytes or a size string (``"4GiB"``, see
    :func:`parse_size`); default: the limit given when recording
    (``params["limit"]`` in the header: ``td.record(limit=...)``,
    ``tokdiag attach --limit``), else the cgroup limit recorded there.
    ``per``: what a step is, for the text (``"request"``, ``"task"``);
    default: the run's ``params["step_unit"]``, else ``"step"``.
    """
    if isinstance(run_or_timeline, pd.DataFrame):
        header: dict[str, Any] = {}
    else:
        header = dict(getattr(run_or_timeline, "header", None) or {})
    tl = check_timeline(run_or_timeline, "run_or_timeline")
    runs = list(pd.unique(tl["run"]))
    if len(runs) > 1:
        raise ConfigError(f"the timeline holds {len(runs)} runs {runs!r}; pass one, e.g. "
                          f"timeline[timeline['run'] == {runs[0]!r}]")
    if per is None:
        per = str((header.get("params") or {}).get("step_unit") or "step")
    rss = tl[(tl["probe"] == "process") & (tl["subject"] == "process") & (tl["metric"] == "rss")]
    if rss.empty:
        raise ConfigError("the timeline has no process rss, so there is no growth to extrapolate; track the run with "
                          "the process probe (td.track always adds it)")
    rss = rss.groupby("step", sort=True).agg(value=("value", "last"), elapsed=("elapsed_s", "last")).dropna(
        subset=["value"])
    steps = rss.index.to_numpy(dtype=float)
    values = rss["value"].to_numpy(dtype=float)
    v = classify(steps, values, unit="bytes")
    if v.verdict != "leak":
        return None

    tail = rss[rss.index >= steps[0] + v.warmup_steps]
    steps_per_hour = _steps_per_hour(tail) or _steps_per_hour(rss)
    per_hour = None if steps_per_hour is None else v.per_step * steps_per_hour
    status, limit, source = _limit_of(header, limit_bytes)
    current = float(values[-1])
    growth = f"+{format_value(v.per_step, 'bytes')} per {per}{_pace(per, steps_per_hour)}"
    nan_fields: dict[str, Any] = dict(steps_left=None, steps_left_pessimistic=None, steps_left_optimistic=None,
                                      seconds=None, seconds_pessimistic=None, seconds_optimistic=None)

    def result(status: str, text: str, headline: str, **fields: Any) -> TimeToLimit:
        return TimeToLimit(status=status, limit_bytes=limit, limit_source=source, rss_bytes=current,
                           per_step=v.per_step, per_step_low=v.per_step_low, per_step_high=v.per_step_high, per=per,
                           steps_per_hour=steps_per_hour, per_hour=per_hour, text=text, headline=headline,
                           **{**nan_fields, **fields})

    if status == "max":
        return result("max", f"at {growth}, RSS grows without bound and no memory limit is set ({source}: max); the "
                             "machine's memory runs out first", "no memory limit set")
    if status == "unknown":
        return result("unknown", f"at {growth}, RSS grows without bound; the memory limit is unknown: pass one "
                                 "(limit_bytes='4GiB') to know when it is reached", "limit unknown")
    assert limit is not None
    size = format_value(float(limit), "bytes")
    headroom = float(limit) - current
    if headroom <= 0:
        return result("over", f"RSS ({format_value(current, 'bytes')}) is already above the {size} limit",
                      f"above the {size} limit", **{k: 0.0 for k in nan_fields})
    left = headroom / v.per_step
    left_p = headroom / v.per_step_high if v.per_step_high > 0 else math.inf
    left_o = headroom / v.per_step_low if v.per_step_low > 0 else math.inf
    fields: dict[str, Any] = dict(steps_left=left, steps_left_pessimistic=left_p, steps_left_optimistic=left_o)
    if steps_per_hour is None:
        when, lo_txt, hi_txt = (f"~{_number(x)} more {_plural(per)}" for x in (left, left_p, left_o))
    else:
        secs = [x / steps_per_hour * 3600.0 for x in (left, left_p, left_o)]
        fields.update(seconds=secs[0], seconds_pessimistic=secs[1], seconds_optimistic=secs[2])
        when, lo_txt, hi_txt = (format_duration(s) for s in secs)
    bounds = "" if lo_txt == when == hi_txt else f" ({lo_txt} to {hi_txt} at the 99% bounds of the growth)"
    return result("limit", f"at {growth}, the {size} limit is reached in {when}{bounds}",
                  f"{size} limit in {when}", **fields)


def _steps_per_hour(snaps: pd.DataFrame) -> float | None:
    if len(snaps) < 2:
        return None
    elapsed = snaps["elapsed"].to_numpy(dtype=float)
    steps = snaps.index.to_numpy(dtype=float)
    dt = float(elapsed[-1] - elapsed[0])
    ds = float(steps[-1] - steps[0])
    if not (math.isfinite(dt) and dt > 0 and ds > 0):
        return None
    return ds / dt * 3600.0
