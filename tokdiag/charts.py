"""Charts: plotly figures built from runs, ledgers, verdicts, chains and comparisons.

Figures only. Every function returns a :class:`plotly.graph_objects.Figure`
and decides nothing: labels, intervals and projections come from
:mod:`tokdiag.analysis`; the ledger from :func:`tokdiag.analysis.ledger`.
Render them in a notebook (see :func:`tokdiag.export.plotly_renderer_setup`)
or with ``fig.to_html(include_plotlyjs=True)``; nothing here calls
``fig.show()``.

==================  ==========================================================
function            shows
==================  ==========================================================
:func:`ledger`      who owns the RSS growth, stacked over steps, RSS on top
:func:`counts`      instances per watched class (or census type) over steps
:func:`caches`      entries, and bytes (native estimate dashed), per cache
:func:`rss`         RSS of one or several runs side by side
:func:`verdict_table`  one row per series, coloured by verdict
:func:`chain`       why-alive reference chains drawn as paths
:func:`compare`     A/B growth per step with intervals, one panel per unit
==================  ==========================================================

Conventions: memory in MiB on axes (KiB/step for growth rates below 1 MiB),
the x axis is "step (workload steps completed)", titles say what to look at.
Every string that comes from the workload (class names, cache labels, run
names, reasons, chain labels) is passed through :func:`html.escape` before
it reaches a trace name, a hover text or a table cell: plotly renders a
subset of HTML in those, and a subject called ``<img src=x onerror=...>``
must show as text. Empty input gives a figure with an annotation saying what
is missing, never an exception.

>>> import pandas as pd
>>> df = pd.DataFrame({"run": "r", "step": [0, 10, 10], "owner": ["a", "a", "unexplained (native or untracked)"],
...                    "kind": ["cache", "cache", "unexplained"], "bytes": [0.0, 2**20, 2**19]})
>>> fig = ledger(df)
>>> [t.name for t in fig.data]
['a', 'unexplained (native or untracked)', 'RSS growth']
"""

from __future__ import annotations

import fnmatch
import html
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from tokdiag.analysis.verdicts import format_rate, format_value
from tokdiag.errors import ConfigError
from tokdiag.run import Run
from tokdiag.timeline import wide

__all__ = [
    "KIND_ORDER",
    "LABEL_COLORS",
    "UNEXPLAINED",
    "caches",
    "chain",
    "compare",
    "counts",
    "ledger",
    "rss",
    "verdict_table",
]

MiB = float(1 << 20)
KiB = float(1 << 10)
STEP_AXIS = "step (workload steps completed)"

LABEL_COLORS: dict[str, str] = {
    "leak": "#d62728",
    "bounded": "#e69500",
    "step": "#1f77b4",
    "flat": "#8c8c8c",
    "inconclusive": "#8e44ad",
}
"""Colour of each verdict label, used by :func:`verdict_table` (strong) and its row tints."""

_LABEL_TINTS: dict[str, str] = {
    "leak": "#fde0dd",
    "bounded": "#fff0cc",
    "step": "#dbe9f6",
    "flat": "#f0f0f0",
    "inconclusive": "#ecdff2",
}
_LABEL_RANK = {"leak": 0, "inconclusive": 1, "step": 2, "bounded": 3, "flat": 4}

KIND_ORDER: tuple[str, ...] = ("cache", "native", "watch", "census", "tokdiag", "unexplained")
"""Ledger owner kinds, bottom of the stack first; ``unexplained`` is drawn last, hatched grey."""

UNEXPLAINED = "unexplained (native or untracked)"
"""The ledger's remainder owner (what no probe accounts for)."""

_KIND_PALETTES: dict[str, tuple[str, ...]] = {
    "cache": ("#ff7f0e", "#fdae6b", "#e6550d", "#fdd0a2", "#a63603"),
    "native": ("#8c564b", "#c49c94", "#5d3a32"),
    "watch": ("#1f77b4", "#6baed6", "#08519c", "#9ecae1", "#3182bd"),
    "census": ("#2ca02c", "#98df8a", "#006d2c", "#74c476", "#31a354"),
    "tokdiag": ("#bcbd22", "#dbdb8d"),
    "other": ("#17becf", "#9edae5"),
}
_UNEXPLAINED_COLOR = "#9e9e9e"
_LINE_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
                "#7f7f7f", "#bcbd22")
_MAX_LINES = 12


# --------------------------------------------------------------------------- helpers

def _esc(value: Any) -> str:
    """``value`` as text that plotly shows literally (its pseudo-HTML cannot see a tag in it)."""
    return html.escape(str(value), quote=False)  # plotly shows &quot; literally; without "<" no tag can form


