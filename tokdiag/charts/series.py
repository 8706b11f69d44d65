"""Series over steps: instances per class, cache entries and memory, RSS of several runs."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from tokdiag.charts._style import (
    _LINE_COLORS,
    _MAX_LINES,
    KiB,
    MiB,
    _base_layout,
    _check_run,
    _empty,
    _esc,
    _match,
    _step_axis,
)
from tokdiag.errors import ConfigError
from tokdiag.recording.run import Run
from tokdiag.recording.timeline import wide


def _whole_ticks(peak: float) -> dict[str, Any]:
    """Axis settings that label a count in whole numbers only (no "0.2 entries")."""
    if not peak > 0 or peak <= 5:
        return {"dtick": 1, "tick0": 0, "tickformat": ",d", "range": [0, max(float(peak), 1.0) * 1.1]}
    return {"tickformat": ",d"}


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
    _step_axis(fig)
    peak = float(np.nanmax([np.nanmax(np.asarray(t.y, dtype=float)) for t in fig.data])) if fig.data else 0.0
    fig.update_yaxes(title_text="instances alive (objects)", rangemode="tozero", **_whole_ticks(peak))
    return fig


def caches(run: Run, *, subjects: list[str] | None = None) -> go.Figure:
    """Per cache over steps: entries (top panel, whole numbers) and deep bytes (bottom; native estimate dashed).

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
    peak = np.nanmax(
        np.r_[
            size.reindex(columns=[c for c in chosen if c in size.columns]).to_numpy(dtype=float).ravel(),
            native.reindex(columns=[c for c in chosen if c in native.columns]).to_numpy(dtype=float).ravel(),
            0.0,
        ]
    )
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
    _step_axis(fig, row=2, col=1)
    shown = entries.reindex(columns=[c for c in chosen if c in entries.columns]).to_numpy(dtype=float)
    most = float(np.nanmax(shown)) if shown.size and np.isfinite(shown).any() else 0.0
    fig.update_yaxes(title_text="entries", rangemode="tozero", row=1, col=1, **_whole_ticks(most))
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
    _step_axis(fig)
    fig.update_yaxes(title_text="RSS (MiB)")
    return fig


