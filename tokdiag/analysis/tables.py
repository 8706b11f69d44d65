"""Tables for people: the verdicts and an A/B comparison with units, words for columns, no row numbers.

The analysis DataFrames (:func:`tokdiag.analysis.verdicts`,
:func:`tokdiag.analysis.compare`) keep raw numbers in a series' own unit
(bytes, objects) under column names code reads (``per_step_b``, ``real``).
These are the same tables for a page:

- :func:`verdicts_table`: one row per owner and measure
  (:func:`tokdiag.analysis.fold_verdicts`: no generation counters, no
  tokdiag buffers, one row for what watch and census both counted);
- :func:`compare_table`: each run's verdict and growth per step, the
  difference, and the change in words that say what changed;
- :func:`compare_notes`: sentences saying what ``fixed`` refers to, and
  what RSS did beside it; :func:`compare_headlines`: the changes as
  ``summary.json`` headlines;
- :func:`runs_table`: one row per run: how it ended, how long it ran, RSS
  at its start and end.

Figures are written with :mod:`tokdiag.analysis.format` (``+10.5 KiB/step``,
``+1 object/step``); an interval is printed only when it says something
(never ``1 object to 1 object``); the index is the series' short name.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from tokdiag.analysis.classification import SEVERITY_RANK
from tokdiag.analysis.compare import COMPARE_COLUMNS
from tokdiag.analysis.fold import fold_verdicts
from tokdiag.analysis.format import (
    format_interval,
    format_signed,
    format_value,
    measure_words,
    short_name,
)
from tokdiag.analysis.verdicts import projection_horizon
from tokdiag.errors import ConfigError

__all__ = ["change_short", "compare_headlines", "compare_notes", "compare_table", "runs_table", "side_labels",
           "verdicts_table"]



def _series_label(probe: str, subject: str, metric: str) -> str:
    if (probe, metric) == ("process", "rss"):
        return "RSS"
    if probe == "process":
        return measure_words(probe, metric)
    return short_name(probe, subject)[0]


def _rate(value: float, unit: str) -> str:
    return f"{format_signed(value, unit)}/step" if math.isfinite(value) else ""


def _with_interval(value: float, low: float, high: float, unit: str) -> str:
    text = _rate(value, unit)
    interval = format_interval(low, high, unit, per_step=True)
    return f"{text} ({interval})" if text and interval else text


def verdicts_table(verdicts_df: Any, *, project_to: int | None = None) -> pd.DataFrame:
    """The verdicts of a run (or of :func:`tokdiag.analysis.verdicts`) for a page, most alarming first.

    One row per owner and measure; columns ``run`` (several runs only),
    ``measure``, ``verdict``, ``growth per step`` (with its 99% interval when
    it says something), ``projected at N steps``, ``why`` (the verdict's
    reason) and ``also measured`` (what was folded into the row). Indexed by
    the series' short name. ``verdicts_df``: a DataFrame of verdicts, or a
    Run (its verdicts are computed, projected to ``project_to`` steps).
    """
    if not isinstance(verdicts_df, pd.DataFrame):
        if not hasattr(verdicts_df, "verdicts"):
            raise ConfigError(f"verdicts_table: got a {type(verdicts_df).__name__}; pass run.verdicts() or a Run")
        verdicts_df = verdicts_df.verdicts(**({} if project_to is None else {"project_to": project_to}))
    folded = fold_verdicts(verdicts_df)
    rows = folded[folded["role"] == "main"].copy()
    rows["_rank"] = rows["verdict"].map(SEVERITY_RANK).fillna(len(SEVERITY_RANK))
    rows["_size"] = -rows["per_step"].abs().fillna(0.0)
    rows = rows.sort_values(["_rank", "_size"], kind="stable")
    horizon = projection_horizon(verdicts_df, project_to)
    table = pd.DataFrame(
        {
            "run": rows["run"].astype(str).tolist(),
            "measure": [f"{p} {measure_words(p, m)}" for p, m in zip(rows["probe"], rows["metric"], strict=True)],
            "verdict": rows["verdict"].astype(str).tolist(),
            "growth per step": [
                _with_interval(v, lo, hi, u) if verdict in ("leak", "inconclusive") else ""
                for v, lo, hi, u, verdict in zip(
                    rows["per_step"],
                    rows["per_step_low"],
                    rows["per_step_high"],
                    rows["unit"],
                    rows["verdict"],
                    strict=True,
                )
            ],
            f"projected at {int(horizon):,} steps": [
                format_value(v, u) if math.isfinite(v) else ""
                for v, u in zip(rows["projected"], rows["unit"], strict=True)
            ],
            "why": rows["reason"].astype(str).tolist(),
            "also measured": rows["folded"].astype(str).tolist(),
        },
        index=pd.Index(
            [_series_label(p, s, m) for p, s, m in zip(rows["probe"], rows["subject"], rows["metric"], strict=True)],
            name="series",
        ),
    )
    keep = [c for c in table.columns if (c != "run" or table["run"].nunique() > 1)
            and (c != "also measured" or bool((table[c] != "").any()))]
    return table[keep]


def side_labels(df: pd.DataFrame) -> tuple[str, str]:
    """The two runs' labels of a comparison (``df.attrs["labels"]``), made distinct: ``x (A)``, ``x (B)`` if equal."""
    a, b = (list(df.attrs.get("labels") or ("A", "B")) + ["A", "B"])[:2]
    a, b = str(a), str(b)
    return (a, b) if a != b else (f"{a} (A)", f"{b} (B)")


