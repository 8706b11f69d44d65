"""The memory ledger as a stacked area chart: who owns the RSS growth, step by step."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from tokdiag.charts._style import (
    _KIND_PALETTES,
    _UNEXPLAINED_COLOR,
    KIND_ORDER,
    STEP_AXIS,
    UNEXPLAINED,
    MiB,
    _base_layout,
    _empty,
    _esc,
)
from tokdiag.errors import ConfigError
from tokdiag.recording.run import Run


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