def _base_layout(fig: go.Figure, title: str, *, height: int | None = None) -> go.Figure:
    fig.update_layout(
        template="plotly_white",
        title={"text": title, "x": 0.01, "xanchor": "left"},
        margin={"l": 70, "r": 30, "t": 80, "b": 60},
        legend={"orientation": "v", "yanchor": "top", "y": 1.0, "xanchor": "left", "x": 1.02},
        hoverlabel={"namelength": -1},
    )
    if height is not None:
        fig.update_layout(height=height)
    return fig


def _empty(title: str, message: str) -> go.Figure:
    """A figure that says what is missing instead of drawing empty axes."""
    fig = go.Figure()
    _base_layout(fig, title, height=300)
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.add_annotation(text=message, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False,
                       font={"size": 16, "color": "#555"})
    return fig


def _check_run(run: Any, what: str = "run") -> Run:
    if not isinstance(run, Run):
        raise ConfigError(f"{what} is a {type(run).__name__}; pass a tokdiag Run (from td.track(...) or "
                          "td.load('journal.jsonl'))")
    return run


def _match(subjects: Sequence[str] | str | None, present: Iterable[str], what: str) -> list[str]:
    """The present subjects named by ``subjects`` (exact, bare class name, or glob); all when None."""
    present = list(present)
    if subjects is None:
        return present
    if isinstance(subjects, str):
        subjects = [subjects]
    chosen: list[str] = []
    for want in subjects:
        hits = [s for s in present
                if s == want or s.rsplit(".", 1)[-1] == want or fnmatch.fnmatchcase(s, want)]
        if not hits:
            raise ConfigError(f"subjects: {want!r} matches no {what} in this run; {what}s present: "
                              f"{present if present else 'none'} (give a qualified name, a bare class name "
                              "or a glob)")
        chosen.extend(h for h in hits if h not in chosen)
    return chosen


def _series_name(probe: str, subject: str) -> tuple[str, str]:
    """(short name, where it lives) for a series label: ``RewardAgent``, ``myapp.agents``.

    Classes and census types are shown by their bare name with the module
    beside it (long qualified names are cut off in tables); caches and the
    process keep their label.
    """
    if probe in ("watch", "census") and "." in subject:
        module, name = subject.rsplit(".", 1)
        return name, module
    if probe == "cache" and ":" in subject:  # "module:attr" labels: the attribute, with its module beside it
        module, name = subject.rsplit(":", 1)
        return name, module
    return subject, ""


def _steps_note(run: Run) -> str:
    steps = run.steps
    return f"{len(steps)} snapshots over {steps[-1]} steps" if steps else "no snapshots"


# --------------------------------------------------------------------------- ledger

def _ledger_frame(source: Any) -> tuple[pd.DataFrame, pd.Series | None, str]:
    """(ledger rows, RSS growth by step or None, run name) from a Run or a ledger DataFrame."""
    if isinstance(source, Run):
        rss = source.series("process", "process", "rss")
        if rss.empty:  # nothing to split (no snapshot, or a timeline without the process probe)
            return pd.DataFrame(columns=["run", "step", "owner", "kind", "bytes"]), None, source.name
        return source.ledger(), rss - rss.iloc[0], source.name
    if isinstance(source, pd.DataFrame):
        missing = [c for c in ("step", "owner", "kind", "bytes") if c not in source.columns]
        if missing:
            raise ConfigError(f"ledger: the DataFrame lacks column(s) {missing}; pass a Run or "
                              "tokdiag.analysis.ledger(timeline) (columns run, step, owner, kind, bytes)")
        runs = source["run"].dropna().unique().tolist() if "run" in source.columns else []
        if len(runs) > 1:
            raise ConfigError(f"ledger: the DataFrame holds {len(runs)} runs ({runs[:4]}); chart one at a "
                              "time, e.g. ledger(df[df.run == name])")
        return source, None, str(runs[0]) if runs else ""
    raise ConfigError(f"ledger: got a {type(source).__name__}; pass a Run or a ledger DataFrame "
                      "(tokdiag.analysis.ledger(run.timeline))")


def _kind_key(kind: str) -> int:
    return KIND_ORDER.index(kind) if kind in KIND_ORDER else len(KIND_ORDER) - 1