def _check(compare_df: Any) -> pd.DataFrame:
    if not isinstance(compare_df, pd.DataFrame):
        raise ConfigError(f"got a {type(compare_df).__name__}; pass the DataFrame of tokdiag.compare(run_a, run_b)")
    missing = [c for c in COMPARE_COLUMNS if c not in compare_df.columns]
    if missing:
        raise ConfigError(
            f"the DataFrame lacks column(s) {missing}; pass the DataFrame of tokdiag.compare(run_a, run_b)"
        )
    return compare_df


def _side(verdict: Any, value: float, unit: str) -> str:
    if not isinstance(verdict, str):
        return "not measured"
    if verdict in ("leak", "inconclusive") and math.isfinite(value):
        return f"{verdict}, {_rate(value, unit)}"
    return verdict


def change_short(change: str, verdict_a: Any, verdict_b: Any) -> str:
    """``"fixed (leak → flat)"``: a change with the two verdicts it stands for (fixed and new leak only)."""
    if change in ("fixed", "new leak"):
        va = verdict_a if isinstance(verdict_a, str) else "not measured"
        vb = verdict_b if isinstance(verdict_b, str) else "not measured"
        return f"{change} ({va} → {vb})"
    return str(change)


def _change_words(r: Any, la: str, lb: str) -> str:
    va = r.verdict_a if isinstance(r.verdict_a, str) else "not measured"
    vb = r.verdict_b if isinstance(r.verdict_b, str) else "not measured"
    if r.change == "fixed":
        return f"fixed: {va} in {la}, {vb} in {lb}"
    if r.change == "new leak":
        return f"new leak: {va} in {la}, leak in {lb}"
    if r.change in ("less growth", "more growth"):
        return f"{r.change} in {lb} (a real difference)"
    if r.change == "not compared":
        only = la if isinstance(r.verdict_a, str) else lb
        return f"not compared: only {only} measured it"
    return str(r.change)


def compare_table(compare_df: pd.DataFrame) -> pd.DataFrame:
    """:func:`tokdiag.analysis.compare` for a page: one row per series, indexed by its short name.

    Columns: ``measure`` (probe and what it measures), one column per run
    named by its label (verdict, and growth per step where it grows),
    ``difference per step`` (with its interval when that says something; empty
    when not compared) and ``change`` in words that say what changed
    (``"fixed: leak in before, flat in after"``). Rows: changes first (fixed,
    new leak, less and more growth), then the rest.
    """
    df = _check(compare_df)
    la, lb = side_labels(df)
    order = {"fixed": 0, "new leak": 1, "less growth": 2, "more growth": 3, "unchanged": 4, "not compared": 5}
    rows = df.assign(_o=df["change"].map(order).fillna(6)).sort_values("_o", kind="stable")
    table = pd.DataFrame(
        {
            "measure": [f"{p} {measure_words(p, m)}" for p, m in zip(rows["probe"], rows["metric"], strict=True)],
            la: [_side(v, x, u) for v, x, u in zip(rows["verdict_a"], rows["per_step_a"], rows["unit"], strict=True)],
            lb: [_side(v, x, u) for v, x, u in zip(rows["verdict_b"], rows["per_step_b"], rows["unit"], strict=True)],
            "difference per step": [
                "" if c == "not compared" else _with_interval(d, lo, hi, u)
                for c, d, lo, hi, u in zip(
                    rows["change"],
                    rows["difference"],
                    rows["difference_low"],
                    rows["difference_high"],
                    rows["unit"],
                    strict=True,
                )
            ],
            "change": [_change_words(r, la, lb) for r in rows.itertuples()],
        },
        index=pd.Index(
            [_series_label(p, s, m) for p, s, m in zip(rows["probe"], rows["subject"], rows["metric"], strict=True)],
            name="series",
        ),
    )
    return table


