"""A/B: growth per step of two runs side by side, with intervals, one panel per unit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from tokdiag.analysis.format import format_rate, format_value
from tokdiag.analysis.tables import change_short, side_labels
from tokdiag.charts._style import KiB, MiB, _base_layout, _empty, _esc, _series_name
from tokdiag.errors import ConfigError

_COMPARE_NEEDS = ("probe", "subject", "metric", "unit", "per_step_a", "per_step_a_low", "per_step_a_high",
                  "per_step_b", "per_step_b_low", "per_step_b_high", "change", "real")


_AXIS_WHAT = {"bytes": "memory growth", "objects": "instances", "entries": "cache entries", "blocks": "blocks"}


def _scale(unit: str, values: np.ndarray) -> tuple[float, str]:
    """Divisor and axis unit for growth rates of ``unit``: KiB/step or MiB/step for bytes."""
    if unit == "bytes":
        finite = np.abs(values[np.isfinite(values)])
        if finite.size and finite.max() >= MiB:
            return MiB, "MiB/step"
        return KiB, "KiB/step"
    return 1.0, f"{unit}/step"


def _axis_title(unit: str, axis_unit: str) -> str:
    """``memory growth (KiB/step)``, ``instances (objects/step)``: what grows, then its unit once."""
    return f"{_AXIS_WHAT.get(unit, unit)} ({axis_unit})"


def compare(compare_df: pd.DataFrame, *, top: int | None = 15) -> go.Figure:
    """A/B: growth per step of each series in run A and run B, side by side with their 99% intervals.

    One panel per unit (bytes in KiB/step or MiB/step, objects/step,
    entries/step); bars are grouped per series, the category label says
    what changed (``fixed``, ``new leak``, ``less growth``, ``more growth``,
    ``unchanged``, as decided by :func:`tokdiag.analysis.compare`; a fix and
    a new leak with the two verdicts: ``fixed (leak → flat)``). Run labels
    come from ``compare_df.attrs["labels"]`` (two equal labels get ``(A)``
    and ``(B)``). ``top``: per panel,
    the series with the largest growth in either run (None: all).
    """
    if not isinstance(compare_df, pd.DataFrame):
        raise ConfigError(f"compare: got a {type(compare_df).__name__}; pass tokdiag.compare(run_a, run_b)")
    missing = [c for c in _COMPARE_NEEDS if c not in compare_df.columns]
    if missing:
        raise ConfigError(f"compare: the DataFrame lacks column(s) {missing}; pass tokdiag.compare(run_a, run_b)")
    label_a, label_b = side_labels(compare_df)
    la, lb = _esc(label_a), _esc(label_b)
    title = (
        f"Growth per step: {la} vs {lb}<br><sup>shorter bars in {lb} mean the change helped; "
        "whiskers are 99% intervals;<br>"
        "faded: no real difference (intervals overlap or below the practical minimum)</sup>"
    )
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
    for r, (unit, part) in enumerate(zip(units, parts, strict=True), start=1):
        allv = part[["per_step_a", "per_step_b", "per_step_a_high", "per_step_b_high"]].to_numpy(dtype=float)
        div, axis_unit = _scale(unit, allv)
        short = [("RSS" if m == "rss" else str(m)) if p == "process" else _series_name(str(p), str(s))[0]
                 for p, s, m in zip(part["probe"], part["subject"], part["metric"], strict=True)]
        if len(set(zip(short, part["probe"], part["metric"], strict=True))) < len(
            part
        ):  # same class name in two modules
            short = [str(s) for s in part["subject"]]
        cats = [f"{_esc(s)} · {_esc(p)} {_esc(m)}<br><i>{_esc(change_short(c, va, vb))}</i>"
                for s, p, m, c, va, vb in zip(short, part["probe"], part["metric"], part["change"],
                                              part.get("verdict_a", [None] * len(part)),
                                              part.get("verdict_b", [None] * len(part)), strict=True)]
        # B first: in a horizontal group the first trace is drawn at the bottom, so A reads above B
        for side, label, color in (("b", lb, "#1f77b4"), ("a", la, "#9e9e9e")):
            v = part[f"per_step_{side}"].to_numpy(dtype=float)
            lo = part[f"per_step_{side}_low"].to_numpy(dtype=float)
            hi = part[f"per_step_{side}_high"].to_numpy(dtype=float)
            plus = np.where(np.isfinite(hi - v), hi - v, 0.0) / div
            minus = np.where(np.isfinite(v - lo), v - lo, 0.0) / div
            custom = np.array(
                [
                    [label, _esc(s), format_rate(x, unit), format_value(a, unit), format_value(b, unit), _esc(c)]
                    for s, x, a, b, c in zip(part["subject"], v, lo, hi, part["change"], strict=True)
                ],
                dtype=object,
            )
            fig.add_trace(go.Bar(
                y=cats, x=np.where(np.isfinite(v), v, 0.0) / div, orientation="h", name=label, legendgroup=side,
                showlegend=r == 1, marker={"color": color, "opacity": np.where(part["real"].to_numpy(bool), 1.0, 0.35)},
                error_x={"type": "data", "array": plus, "arrayminus": minus, "visible": True, "color": "#333"},
                customdata=custom,
                hovertemplate="%{customdata[0]}: %{customdata[1]}<br>%{customdata[2]} "
                              "(99%: %{customdata[3]} to %{customdata[4]})<br>change: %{customdata[5]}<extra></extra>",
            ), row=r, col=1)
        fig.update_xaxes(title_text=_axis_title(unit, axis_unit), zeroline=True, zerolinecolor="#888", row=r, col=1)
    _base_layout(fig, title, height=plot_px + 150)
    fig.update_layout(
        barmode="group", legend_title_text="run", legend_traceorder="reversed", margin={"l": 260, "t": 100}
    )
    return fig