def ledger(run_or_ledger_df: Run | pd.DataFrame, *, rss: bool = True, title: str | None = None) -> go.Figure:
    """Who owns the memory growth: owners' growth since the first snapshot, stacked, with RSS on top.

    Owners are stacked bottom-up by kind (caches, native, watched classes,
    census types, tokdiag itself) and the unexplained remainder last,
    hatched grey. An owner that shrinks below its first snapshot is stacked
    downwards from zero (a separate stack for negative parts), so the stack
    still adds up: at every step the sum of all bands equals RSS growth,
    drawn as a black line when ``rss`` is true (the run's own RSS series for
    a Run, the owners' sum for a ledger DataFrame).

    ``run_or_ledger_df``: a :class:`~tokdiag.Run`, or the DataFrame of
    :func:`tokdiag.analysis.ledger` (columns ``run, step, owner, kind,
    bytes``) for one run.
    """
    df, rss_growth, name = _ledger_frame(run_or_ledger_df)
    heading = title if title is not None else (
        f"Who owns the memory growth{': ' + _esc(name) if name else ''}"
        "<br><sup>growth since the first snapshot; the grey hatched band is what no probe explains</sup>")
    if df.empty:
        return _empty(heading, "no ledger rows in this run (no snapshot measured RSS)")

    table = df.pivot_table(index="step", columns="owner", values="bytes", aggfunc="sum").sort_index().fillna(0.0)
    kinds = df.drop_duplicates("owner", keep="last").set_index("owner")["kind"].astype(str).to_dict()
    order = sorted(table.columns, key=lambda o: (_kind_key(kinds.get(o, "")), o == UNEXPLAINED,
                                                 -float(table[o].abs().max()), str(o)))
    steps = table.index.to_numpy()
    fig = go.Figure()
    used: dict[str, int] = {}
    for owner in order:
        kind = kinds.get(owner, "other")
        values = table[owner].to_numpy(dtype=float) / MiB
        unexplained = kind == "unexplained"
        if unexplained:
            color = _UNEXPLAINED_COLOR
        else:
            palette = _KIND_PALETTES.get(kind, _KIND_PALETTES["other"])
            color = palette[used.get(kind, 0) % len(palette)]
            used[kind] = used.get(kind, 0) + 1
        label = _esc(owner)
        custom = np.array([[label, _esc(kind), v] for v in values], dtype=object)
        parts = []
        if (values > 0).any() or not (values < 0).any():
            parts.append(("up", np.clip(values, 0.0, None)))
        if (values < 0).any():
            parts.append(("down", np.clip(values, None, 0.0)))
        for n, (group, part) in enumerate(parts):
            fig.add_trace(go.Scatter(
                x=steps, y=part, name=label, legendgroup=label, showlegend=n == 0, stackgroup=group,
                mode="lines", line={"width": 0.5, "color": color}, fillcolor=color,
                fillpattern={"shape": "/", "fgcolor": "#555555", "bgcolor": "#d9d9d9", "solidity": 0.3}
                if unexplained else None,
                customdata=custom,
                hovertemplate="%{customdata[0]} (%{customdata[1]})<br>step %{x}: %{customdata[2]:+.2f} MiB"
                              "<extra></extra>",
            ))
    if rss:
        line = rss_growth if rss_growth is not None else table.sum(axis=1)
        fig.add_trace(go.Scatter(
            x=line.index.to_numpy(), y=line.to_numpy(dtype=float) / MiB, name="RSS growth", mode="lines+markers",
            line={"color": "black", "width": 2.5}, marker={"size": 4},
            hovertemplate="RSS growth<br>step %{x}: %{y:+.2f} MiB<extra></extra>",
        ))
    _base_layout(fig, heading, height=480)
    # legend top-down like the stack: RSS line, unexplained, then owners down to the first cache
    fig.update_layout(legend_title_text="owner (kind)", legend_traceorder="reversed", hovermode="closest")
    fig.update_xaxes(title_text=STEP_AXIS)
    fig.update_yaxes(title_text="growth since first snapshot (MiB)", zeroline=True, zerolinecolor="#888")
    return fig


# --------------------------------------------------------------------------- counts / caches / rss

