"""The memory ledger: who owns the RSS growth after warm-up (stacked over steps), and what warm-up cost (bars)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from tokdiag.analysis import ledger as analysis_ledger
from tokdiag.analysis import startup_costs
from tokdiag.analysis.format import format_signed
from tokdiag.charts._style import (
    KIND_ORDER,
    UNEXPLAINED,
    KiB,
    MiB,
    _base_layout,
    _empty,
    _esc,
    _kind_colors,
    _step_axis,
)
from tokdiag.errors import ConfigError
from tokdiag.recording.run import Run

_HATCH = {"shape": "/", "fgcolor": "#555555", "bgcolor": "#d9d9d9", "solidity": 0.3}
_STARTUP_SHARE = 0.01
"""Owners below this share of the start-up cost are drawn as one bar ("N other owners")."""
_LEDGER_OWNERS = 12
"""Owners drawn by name in the ledger (the largest); the rest are one band ("N other owners"), so the legend fits."""


def _short_owner(owner: str, kind: str) -> str:
    """A bar label: ``PageSnapshot (watch)``, ``_ENCODINGS (native estimate)``; the remainder as it is."""
    if kind in ("unexplained", "other", "allocator", "file", "tokdiag"):
        return owner
    if kind in ("watch", "census") and "." in owner and " " not in owner:
        return f"{owner.rsplit('.', 1)[1]} ({kind})"
    if ":" in owner:
        return owner.rsplit(":", 1)[1] + ("" if kind == "native" else f" ({kind})")
    return owner


def _ledger_frame(source: Any, since: Any) -> tuple[pd.DataFrame, pd.Series | None, str, int | None, int | None]:
    """(ledger rows, RSS growth by step or None, run name, baseline step, first step) from a Run or a DataFrame."""
    if isinstance(source, Run):
        rss = source.series("process", "process", "rss").dropna()
        if rss.empty:  # nothing to split (no snapshot, or a timeline without the process probe)
            return pd.DataFrame(columns=["run", "step", "owner", "kind", "bytes"]), None, source.name, None, None
        df = analysis_ledger(source.timeline, since=since)
        base = int(next(iter(df.attrs["baseline"].values())))
        kept = rss[rss.index >= base]
        return df, kept - rss.loc[base], source.name, base, int(rss.index[0])
    if isinstance(source, pd.DataFrame):
        missing = [c for c in ("step", "owner", "kind", "bytes") if c not in source.columns]
        if missing:
            raise ConfigError(f"ledger: the DataFrame lacks column(s) {missing}; pass a Run or "
                              "tokdiag.analysis.ledger(timeline) (columns run, step, owner, kind, bytes)")
        runs = source["run"].dropna().unique().tolist() if "run" in source.columns else []
        if len(runs) > 1:
            raise ConfigError(f"ledger: the DataFrame holds {len(runs)} runs ({runs[:4]}); chart one at a "
                              "time, e.g. ledger(df[df.run == name])")
        stated = (source.attrs.get("baseline") or {}).get(runs[0]) if runs else None
        return source, None, str(runs[0]) if runs else "", None if stated is None else int(stated), None
    raise ConfigError(f"ledger: got a {type(source).__name__}; pass a Run or a ledger DataFrame "
                      "(tokdiag.analysis.ledger(run.timeline))")


def _lump_small_owners(table: pd.DataFrame, kinds: dict[str, str]) -> pd.DataFrame:
    """The :data:`_LEDGER_OWNERS` largest owners (by their largest growth or shrinkage) and the unexplained
    remainder as they are; the others summed into one "N other owners" column (``kinds`` learns its kind)."""
    named = [o for o in table.columns if o != UNEXPLAINED]
    if len(named) <= _LEDGER_OWNERS + 1:  # one lumped owner would not be shorter than its own name
        return table
    size = table[named].abs().max().sort_values(ascending=False, kind="stable")
    rest = size.index[_LEDGER_OWNERS:].tolist()
    lumped = f"{len(rest)} other owners"
    kinds[lumped] = "other"
    return table.drop(columns=rest).assign(**{lumped: table[rest].sum(axis=1)})


def _kind_key(kind: str) -> int:
    return KIND_ORDER.index(kind) if kind in KIND_ORDER else len(KIND_ORDER) - 1


def ledger(run_or_ledger_df: Run | pd.DataFrame, *, since: str | int = "warmup", rss: bool = True,
           title: str | None = None) -> go.Figure:
    """Who owns the memory growth after warm-up: owners' growth since the baseline, stacked, with RSS on top.

    The baseline is :func:`tokdiag.analysis.ledger`'s ``since``: by default
    the end of the run's warm-up, so a vocabulary loaded once does not bury
    what keeps growing (:func:`startup` draws what warm-up cost);
    ``since="start"`` draws from the first snapshot. Owners are stacked
    bottom-up by kind (caches, native, watched classes, census types,
    tokdiag itself, allocator free memory, file pages; each kind its own
    hue) and the unexplained remainder last, hatched grey. An owner that
    shrinks below the baseline is stacked downwards from zero (a separate
    stack for negative parts), so the stack still adds up: at every step
    the sum of all bands equals RSS growth since the baseline, drawn as a
    black line when ``rss`` is true (the run's own RSS series for a Run,
    the owners' sum for a ledger DataFrame).

    ``run_or_ledger_df``: a :class:`~tokdiag.Run`, or the DataFrame of
    :func:`tokdiag.analysis.ledger` (columns ``run, step, owner, kind,
    bytes``) for one run (``since`` is then the DataFrame's own). The legend
    names each owner short (``PageSnapshot (watch)``); its trace's
    ``legendgroup`` and the hover carry the full name. The 12 largest
    owners are drawn by name, the rest as one band, "N other owners".
    """
    df, rss_growth, name, base, first = _ledger_frame(run_or_ledger_df, since)
    if base is not None and first is not None and base > first:
        since_txt = f"growth since step {base}, the end of warm-up (what warm-up cost: charts.startup)"
    elif base is not None:
        since_txt = f"growth since step {base}" + (", the first snapshot" if first == base else "")
    else:
        since_txt = "growth since the ledger's baseline"
    heading = title if title is not None else (
        f"Who owns the memory growth{': ' + _esc(name) if name else ''}"
        f"<br><sup>{since_txt}; the grey hatched band is what no probe explains</sup>")
    if df.empty:
        return _empty(heading, "no ledger rows in this run (no snapshot measured RSS)")

    table = df.pivot_table(index="step", columns="owner", values="bytes", aggfunc="sum").sort_index().fillna(0.0)
    kinds = df.drop_duplicates("owner", keep="last").set_index("owner")["kind"].astype(str).to_dict()
    table = _lump_small_owners(table, kinds)
    order = sorted(table.columns, key=lambda o: (_kind_key(kinds.get(o, "")), o == UNEXPLAINED,
                                                 -float(table[o].abs().max()), str(o)))
    colors = _kind_colors(order, kinds)
    steps = table.index.to_numpy()
    fig = go.Figure()
    for owner in order:
        kind = kinds.get(owner, "other")
        values = table[owner].to_numpy(dtype=float) / MiB
        label = _esc(owner)
        short = _esc(_short_owner(owner, kind))  # the legend: short names, so the plot keeps its width at 800 px
        custom = np.array([[label, _esc(kind), v] for v in values], dtype=object)
        parts = []
        if (values > 0).any() or not (values < 0).any():
            parts.append(("up", np.clip(values, 0.0, None)))
        if (values < 0).any():
            parts.append(("down", np.clip(values, None, 0.0)))
        for n, (group, part) in enumerate(parts):
            fig.add_trace(go.Scatter(
                x=steps, y=part, name=short, legendgroup=label, showlegend=n == 0, stackgroup=group,
                mode="lines", line={"width": 0.5, "color": colors[owner]}, fillcolor=colors[owner],
                fillpattern=_HATCH if kind == "unexplained" else None,
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
    fig.update_layout(legend_title_text="owner", legend_traceorder="reversed", hovermode="closest")
    _step_axis(fig)
    axis = f"growth since step {base} (MiB)" if base is not None else "growth since the baseline (MiB)"
    fig.update_yaxes(title_text=axis, zeroline=True, zerolinecolor="#888")
    return fig


def startup(run_or_startup_df: Run | pd.DataFrame, *, title: str | None = None) -> go.Figure:
    """What warm-up cost: each owner's growth from the first snapshot to the end of warm-up, as bars.

    The other half of :func:`ledger`: one bar per owner of
    :func:`tokdiag.analysis.startup_costs` (largest at the top, labelled by
    short name and kind, coloured by kind like the ledger, the unexplained
    remainder hatched grey; owners under 1% of the total drawn as one bar);
    the bars add up to RSS growth over warm-up, which the title states. In MiB, or
    KiB when it is all below 1 MiB. ``run_or_startup_df``: a Run, or the
    DataFrame of :func:`tokdiag.analysis.startup_costs` for one run.
    """
    if isinstance(run_or_startup_df, Run):
        run = run_or_startup_df
        if run.series("process", "process", "rss").dropna().empty:
            return _empty(title or "What start-up cost", "no RSS measured in this run: nothing to split")
        df, name, first = startup_costs(run.timeline), run.name, int(min(run.steps))
    elif isinstance(run_or_startup_df, pd.DataFrame):
        df = run_or_startup_df
        missing = [c for c in ("owner", "kind", "bytes", "step") if c not in df.columns]
        if missing:
            raise ConfigError(f"startup: the DataFrame lacks column(s) {missing}; pass a Run or "
                              "tokdiag.analysis.startup_costs(run.timeline)")
        if "run" in df.columns and df["run"].nunique() > 1:
            raise ConfigError("startup: the DataFrame holds several runs; chart one at a time, e.g. "
                              "startup(df[df.run == name])")
        name, first = (str(df["run"].iloc[0]) if "run" in df.columns and len(df) else ""), None
    else:
        raise ConfigError(f"startup: got a {type(run_or_startup_df).__name__}; pass a Run or "
                          "tokdiag.analysis.startup_costs(run.timeline)")
    end = int(df["step"].iloc[0]) if len(df) else None
    total = float(df["bytes"].sum())
    span = f"from step {first} to {end}" if first is not None else f"up to step {end}"
    heading = title if title is not None else (
        f"What start-up cost{': ' + _esc(name) if name else ''}: RSS {format_signed(total, 'bytes')} {span}"
        "<br><sup>one-off costs before the end of warm-up (imports, vocabularies, caches filling), "
        "left out of the ledger</sup>")
    if df.empty or (first is not None and end == first):
        return _empty(heading, "no warm-up in this run: the ledger starts at the first snapshot")
    rows = df[df["bytes"] != 0].copy()
    rows["_order"] = rows["bytes"].abs()
    small = (rows["_order"] < _STARTUP_SHARE * max(abs(total), 1.0)) & (rows["kind"] != "unexplained")
    if small.sum() > 1:  # many crumbs: one bar, so the bars still add up
        crumbs = rows[small]
        lump = pd.DataFrame([{"owner": f"{len(crumbs)} other owners", "kind": "other", "bytes": crumbs["bytes"].sum(),
                              "_order": abs(crumbs["bytes"].sum())}])
        rows = pd.concat([rows[~small], lump], ignore_index=True)
    rows = rows.sort_values("_order", kind="stable")  # largest at the top of a horizontal bar chart
    kinds = dict(zip(rows["owner"].astype(str), rows["kind"].astype(str), strict=True))
    colors = _kind_colors(list(kinds), kinds)
    div, unit = (MiB, "MiB") if rows["bytes"].abs().max() >= MiB else (KiB, "KiB")
    fig = go.Figure()
    for r in rows.itertuples():
        owner = str(r.owner)
        label = _esc(_short_owner(owner, str(r.kind)))
        fig.add_trace(go.Bar(
            y=[label], x=[float(r.bytes) / div], orientation="h", name=_esc(owner), showlegend=False,
            marker={"color": colors[owner], "pattern": _HATCH if r.kind == "unexplained" else None},
            text=[format_signed(float(r.bytes), "bytes")], textposition="outside", cliponaxis=False,
            customdata=[[_esc(owner), _esc(r.kind), format_signed(float(r.bytes), "bytes")]],
            hovertemplate="%{customdata[0]} (%{customdata[1]})<br>%{customdata[2]}<extra></extra>"))
    _base_layout(fig, heading, height=160 + 34 * len(rows))
    # the right margin holds the figure printed past the longest bar ("+23.6 MiB"): drawn there, never cut
    fig.update_layout(margin={"l": 10, "r": 90, "t": 90, "b": 60}, bargap=0.25)
    fig.update_yaxes(automargin=True)
    fig.update_xaxes(title_text=f"memory added over warm-up ({unit})", zeroline=True, zerolinecolor="#888")
    return fig