def compare_notes(compare_df: pd.DataFrame) -> tuple[str, ...]:
    """Sentences that say what changed between the runs, and what ``fixed`` refers to.

    One per fixed series and per new leak (naming the series and both
    verdicts); then RSS in both runs. When something was fixed while RSS is
    unchanged, a sentence says so: "fixed" refers to the series named, not
    to RSS. With no change at all, one sentence says that.
    """
    df = _check(compare_df)
    la, lb = side_labels(df)
    notes: list[str] = []
    for r in df.itertuples():
        name = f"{_series_label(r.probe, r.subject, r.metric)} ({r.probe} {measure_words(r.probe, r.metric)})"
        if r.change == "fixed":
            notes.append(f"Fixed in {lb}: {name}, {_side(r.verdict_a, r.per_step_a, r.unit)} in {la}, "
                         f"{_side(r.verdict_b, r.per_step_b, r.unit)} in {lb}.")
        elif r.change == "new leak":
            notes.append(f"New leak in {lb}: {name}, {_side(r.verdict_a, r.per_step_a, r.unit)} in {la}, "
                         f"{_side(r.verdict_b, r.per_step_b, r.unit)} in {lb}.")
    rss = df[(df["probe"] == "process") & (df["metric"] == "rss")]
    fixed = bool((df["change"] == "fixed").any())
    if len(rss):
        r = next(rss.itertuples())
        notes.append(f"RSS: {r.change} ({la}: {_side(r.verdict_a, r.per_step_a, 'bytes')}; "
                     f"{lb}: {_side(r.verdict_b, r.per_step_b, 'bytes')}).")
        if fixed and r.change in ("unchanged", "not compared"):
            notes.append('"Fixed" refers to the series named above, not to RSS: over these runs RSS did not change '
                         "by more than its noise and the practical minimum.")
    if not notes or all(c in ("unchanged", "not compared") for c in df["change"]):
        notes.insert(0, f"Nothing changed between {la} and {lb}: no compared series differs by more than its "
                        "uncertainty and the practical minimum.")
    return tuple(notes)


def compare_headlines(compare_df: pd.DataFrame) -> tuple[tuple[str, str, str], ...]:
    """The series that changed between two runs as headlines ``(subject, change, detail)``, for ``summary.json``.

    One per series whose ``change`` is ``fixed``, ``new leak``, ``less
    growth`` or ``more growth``, in that order: subject ``"B: series
    measure"`` (B the second run's label), the change as the verdict, and
    what each run did, with units (``"leak, +10.5 KiB/step → flat"``).
    """
    df = _check(compare_df)
    _, lb = side_labels(df)
    order = {"fixed": 0, "new leak": 1, "less growth": 2, "more growth": 3}
    rows = df[df["change"].isin(list(order))]
    rows = rows.assign(_o=rows["change"].map(order)).sort_values("_o", kind="stable")
    return tuple(
        (
            f"{lb}: {_series_label(r.probe, r.subject, r.metric)}"  # a process series' label is its measure
            + ("" if r.probe == "process" else f" {measure_words(r.probe, r.metric)}"),
            str(r.change),
            f"{_side(r.verdict_a, r.per_step_a, r.unit)} → {_side(r.verdict_b, r.per_step_b, r.unit)}",
        )
        for r in rows.itertuples()
    )


def runs_table(run_or_runs: Any) -> pd.DataFrame:
    """One row per run, indexed by its name: how it ended and what its RSS did, with units.

    Columns: ``status`` (``completed``, ``budget``, ``killed``, ...),
    ``steps`` (the first and last snapshot's step), ``snapshots``,
    ``seconds`` (elapsed at the last snapshot), ``RSS at start``, ``RSS at
    end`` and ``RSS growth``. ``run_or_runs``: a Run, a journal path, a list
    of them, or ``{label: run}`` (see :func:`tokdiag.analysis.owners.runs_of`).

    >>> import pandas as pd
    >>> from tokdiag.recording.run import Run
    >>> cols = ["run", "step", "elapsed_s", "probe", "subject", "metric", "value", "unit"]
    >>> rows = [("a", s, s / 10, "process", "process", "rss", 2**20 * (100 + s), "bytes") for s in (0, 10, 20)]
    >>> runs_table(Run("a", pd.DataFrame(rows, columns=cols))).to_dict(orient="index")  # doctest: +NORMALIZE_WHITESPACE
    {'a': {'status': 'completed', 'steps': '0 to 20', 'snapshots': 3, 'seconds': '2.0', 'RSS at start': '100 MiB',
           'RSS at end': '120 MiB', 'RSS growth': '+20 MiB'}}
    """
    from tokdiag.analysis.owners import runs_of
    from tokdiag.recording.timeline import series

    rows = []
    for run in runs_of(run_or_runs):
        rss = series(run.timeline, "process", "process", "rss").dropna()
        elapsed = run.timeline["elapsed_s"] if "elapsed_s" in run.timeline else pd.Series(dtype="float64")
        steps = sorted(run.timeline["step"].unique().tolist()) if len(run.timeline) else []
        rows.append({
            "run": str(run.name), "status": str(run.status),
            "steps": f"{int(steps[0]):,} to {int(steps[-1]):,}" if steps else "",
            "snapshots": len(steps),
            "seconds": f"{float(elapsed.max()):.1f}" if len(elapsed) else "",
            "RSS at start": format_value(float(rss.iloc[0]), "bytes") if len(rss) else "",
            "RSS at end": format_value(float(rss.iloc[-1]), "bytes") if len(rss) else "",
            "RSS growth": format_signed(float(rss.iloc[-1] - rss.iloc[0]), "bytes") if len(rss) else "",
        })
    table = pd.DataFrame(rows, columns=["run", "status", "steps", "snapshots", "seconds", "RSS at start",
                                        "RSS at end", "RSS growth"])
    return table.set_index("run")
