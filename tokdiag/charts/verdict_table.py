"""The verdict table: one row per judged series, coloured by its label."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from tokdiag.analysis.fold import fold_verdicts
from tokdiag.analysis.format import (
    format_interval,
    format_rate,
    format_value,
    measure_words,
)
from tokdiag.analysis.verdicts import DEFAULT_PROJECT_TO, VERDICT_COLUMNS, projection_horizon
from tokdiag.charts._style import (
    _LABEL_RANK,
    _LABEL_TINTS,
    LABEL_COLORS,
    Segment,
    _base_layout,
    _empty,
    _series_name,
    _table,
)
from tokdiag.errors import ConfigError
from tokdiag.recording.run import Run

_VERDICT_NEEDS = ("probe", "subject", "metric", "unit", "verdict", "per_step", "per_step_low", "per_step_high",
                  "projected", "reason")


def verdict_table(verdicts_df: pd.DataFrame | Run, *, project_to: int | None = None, top: int | None = 30,
                  fold: bool = True) -> go.Figure:
    """The verdicts as a table coloured by label, most alarming first.

    Columns: verdict, series (its short name in bold, and below it in grey
    the module and what was measured, with what was folded into it), growth
    per step in human units (``KiB/step``, ``entries/step``), its 99%
    interval (left blank when it says nothing: an exact count, ``0 B to 0
    B``), the value projected at ``project_to`` steps, and the reason; with
    several runs a ``run`` column first. The text is wrapped here so the
    figure is exactly as tall as its rows at any page width from 800 px.
    Rows are ordered leak, inconclusive, step, bounded, flat; within a label
    the series of named owners (watched classes, caches, RSS) before census
    types, bytes before counts, then by growth per step and by growth.
    ``top`` keeps the first rows (None: all). A settled series
    (step, bounded, flat) shows no growth per step or interval: its growth
    is in the reason and its level in the projection.

    ``fold`` (default): one row per owner and measure
    (:func:`tokdiag.analysis.fold_verdicts`): the collector's generation
    counters and tokdiag's own buffers are left out, a census count of a
    watched class and a census type's ``unowned_bytes`` are folded into the
    row they repeat, and a leaking ``gc_objects`` into the class that makes
    it grow (each said under the row's name). ``fold=False`` shows every
    series as judged.

    ``verdicts_df`` is the DataFrame of :func:`tokdiag.analysis.verdicts`,
    whose ``projected`` column is labelled with the horizon it was computed
    for (``df.attrs["project_to"]``; a different ``project_to`` is refused;
    10,000, the verdicts' default, when the DataFrame does not say), or a
    Run, whose verdicts are then computed with ``project_to`` (default
    10,000).
    """
    if project_to is not None and (isinstance(project_to, bool) or not isinstance(project_to, (int, np.integer))
                                   or project_to <= 0):
        raise ConfigError(f"project_to={project_to!r}: pass a positive number of steps, e.g. project_to=10_000")
    if top is not None and (isinstance(top, bool) or not isinstance(top, (int, np.integer)) or top <= 0):
        raise ConfigError(f"top={top!r}: pass a positive number of rows, or None for all")
    if isinstance(verdicts_df, Run):
        project_to = project_to or DEFAULT_PROJECT_TO
        df = verdicts_df.verdicts(project_to=project_to)
    elif isinstance(verdicts_df, pd.DataFrame):
        df = verdicts_df
        missing = [c for c in _VERDICT_NEEDS if c not in df.columns]
        if missing:
            raise ConfigError(f"verdict_table: the DataFrame lacks column(s) {missing}; pass run.verdicts() "
                              "or tokdiag.analysis.verdicts(timeline)")
        project_to = projection_horizon(df, project_to)
    else:
        raise ConfigError(f"verdict_table: got a {type(verdicts_df).__name__}; pass run.verdicts() or a Run")
    title = (f"Verdicts: what grows, and what it costs at {project_to:,} steps"
             "<br><sup>red = leak (keeps growing), amber = bounded (grew, then stopped), blue = one-off step, "
             "grey = flat, purple = not enough evidence yet</sup>")
    if df.empty:
        return _empty(title, "no series judged in this run (no snapshots with measurements)")
    if fold and all(c in df.columns for c in VERDICT_COLUMNS):
        folded = fold_verdicts(df)
        df = folded[folded["role"] == "main"]
    else:
        df = df.assign(folded="")
    rows = df.assign(
        _rank=df["verdict"].map(_LABEL_RANK).fillna(len(_LABEL_RANK)),
        _census=(df["probe"] == "census").astype(int),  # named owners (watch, caches, RSS) before census types
        _bytes=(df["unit"] != "bytes").astype(int),
        _size=-df["per_step"].abs().fillna(0.0),
        _growth=-df["growth"].abs().fillna(0.0),
    ).sort_values(["_rank", "_census", "_bytes", "_size", "_growth", "subject"], kind="stable")
    total = len(rows)
    if top is not None:
        rows = rows.head(int(top))
    if top is not None and total > len(rows):
        title = title.replace("<br>", f" (top {len(rows)} of {total} series)<br>", 1)
    many_runs = "run" in rows.columns and rows["run"].nunique() > 1
    labels = rows["verdict"].astype(str).tolist()
    series_col: list[list[Segment]] = []
    for r in rows.itertuples():
        name, where = _series_name(str(r.probe), str(r.subject))
        if str(r.probe) == "process":
            name, where = ("RSS" if r.metric == "rss" else measure_words("process", str(r.metric))), ""
        cell: list[Segment] = [(name, "b"), (" · ".join(x for x in (where, f"{r.probe} {r.metric}") if x), "grey")]
        if getattr(r, "folded", ""):
            cell.append((f"also: {r.folded}", "grey"))
        series_col.append(cell)
    growing = [v in ("leak", "inconclusive") for v in labels]  # a settled series' rate is its plateau's: 0
    per_step = [
        [(format_rate(v, u) if g else "", "")] for v, u, g in zip(rows["per_step"], rows["unit"], growing, strict=True)
    ]
    interval = [[(format_interval(lo, hi, u, per_step=True) if g else "", "")]
                for lo, hi, u, g in zip(rows["per_step_low"].astype(float), rows["per_step_high"].astype(float),
                                        rows["unit"], growing, strict=True)]
    projected = [[(format_value(v, u), "")] for v, u in zip(rows["projected"], rows["unit"], strict=True)]
    reasons = [[(str(r), "")] for r in rows["reason"]]
    strong = [LABEL_COLORS.get(v, "#cccccc") for v in labels]
    tint = [_LABEL_TINTS.get(v, "#ffffff") for v in labels]
    header = ["verdict", "series", "growth per step", "99% interval per step", f"projected at {project_to:,} steps",
              "reason"]
    columns: list[list[list[Segment]]] = [[[(v, "b")] for v in labels], series_col, per_step, interval, projected,
                                          reasons]
    widths = [84, 230, 120, 140, 110, 310]
    fills = [strong, tint, tint, tint, tint, tint]
    fonts = [["white"] * len(labels)] + [["#222222"] * len(labels)] * 5
    if many_runs:
        header.insert(0, "run")
        columns.insert(0, [[(str(x), "")] for x in rows["run"]])
        widths.insert(0, 90)
        fills.insert(0, tint)
        fonts.insert(0, ["#222222"] * len(labels))
    head, values, height = _table(header, columns, widths)
    fig = go.Figure(go.Table(
        columnwidth=widths,
        header={"values": head, "fill_color": "#404040", "font": {"color": "white", "size": 12}, "align": "left"},
        cells={"values": values, "fill_color": fills, "font": {"color": fonts, "size": 11},
               "align": "left", "height": 30},
    ))
    # Tall enough for every row (nothing behind the table's own scroll bar), no taller (no blank below).
    _base_layout(fig, title, height=min(height, 6000))
    fig.update_layout(margin={"l": 10, "r": 10, "t": 80, "b": 10})
    return fig
