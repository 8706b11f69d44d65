"""A/B: did a change (a fix, a patch, another configuration) change the growth?

:func:`compare` judges two runs with :func:`tokdiag.analysis.verdicts` and
puts them side by side per series (probe, subject, metric): each side's
verdict and growth per step with its 99% interval, the difference
``b - a`` per step with an interval, whether that difference is real, and
a one-word summary of the change.

The runs may come from separate processes or papermill runs: pass
:class:`tokdiag.Run` objects, timelines, or journal paths.
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tokdiag.analysis.thresholds import PRACTICAL_MIN
from tokdiag.analysis.verdicts import verdicts
from tokdiag.errors import ConfigError, TokdiagWarning
from tokdiag.recording.timeline import check_timeline

__all__ = ["CHANGES", "COMPARE_COLUMNS", "compare", "default_labels"]

COMPARE_COLUMNS: tuple[str, ...] = (
    "probe", "subject", "metric", "unit", "verdict_a", "verdict_b",
    "per_step_a", "per_step_a_low", "per_step_a_high",
    "per_step_b", "per_step_b_low", "per_step_b_high",
    "difference", "difference_low", "difference_high", "real", "change",
)
"""Columns of :func:`compare`, in order."""

CHANGES: tuple[str, ...] = ("fixed", "new leak", "less growth", "more growth", "unchanged", "not compared")
"""Every value of the ``change`` column."""

_SETTLED = {"flat", "bounded", "step"}


def _as_timeline(x: Any, what: str) -> tuple[pd.DataFrame, str, str | None]:
    """``(timeline, run name, host)`` from a Run, a timeline DataFrame, or a journal path (host: None if unknown)."""
    if isinstance(x, (str, os.PathLike)):
        from tokdiag.recording.run import load

        path = Path(x)
        if not path.exists():
            raise ConfigError(f"{what}={str(x)!r}: no such journal; pass a Run, a timeline, or the path of a "
                              "journal written by td.track(..., journal=...)")
        x = load(path)
    name = getattr(x, "name", None)
    header = getattr(x, "header", None)
    host = header.get("host") if type(header) is dict else None  # older journals have no host
    tl = check_timeline(x, what)
    runs = tl["run"].dropna().unique().tolist()
    if len(runs) > 1:
        raise ConfigError(f"{what} holds {len(runs)} runs ({runs[:4]}); compare one run with another: "
                          f"pass timeline[timeline['run'] == {runs[0]!r}]")
    if name is None:
        name = str(runs[0]) if runs else what
    return tl, str(name), None if host is None else str(host)


def _stem(x: Any) -> str | None:
    """The file stem of the journal a run came from (a path given, or ``run.journal``); None if unknown."""
    if isinstance(x, (str, os.PathLike)):
        return Path(x).stem
    journal = getattr(x, "journal", None) if not isinstance(x, pd.DataFrame) else None
    return Path(journal).stem if isinstance(journal, (str, os.PathLike)) else None


def default_labels(a: tuple[str, str | None], b: tuple[str, str | None]) -> tuple[str, str]:
    """Labels that tell two runs apart: their names, else their journals' file stems, else ``"A"`` and ``"B"``.

    ``a`` and ``b`` are ``(run name, journal stem or None)``. Two runs of one
    target are both named after it (``handle``), and ``"handle vs handle"``
    says nothing.

    >>> default_labels(("handle", "before"), ("handle", "after")), default_labels(("x", None), ("x", None))
    (('before', 'after'), ('A', 'B'))
    """
    if a[0] != b[0]:
        return a[0], b[0]
    if a[1] and b[1] and a[1] != b[1]:
        return a[1], b[1]
    return "A", "B"


def _span(tl: pd.DataFrame) -> float:
    steps = pd.to_numeric(tl["step"], errors="coerce").dropna()
    return float(steps.max() - steps.min()) if len(steps) else 0.0


def _change(va: Any, vb: Any, real: bool, diff: float, probe: str) -> str:
    a_missing = not isinstance(va, str)
    b_missing = not isinstance(vb, str)
    if (a_missing or b_missing) and probe != "census":
        # a watched class, cache or process series one run did not measure (other watch/caches): no evidence
        # either way. A census type below the census' thresholds is left out, so its absence is evidence.
        return "not compared"
    if va == "leak" and (b_missing or vb in _SETTLED):
        return "fixed"
    if vb == "leak" and (a_missing or va in _SETTLED):
        return "new leak"
    if real and diff < 0:
        return "less growth"
    if real and diff > 0:
        return "more growth"
    return "unchanged"


def compare(a: Any, b: Any, *, labels: tuple[str, str] | None = None, project_to: int = 10_000) -> pd.DataFrame:
    """Two runs side by side, per series; columns :data:`COMPARE_COLUMNS`.

    ``a`` is the baseline (e.g. the code as shipped), ``b`` the variant (e.g.
    with the fix). Each is a :class:`tokdiag.Run`, a timeline, or a journal
    path. ``labels`` name them (default: the run names; for two runs of the
    same name, their journals' file stems, else ``"A"`` and ``"B"``: see
    :func:`default_labels`) and are kept in ``df.attrs["labels"]``. ``project_to`` is passed to the verdicts.
    Runs whose journal headers name different hosts (e.g. two runs of a
    batch on a Dask cluster) raise a :class:`tokdiag.errors.TokdiagWarning`:
    memory figures from different machines are not comparable as such.

    Per series (probe, subject, metric):

    - ``verdict_a`` / ``verdict_b`` and ``per_step_*``: each run's verdict
      and Theil-Sen growth per step with its 99% Sen interval (see
      :mod:`tokdiag.analysis.classification`). A series present in only one run
      has NaN on the other side.
    - ``difference`` = ``per_step_b - per_step_a``. Its interval is the
      conservative combination of the two intervals:
      ``[b_low - a_high, b_high - a_low]``, every difference of a value
      inside one interval and a value inside the other. If each interval
      holds its true slope with 99% probability, this one holds the true
      difference with at least 98% (Bonferroni), without assuming the two
      runs' noise alike or independent. An infinite bound (too few
      snapshots) makes it infinite.
    - ``real``: the difference's interval excludes 0 *and* the difference
      adds up to at least the practical minimum of its unit
      (:data:`tokdiag.analysis.PRACTICAL_MIN`: 64 KiB, 8 objects, ...) over
      the shorter of the two runs, the same test :func:`classify` applies
      to call growth a leak.
    - ``change``: ``"fixed"`` (a leaks; b is flat, bounded or a step, or the
      census type is gone), ``"new leak"`` (the reverse), else ``"less growth"`` /
      ``"more growth"`` when the difference is real, else ``"unchanged"``.
      An inconclusive side never makes a "fixed" or a "new leak" on its own.
      A watch, cache or process series that only one run measured (the runs
      watched different classes or caches) is ``"not compared"``.

    >>> import pandas as pd
    >>> cols = ["run", "step", "elapsed_s", "probe", "subject", "metric", "value", "unit"]
    >>> a = pd.DataFrame([("a", s, 0.0, "watch", "app.Agent", "count", float(s), "objects")
    ...                   for s in range(0, 100, 10)], columns=cols)
    >>> b = a.assign(run="b", value=5.0)
    >>> out = compare(a, b)[["subject", "verdict_a", "verdict_b", "difference", "real", "change"]]
    >>> out.to_dict("records")  # doctest: +NORMALIZE_WHITESPACE
    [{'subject': 'app.Agent', 'verdict_a': 'leak', 'verdict_b': 'flat', 'difference': -1.0, 'real': True,
      'change': 'fixed'}]
    """
    ta, name_a, host_a = _as_timeline(a, "a")
    tb, name_b, host_b = _as_timeline(b, "b")
    if host_a and host_b and host_a != host_b:
        warnings.warn(f"runs {name_a!r} and {name_b!r} ran on different hosts ({host_a}, {host_b}): their RSS and "
                      "byte figures may differ for that alone (allocator, library builds, page size); compare runs "
                      "from one host, or weigh only object counts", TokdiagWarning, stacklevel=2)
    if labels is None:
        labels = default_labels((name_a, _stem(a)), (name_b, _stem(b)))
    elif (not isinstance(labels, (tuple, list)) or len(labels) != 2
          or not all(isinstance(x, str) for x in labels)):
        raise ConfigError(f"labels={labels!r}: pass two names, e.g. labels=('as shipped', 'with the fix')")
    va = verdicts(ta, project_to=project_to)
    vb = verdicts(tb, project_to=project_to)
    keys = ["probe", "subject", "metric"]
    keep = ["unit", "verdict", "per_step", "per_step_low", "per_step_high"]
    m = pd.merge(va[keys + keep], vb[keys + keep], on=keys, how="outer", suffixes=("_a", "_b"), sort=True)
    unit = m["unit_a"].where(m["unit_a"].notna(), m["unit_b"])
    pa, pa_lo, pa_hi = (m[f"{c}_a"].to_numpy(dtype=float) for c in ("per_step", "per_step_low", "per_step_high"))
    pb, pb_lo, pb_hi = (m[f"{c}_b"].to_numpy(dtype=float) for c in ("per_step", "per_step_low", "per_step_high"))
    with np.errstate(invalid="ignore"):
        diff = pb - pa
        lo = pb_lo - pa_hi
        hi = pb_hi - pa_lo
    span = min(_span(ta), _span(tb))
    real: list[bool] = []
    change: list[str] = []
    for i in range(len(m)):
        minimum = PRACTICAL_MIN.get(str(unit.iloc[i]), 0.0)
        d = float(diff[i])
        excludes = bool((lo[i] > 0) or (hi[i] < 0))  # NaN compares False: not real
        big = math.isfinite(d) and abs(d) * span >= minimum and abs(d) > 0
        r = excludes and big
        real.append(r)
        change.append(_change(m["verdict_a"].iloc[i], m["verdict_b"].iloc[i], r, d, str(m["probe"].iloc[i])))
    out = pd.DataFrame({
        "probe": m["probe"].astype(str), "subject": m["subject"].astype(str), "metric": m["metric"].astype(str),
        "unit": unit.astype(object),
        "verdict_a": m["verdict_a"].astype(object), "verdict_b": m["verdict_b"].astype(object),
        "per_step_a": pa, "per_step_a_low": pa_lo, "per_step_a_high": pa_hi,
        "per_step_b": pb, "per_step_b_low": pb_lo, "per_step_b_high": pb_hi,
        "difference": diff, "difference_low": lo, "difference_high": hi,
        "real": pd.Series(real, dtype=bool), "change": pd.Series(change, dtype=object),
    })
    out = out[list(COMPARE_COLUMNS)].reset_index(drop=True)
    out.attrs["labels"] = (str(labels[0]), str(labels[1]))
    return out
