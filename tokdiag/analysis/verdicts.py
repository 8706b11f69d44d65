"""The verdict table: :func:`classify` over every series of a timeline.

How one series is judged, and why, is documented in
:mod:`tokdiag.analysis.classification`.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from tokdiag.analysis.classification import classify_arrays
from tokdiag.errors import ConfigError
from tokdiag.recording.timeline import check_timeline

__all__ = ["DEFAULT_PROJECT_TO", "NOISE_METRICS", "VERDICT_COLUMNS", "projection_horizon", "verdicts"]

NOISE_METRICS: frozenset[tuple[str, str]] = frozenset(
    {("process", "gc_gen0"), ("process", "gc_gen1"), ("process", "gc_gen2")})
"""``(probe, metric)`` series that are judged like any other but are not memory.

The collector's per-generation counters count allocations since the last
collection of that generation: they climb and reset with the allocation
pattern, so a ``leak`` on them says nothing about what is kept. Headlines
(:mod:`tokdiag.report.summary`) leave them out.
"""

VERDICT_COLUMNS: tuple[str, ...] = (
    "run", "probe", "subject", "metric", "unit", "verdict", "per_step", "per_step_low",
    "per_step_high", "growth", "warmup_steps", "projected", "n_snapshots", "reason",
)
"""Columns of :func:`verdicts`, in order."""




_SKIP_UNITS = {"hash", "flag"}
_AT_START = "_at_start"  # a census type's figures at the first snapshot, written once: a baseline, not a series


def _series(timeline: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    """Keys of every series, plus group starts and the step/value arrays sorted by (series, step)."""
    keys = ["run", "probe", "subject", "metric", "unit"]
    codes = timeline.groupby(keys, sort=True, dropna=False).ngroup().to_numpy()
    steps = pd.to_numeric(timeline["step"], errors="coerce").to_numpy(dtype=float)
    values = pd.to_numeric(timeline["value"], errors="coerce").to_numpy(dtype=float)
    order = np.lexsort((steps, codes))
    codes, steps, values = codes[order], steps[order], values[order]
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    first = timeline.iloc[order[starts]][keys].reset_index(drop=True)
    bounds = np.r_[starts, codes.size]
    return first, bounds, steps, values


DEFAULT_PROJECT_TO = 10_000
"""The step count at which ``projected`` is given unless asked otherwise."""


def projection_horizon(verdicts_df: pd.DataFrame, project_to: int | None = None) -> int:
    """The step count ``verdicts_df["projected"]`` was computed for, to label it.

    ``df.attrs["project_to"]`` (set by :func:`verdicts`); ``project_to``, when
    given, must agree with it (a ConfigError says how to get the other
    horizon). A DataFrame that does not say: ``project_to``, else
    :data:`DEFAULT_PROJECT_TO`.

    >>> df = pd.DataFrame(columns=list(VERDICT_COLUMNS))
    >>> df.attrs["project_to"] = 500
    >>> projection_horizon(df), projection_horizon(pd.DataFrame())
    (500, 10000)
    >>> projection_horizon(df, 10_000)
    Traceback (most recent call last):
    ...
    tokdiag.errors.ConfigError: project_to=10000: these verdicts were projected to 500 steps; pass project_to=500 ...
    """
    stated = verdicts_df.attrs.get("project_to")
    if stated is not None and project_to is not None and int(stated) != int(project_to):
        raise ConfigError(f"project_to={project_to}: these verdicts were projected to {stated} steps; "
                          f"pass project_to={stated} or recompute with verdicts(..., project_to={project_to})")
    return int(stated if stated is not None else project_to or DEFAULT_PROJECT_TO)


def verdicts(timeline: pd.DataFrame, *, project_to: int = DEFAULT_PROJECT_TO, probes: Iterable[str] | None = None,
             counters: bool = False) -> pd.DataFrame:
    """One verdict per numeric series of ``timeline``; columns :data:`VERDICT_COLUMNS`.

    ``project_to``: the step count at which ``projected`` is given (kept in
    ``df.attrs["project_to"]``, which the tables and charts read).
    ``probes``: judge only these probes (e.g. ``["process", "watch", "cache"]``).
    ``counters``: also judge cumulative call counters (cache ``hits`` and
    ``misses``, unit ``calls``). Off by default: they grow with traffic, not
    memory, so a ``leak`` on them would be a false alarm; an unbounded cache
    already shows up in its ``entries``.

    Series never judged: unit ``hash`` (payload fingerprints are identifiers,
    not quantities), unit ``flag`` (states, e.g. a capped disk walk),
    timings (unit ``seconds``: the tracker's snapshots, a disk walk),
    ``tracker/tokdiag/snapshot_peak_bytes`` (what a snapshot itself added
    for a moment: a cost, like its time, not memory the run holds) and
    baselines (metrics ending ``_at_start``: a census type's figures at the
    first snapshot, written once when the type is first written late).

    >>> import pandas as pd
    >>> rows = [("a", s, 0.0, "watch", "app.Agent", "count", float(s), "objects") for s in range(0, 50, 5)]
    >>> tl = pd.DataFrame(rows, columns=["run", "step", "elapsed_s", "probe", "subject", "metric", "value", "unit"])
    >>> verdicts(tl)[["subject", "verdict", "per_step"]].to_dict("records")
    [{'subject': 'app.Agent', 'verdict': 'leak', 'per_step': 1.0}]
    """
    timeline = check_timeline(timeline)
    if isinstance(project_to, bool) or not isinstance(project_to, (int, np.integer)) or project_to <= 0:
        raise ConfigError(f"project_to={project_to!r}: pass a positive number of steps, e.g. project_to=10_000")
    tl = timeline
    baselines = [m for m in tl["metric"].unique() if str(m).endswith(_AT_START)]
    skip = tl["unit"].isin(_SKIP_UNITS) | (tl["unit"] == "seconds") | tl["metric"].isin(baselines)
    skip |= (tl["probe"] == "tracker") & (tl["metric"] == "snapshot_peak_bytes")
    if not counters:
        skip |= tl["unit"] == "calls"
    if probes is not None:
        wanted = [probes] if isinstance(probes, str) else list(probes)
        present = set(tl["probe"].unique())
        unknown = [p for p in wanted if p not in present]
        if unknown:
            raise ConfigError(
                f"probes={wanted!r}: {unknown[0]!r} has no rows in this timeline; probes present: "
                f"{sorted(present)}")
        skip |= ~tl["probe"].isin(wanted)
    tl = tl.loc[~skip]
    if tl.empty:
        empty = pd.DataFrame({c: pd.Series(dtype=_dtype(c)) for c in VERDICT_COLUMNS})
        empty.attrs["project_to"] = int(project_to)
        return empty
    keys, bounds, steps, values = _series(tl)
    out: dict[str, list] = {c: [] for c in VERDICT_COLUMNS[5:]}
    units = keys["unit"].to_numpy()
    for g in range(len(keys)):
        a, b = bounds[g], bounds[g + 1]
        v = classify_arrays(steps[a:b], values[a:b], str(units[g]), project_to)
        out["verdict"].append(v.verdict)
        out["per_step"].append(v.per_step)
        out["per_step_low"].append(v.per_step_low)
        out["per_step_high"].append(v.per_step_high)
        out["growth"].append(v.growth)
        out["warmup_steps"].append(v.warmup_steps)
        out["projected"].append(v.projected)
        out["n_snapshots"].append(v.n_snapshots)
        out["reason"].append(v.reason)
    df = keys[["run", "probe", "subject", "metric", "unit"]].copy()
    for c, col in out.items():
        df[c] = pd.Series(col, dtype=_dtype(c))
    df = df[list(VERDICT_COLUMNS)]
    df.attrs["project_to"] = int(project_to)  # the horizon of `projected`: tables and charts label it
    return df


def _dtype(column: str) -> str:
    if column in ("per_step", "per_step_low", "per_step_high", "growth", "projected"):
        return "float64"
    if column in ("warmup_steps", "n_snapshots"):
        return "int64"
    if column == "run":
        return "object"
    return "str"
