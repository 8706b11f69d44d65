"""The verdict table: one row per judged series, coloured by its label."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from tokdiag.analysis.format import format_rate, format_value
from tokdiag.charts._style import (
    _LABEL_RANK,
    _LABEL_TINTS,
    LABEL_COLORS,
    _base_layout,
    _empty,
    _esc,
    _series_name,
)
from tokdiag.errors import ConfigError
from tokdiag.recording.run import Run

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