def counts(run: Run, *, probe: str = "watch", subjects: list[str] | None = None) -> go.Figure:
    """Instances per class over steps: one line per watched class (``probe="census"``: per type).

    ``subjects`` picks classes by qualified name, bare name or glob. With
    ``probe="census"`` and no ``subjects`` the 10 types whose count changed
    most over the second half of the run are drawn (a census has thousands,
    and most jump once at start-up).
    """
    run = _check_run(run)
    if probe not in ("watch", "census"):
        raise ConfigError(f"probe={probe!r}: counts are drawn for probe='watch' (named classes) or "
                          "probe='census' (every type)")
    what = "watched class" if probe == "watch" else "census type"
    title = (f"Instances per {'watched class' if probe == 'watch' else 'type'}: {_esc(run.name)}"
             "<br><sup>a line that keeps climbing is objects piling up; a plateau is a bounded pool</sup>")
    table = wide(run.timeline, probe, "count")
    if table.empty:
        return _empty(title, "no watched classes in this run" if probe == "watch" else
                      "no census in this run (track with census=True)")
    chosen = _match(subjects, table.columns, what)
    if subjects is None and len(chosen) > (10 if probe == "census" else _MAX_LINES):
        # the types still changing over the second half of the run: a warm-up jump at step 1 is not news
        filled = table.ffill().fillna(0.0)
        change = (filled.iloc[-1] - filled.iloc[len(filled) // 2]).abs()
        change = change.sort_values(ascending=False, kind="stable")
        moving = change[change > 0]
        chosen = (moving if len(moving) else change).index[: 10 if probe == "census" else _MAX_LINES].tolist()
        title += f" <sup>({len(chosen)} of {table.shape[1]} that changed most over the second half)</sup>"
    fig = go.Figure()
    for n, subject in enumerate(chosen):
        s = table[subject].dropna()
        label = _esc(subject)
        fig.add_trace(go.Scatter(
            x=s.index.to_numpy(), y=s.to_numpy(dtype=float), name=label, mode="lines+markers",
            line={"color": _LINE_COLORS[n % len(_LINE_COLORS)]}, marker={"size": 4},
            customdata=np.full((len(s), 1), label, dtype=object),
            hovertemplate="%{customdata[0]}<br>step %{x}: %{y:,.0f} objects<extra></extra>",
        ))
    _base_layout(fig, title, height=420)
    fig.update_xaxes(title_text=STEP_AXIS)
    fig.update_yaxes(title_text="instances alive (objects)", rangemode="tozero")
    return fig


def caches(run: Run, *, subjects: list[str] | None = None) -> go.Figure:
    """Per cache over steps: entries (top panel) and deep bytes (bottom; native estimate dashed).

    A cache whose entries climb without a plateau is unbounded; bytes far
    above entries x payload size, or a native line far above the Python
    one, mean payloads are duplicated or live outside Python's heap.
    Memory is in MiB, or KiB when every cache stays under 1 MiB.
    """
    run = _check_run(run)
    title = (f"Caches: entries and memory per cache: {_esc(run.name)}"
             "<br><sup>entries that never level off mean an unbounded cache; dashed = native memory "
             "(estimated, outside Python's heap)</sup>")
    tl = run.timeline[run.timeline["probe"] == "cache"]
    if tl.empty:
        return _empty(title, "no caches tracked in this run (pass caches=[...] to td.track)")
    entries = wide(tl, "cache", "entries")
    size = wide(tl, "cache", "bytes")
    native = wide(tl, "cache", "native_bytes")
    present = sorted(set(entries.columns) | set(size.columns))
    chosen = _match(subjects, present, "cache")
    peak = np.nanmax(np.r_[size.reindex(columns=[c for c in chosen if c in size.columns]).to_numpy(dtype=float).ravel(),
                           native.reindex(columns=[c for c in chosen if c in native.columns]).to_numpy(dtype=float).ravel(),
                           0.0])
    div, mem_unit = (MiB, "MiB") if peak >= MiB else (KiB, "KiB")  # small caches in KiB, not 0.002 MiB
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.08,
                        subplot_titles=("entries per cache", f"memory per cache ({mem_unit})"))
    for n, subject in enumerate(chosen):
        color = _LINE_COLORS[n % len(_LINE_COLORS)]
        label = _esc(subject)
        if subject in entries.columns:
            s = entries[subject].dropna()
            fig.add_trace(go.Scatter(
                x=s.index.to_numpy(), y=s.to_numpy(dtype=float), name=label, legendgroup=label,
                mode="lines+markers", marker={"size": 4}, line={"color": color},
                customdata=np.full((len(s), 1), label, dtype=object),
                hovertemplate="%{customdata[0]}<br>step %{x}: %{y:,.0f} entries<extra></extra>"), row=1, col=1)
        if subject in size.columns:
            s = size[subject].dropna()
            fig.add_trace(go.Scatter(
                x=s.index.to_numpy(), y=s.to_numpy(dtype=float) / div, name=f"{label} (Python bytes)",
                legendgroup=label, showlegend=subject not in entries.columns, mode="lines", line={"color": color},
                customdata=np.full((len(s), 1), label, dtype=object),
                hovertemplate="%{customdata[0]}: Python heap<br>step %{x}: %{y:.2f} " + mem_unit + "<extra></extra>"),
                row=2, col=1)
        if subject in native.columns:
            s = native[subject].dropna()
            fig.add_trace(go.Scatter(
                x=s.index.to_numpy(), y=s.to_numpy(dtype=float) / div, name=f"{label} (native, estimated)",
                legendgroup=label, mode="lines", line={"color": color, "dash": "dash"},
                customdata=np.full((len(s), 1), label, dtype=object),
                hovertemplate="%{customdata[0]}: native (estimate)<br>step %{x}: %{y:.2f} " + mem_unit
                              + "<extra></extra>"),
                row=2, col=1)
    _base_layout(fig, title, height=620)
    fig.update_xaxes(title_text=STEP_AXIS, row=2, col=1)
    fig.update_yaxes(title_text="entries", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title_text=f"memory ({mem_unit})", rangemode="tozero", row=2, col=1)
    return fig


def _runs_by_label(runs: Any) -> dict[str, Run]:
    if isinstance(runs, Run):
        return {runs.name: runs}
    if isinstance(runs, Mapping):
        return {str(k): _check_run(v, f"runs[{k!r}]") for k, v in runs.items()}
    if isinstance(runs, Iterable) and not isinstance(runs, (str, bytes)):
        out: dict[str, Run] = {}
        for n, r in enumerate(runs):
            r = _check_run(r, f"runs[{n}]")
            label = r.name if r.name not in out else f"{r.name} ({n + 1})"
            out[label] = r
        return out
    raise ConfigError(f"runs is a {type(runs).__name__}; pass a Run, a list of Runs or a dict label -> Run")


def rss(runs: Run | Sequence[Run] | Mapping[str, Run]) -> go.Figure:
    """RSS in MiB over steps, one line per run: scenarios side by side (a leak keeps climbing)."""
    labelled = _runs_by_label(runs)
    title = ("Resident memory per run<br><sup>a line that keeps climbing is a leak; one that levels off "
             "is a cache filling up or warm-up</sup>")
    fig = go.Figure()
    for n, (label, run) in enumerate(labelled.items()):
        s = run.series("process", "process", "rss").dropna()
        if s.empty:
            continue
        name = _esc(label)
        fig.add_trace(go.Scatter(
            x=s.index.to_numpy(), y=s.to_numpy(dtype=float) / MiB, name=name, mode="lines+markers",
            marker={"size": 4}, line={"color": _LINE_COLORS[n % len(_LINE_COLORS)]},
            customdata=np.full((len(s), 1), name, dtype=object),
            hovertemplate="%{customdata[0]}<br>step %{x}: %{y:.1f} MiB<extra></extra>"))
    if not fig.data:
        return _empty(title, "no runs with RSS measurements to draw" if labelled else "no runs given")
    _base_layout(fig, title, height=440)
    fig.update_layout(legend_title_text="run")
    fig.update_xaxes(title_text=STEP_AXIS)
    fig.update_yaxes(title_text="RSS (MiB)")
    return fig


# --------------------------------------------------------------------------- verdict table

_VERDICT_NEEDS = ("probe", "subject", "metric", "unit", "verdict", "per_step", "per_step_low", "per_step_high",
                  "projected", "reason")


def verdict_table(verdicts_df: pd.DataFrame | Run, *, project_to: int = 10_000, top: int | None = 30) -> go.Figure:
    """The verdicts as a table coloured by label, most alarming first.

    Columns: verdict, series (probe, subject, metric), growth per step in
    human units (``KiB/step``, ``entries/step``), its 99% interval, the
    value projected at ``project_to`` steps, and the reason. Rows are
    ordered leak, inconclusive, step, bounded, flat; within a label by
    growth per step. ``top`` keeps the first rows (None: all).

    ``verdicts_df`` is the DataFrame of :func:`tokdiag.analysis.verdicts`
    (its ``projected`` column must have been computed with the same
    ``project_to``), or a Run, whose verdicts are then computed with
    ``project_to``.
    """
    if isinstance(project_to, bool) or not isinstance(project_to, (int, np.integer)) or project_to <= 0:
        raise ConfigError(f"project_to={project_to!r}: pass a positive number of steps, e.g. project_to=10_000")
    if top is not None and (isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top <= 0):
        raise ConfigError(f"top={top!r}: pass a positive number of rows, or None for all")
    if isinstance(verdicts_df, Run):
        df = verdicts_df.verdicts(project_to=project_to)
    elif isinstance(verdicts_df, pd.DataFrame):
        df = verdicts_df
        missing = [c for c in _VERDICT_NEEDS if c not in df.columns]
        if missing:
            raise ConfigError(f"verdict_table: the DataFrame lacks column(s) {missing}; pass run.verdicts() "
                              "or tokdiag.analysis.verdicts(timeline)")
        stated = df.attrs.get("project_to")
        if stated is not None and int(stated) != int(project_to):
            raise ConfigError(f"project_to={project_to}: these verdicts were projected to {stated} steps; "
                              f"pass project_to={stated} or recompute with verdicts(..., project_to={project_to})")
    else:
        raise ConfigError(f"verdict_table: got a {type(verdicts_df).__name__}; pass run.verdicts() or a Run")
    title = (f"Verdicts: what grows, and what it costs at {project_to:,} steps"
             "<br><sup>red = leak (keeps growing), amber = bounded (grew, then stopped), blue = one-off step, "
             "grey = flat, purple = not enough evidence yet</sup>")
    if df.empty:
        return _empty(title, "no series judged in this run (no snapshots with measurements)")
    rows = df.assign(
        _rank=df["verdict"].map(_LABEL_RANK).fillna(len(_LABEL_RANK)),
        _bytes=(df["unit"] != "bytes").astype(int),
        _size=-df["per_step"].abs().fillna(0.0),
    ).sort_values(["_rank", "_bytes", "_size", "subject"], kind="stable")
    total = len(rows)
    if top is not None:
        rows = rows.head(int(top))
    if top is not None and total > len(rows):
        title = title.replace("<br>", f" (top {len(rows)} of {total} series)<br>", 1)
    many_runs = "run" in rows.columns and rows["run"].nunique() > 1
    labels = rows["verdict"].astype(str).tolist()
    series_col = []
    for r in rows.itertuples():
        name, where = _series_name(str(r.probe), str(r.subject))
        detail = " · ".join(_esc(x) for x in (where, f"{r.probe} {r.metric}") if x)
        series_col.append((f"<i>{_esc(r.run)}</i><br>" if many_runs else "") + f"{_esc(name)}<br><sup>{detail}</sup>")
    per_step = [format_rate(v, u) for v, u in zip(rows["per_step"], rows["unit"])]
    interval = [f"{format_value(lo, u)} to {format_value(hi, u)}" if math.isfinite(lo) and math.isfinite(hi) else "n/a"
                for lo, hi, u in zip(rows["per_step_low"].astype(float), rows["per_step_high"].astype(float),
                                     rows["unit"])]
    projected = [format_value(v, u) for v, u in zip(rows["projected"], rows["unit"])]
    reasons = [_esc(r) for r in rows["reason"]]
    strong = [LABEL_COLORS.get(v, "#cccccc") for v in labels]
    tint = [_LABEL_TINTS.get(v, "#ffffff") for v in labels]
    header = ["verdict", "series", "growth per step", "99% interval per step", f"projected at {project_to:,} steps",
              "reason"]
    fig = go.Figure(go.Table(
        columnwidth=[88, 240, 90, 150, 110, 370],
        header={"values": [f"<b>{h}</b>" for h in header], "fill_color": "#404040",
                "font": {"color": "white", "size": 12}, "align": "left"},
        cells={"values": [[f"<b>{_esc(v)}</b>" for v in labels], series_col, per_step, interval, projected, reasons],
               "fill_color": [strong, tint, tint, tint, tint, tint],
               "font": {"color": [["white"] * len(labels)] + [["#222222"] * len(labels)] * 5, "size": 11},
               "align": "left", "height": 30},
    ))
    # Tall enough for every row, so nothing hides behind the table's own scroll bar: a row is as
    # tall as its longest wrapped cell (the reason, ~45 characters a line in a notebook-width page).
    series_lines = 3 if many_runs else 2
    row_px = [14 * max(series_lines, math.ceil(len(str(r)) / 45)) + 16 for r in rows["reason"]]
    _base_layout(fig, title, height=min(130 + sum(row_px), 4000))
    fig.update_layout(margin={"l": 10, "r": 10, "t": 80, "b": 10})
    return fig


# --------------------------------------------------------------------------- why-alive chains

def _as_chain(c: Any) -> Any:
    """A :class:`tokdiag.retention.Chain` from a Chain or its dict (``Chain.as_dict()``)."""
    from tokdiag.retention import Chain

    if isinstance(c, Chain):
        return c
    if isinstance(c, Mapping):
        return Chain.from_dict(dict(c))
    raise ConfigError(f"chain: {c!r} is not a retention chain; pass tokdiag.retention.Chain objects "
                      "(run.why_alive(...)) or their dicts (Chain.as_dict())")


_ROOT_TYPES = ("module", "type", "frame", "function", "cell")


_CHAIN_LABEL_MAX = 40
"""Characters of an edge label drawn in :func:`chain`; longer ones end in an ellipsis."""


def _chain_path(c: Any) -> tuple[list[str], list[str]]:
    """Node labels (root, the type of each object on the way, target; escaped) and the edge labels between
    them (plain text, shortened to :data:`_CHAIN_LABEL_MAX` characters).

    Edge ``k`` leaves an object of type ``edges[k].source_type`` (the root
    for ``k = 0``), so node ``k`` is that type and the last node the target.
    """
    c = _as_chain(c)
    root = str(c.root)
    first = _esc(root if root.startswith(str(c.root_kind)) else f"{c.root_kind} {root}".strip())
    edges = list(c.edges)
    if edges and edges[0].source_type and edges[0].source_type not in (*_ROOT_TYPES, str(c.root_kind)):
        first += f"<br>({_esc(edges[0].source_type)})"  # the root object's own type
    nodes = [first] + [_esc(e.source_type or "?") for e in edges[1:]] + [_esc(c.target_type)]
    labels = [e.text if len(e.text) <= _CHAIN_LABEL_MAX else e.text[: _CHAIN_LABEL_MAX - 1] + "…" for e in edges]
    return nodes, labels or [""]  # no edges: the root holds the target directly


def chain(chains: Any, *, top: int = 6) -> go.Figure:
    """Why-alive chains drawn as paths: root -> intermediate objects -> leaked type, edges labelled.

    Each chain is one row, read left to right: the root (a module, a class,
    a thread's frame...) on the left in green, each object on the way by its
    type, the leaked type on the right in red; the label on each arrow is
    how the next object is held (``.agent``, ``["messages"]``, ``[3]``).
    Accepts one chain or a list, as :class:`tokdiag.retention.Chain` objects
    (``run.why_alive(...)``) or their dicts; at most ``top`` are drawn.
    """
    if chains is None:
        chains = []
    elif isinstance(chains, Mapping) or hasattr(chains, "edges"):
        chains = [chains]
    chains = list(chains)
    title = ("Why the objects are still alive<br><sup>follow each row from the root (left) to the leaked "
             "object (right); the arrow labels are the references to cut</sup>")
    if not chains:
        return _empty(title, "no retention chains recorded (nothing leaked, or why_alive was off)")
    shown = [_as_chain(c) for c in chains[:top]]
    paths = [_chain_path(c) for c in shown]
    if len(chains) > top:
        title = title.replace("<br>", f" ({top} of {len(chains)} chains)<br>", 1)
    fig = go.Figure()
    # An edge is as wide as its label (a long key such as ["https://..."] must not cover its neighbours),
    # at least one unit; the full chain is in the hover.
    positions = [np.concatenate([[0.0], np.cumsum([max(1.0, len(lab) / 11.0) for lab in labels])])
                 for _nodes, labels in paths]
    widest = max(float(p[-1]) for p in positions)
    for row, (nodes, labels) in enumerate(paths):
        y = -row
        whole = _esc(shown[row].text)
        xs = positions[row].tolist()
        colors = ["#2ca02c"] + ["#6b8fb3"] * (len(nodes) - 2) + ["#d62728"] if len(nodes) > 1 else ["#2ca02c"]
        hops = len(nodes) - 1
        fig.add_trace(go.Scatter(
            x=xs, y=[y] * len(nodes), mode="lines+markers+text", text=nodes,
            textposition=["top center" if k % 2 == 0 else "bottom center" for k in range(len(nodes))],
            marker={"size": 16, "color": colors, "line": {"width": 1, "color": "white"}},
            line={"color": "#bbbbbb", "width": 1}, name=f"chain {row + 1} ({hops} hop{'s' if hops != 1 else ''})",
            customdata=np.array([[n, k, whole] for k, n in enumerate(nodes)], dtype=object),
            hovertemplate="%{customdata[0]}<br>hop %{customdata[1]} of "
                          f"{len(nodes) - 1}<br>%{{customdata[2]}}<extra></extra>", showlegend=False,
            cliponaxis=False,
        ))
        for k, label in enumerate(labels):
            x0, x1 = xs[k], xs[k + 1]
            fig.add_annotation(x=x1 - 0.12, y=y, ax=x0 + 0.12, ay=y, xref="x", yref="y", axref="x", ayref="y",
                               showarrow=True, arrowhead=2, arrowsize=1.2, arrowwidth=1.5, arrowcolor="#555",
                               text="")
            fig.add_annotation(x=(x0 + x1) / 2, y=y, xref="x", yref="y", text=f"<b>{_esc(label)}</b>", showarrow=False,
                               font={"family": "monospace", "size": 12, "color": "#222"},
                               bgcolor="rgba(255,255,255,0.9)", bordercolor="#999", borderwidth=1, borderpad=2)
    _base_layout(fig, title, height=170 + 150 * len(paths))
    fig.update_xaxes(visible=False, range=[-0.6, widest + 0.6])
    fig.update_yaxes(visible=False, range=[-len(paths) + 0.5, 0.6])
    fig.update_layout(margin={"l": 40, "r": 40, "t": 90, "b": 30})
    return fig


# --------------------------------------------------------------------------- A/B comparison

_COMPARE_NEEDS = ("probe", "subject", "metric", "unit", "per_step_a", "per_step_a_low", "per_step_a_high",
                  "per_step_b", "per_step_b_low", "per_step_b_high", "change", "real")


def _scale(unit: str, values: np.ndarray) -> tuple[float, str]:
    """Divisor and axis unit for growth rates of ``unit``: KiB/step or MiB/step for bytes."""
    if unit == "bytes":
        finite = np.abs(values[np.isfinite(values)])
        if finite.size and finite.max() >= MiB:
            return MiB, "MiB/step"
        return KiB, "KiB/step"
    return 1.0, f"{unit}/step"


def compare(compare_df: pd.DataFrame, *, top: int | None = 15) -> go.Figure:
    """A/B: growth per step of each series in run A and run B, side by side with their 99% intervals.

    One panel per unit (bytes in KiB/step or MiB/step, objects/step,
    entries/step); bars are grouped per series, the category label says
    what changed (``fixed``, ``new leak``, ``less growth``, ``more growth``,
    ``unchanged``, as decided by :func:`tokdiag.analysis.compare`). Run
    labels come from ``compare_df.attrs["labels"]``. ``top``: per panel,
    the series with the largest growth in either run (None: all).
    """
    if not isinstance(compare_df, pd.DataFrame):
        raise ConfigError(f"compare: got a {type(compare_df).__name__}; pass tokdiag.compare(run_a, run_b)")
    missing = [c for c in _COMPARE_NEEDS if c not in compare_df.columns]
    if missing:
        raise ConfigError(f"compare: the DataFrame lacks column(s) {missing}; pass tokdiag.compare(run_a, run_b)")
    label_a, label_b = (list(compare_df.attrs.get("labels") or ("A", "B")) + ["A", "B"])[:2]
    la, lb = _esc(label_a), _esc(label_b)
    title = (f"Growth per step: {la} vs {lb}<br><sup>shorter bars in {lb} mean the change helped; "
             "whiskers are 99% intervals; faded: no real difference (intervals overlap or below the practical minimum)</sup>")
    if compare_df.empty:
        return _empty(title, "no series in common to compare")
    units = sorted(compare_df["unit"].astype(str).unique(), key=lambda u: (u != "bytes", u))
    parts = []
    for unit in units:
        part = compare_df[compare_df["unit"].astype(str) == unit]
        size = np.maximum(part["per_step_a"].abs().fillna(0.0), part["per_step_b"].abs().fillna(0.0))
        part = part.assign(_size=size).sort_values("_size", ascending=False, kind="stable")
        if top is not None:
            part = part.head(int(top))
        parts.append(part.iloc[::-1])  # largest at the top of a horizontal bar chart
    panel_px = [60 + 44 * len(p) for p in parts]
    gap_px = 90  # room for a panel's x-axis title
    plot_px = sum(panel_px) + gap_px * (len(parts) - 1)
    fig = make_subplots(rows=len(units), cols=1, row_heights=[h / sum(panel_px) for h in panel_px],
                        vertical_spacing=gap_px / plot_px if len(parts) > 1 else 0.0)
    for r, (unit, part) in enumerate(zip(units, parts), start=1):
        allv = part[["per_step_a", "per_step_b", "per_step_a_high", "per_step_b_high"]].to_numpy(dtype=float)
        div, axis_unit = _scale(unit, allv)
        short = [_series_name(str(p), str(s))[0] for p, s in zip(part["probe"], part["subject"])]
        if len(set(zip(short, part["probe"], part["metric"]))) < len(part):  # same class name in two modules
            short = [str(s) for s in part["subject"]]
        cats = [f"{_esc(s)} · {_esc(p)} {_esc(m)}<br><i>{_esc(c)}</i>"
                for s, p, m, c in zip(short, part["probe"], part["metric"], part["change"])]
        # B first: in a horizontal group the first trace is drawn at the bottom, so A reads above B
        for side, label, color in (("b", lb, "#1f77b4"), ("a", la, "#9e9e9e")):
            v = part[f"per_step_{side}"].to_numpy(dtype=float)
            lo = part[f"per_step_{side}_low"].to_numpy(dtype=float)
            hi = part[f"per_step_{side}_high"].to_numpy(dtype=float)
            plus = np.where(np.isfinite(hi - v), hi - v, 0.0) / div
            minus = np.where(np.isfinite(v - lo), v - lo, 0.0) / div
            custom = np.array([[label, _esc(s), format_rate(x, unit), format_value(a, unit), format_value(b, unit), _esc(c)]
                               for s, x, a, b, c in zip(part["subject"], v, lo, hi, part["change"])], dtype=object)
            fig.add_trace(go.Bar(
                y=cats, x=np.where(np.isfinite(v), v, 0.0) / div, orientation="h", name=label, legendgroup=side,
                showlegend=r == 1, marker={"color": color, "opacity": np.where(part["real"].to_numpy(bool), 1.0, 0.35)},
                error_x={"type": "data", "array": plus, "arrayminus": minus, "visible": True, "color": "#333"},
                customdata=custom,
                hovertemplate="%{customdata[0]}: %{customdata[1]}<br>%{customdata[2]} "
                              "(99%: %{customdata[3]} to %{customdata[4]})<br>change: %{customdata[5]}<extra></extra>",
            ), row=r, col=1)
        fig.update_xaxes(title_text=f"{unit}: growth per step ({axis_unit})", zeroline=True, zerolinecolor="#888",
                         row=r, col=1)
    _base_layout(fig, title, height=plot_px + 150)
    fig.update_layout(barmode="group", legend_title_text="run", legend_traceorder="reversed", margin={"l": 260})
    return fig
