"""Top growers: one row per owner that grew, every probe's measure merged, coloured by verdict."""

from __future__ import annotations

from typing import Any

import pandas as pd
import plotly.graph_objects as go

from tokdiag.analysis.growers import GROWER_COLUMNS, growers_table
from tokdiag.analysis.growers import growers as analysis_growers
from tokdiag.charts._style import (
    _LABEL_TINTS,
    LABEL_COLORS,
    Segment,
    _base_layout,
    _empty,
    _table,
)
from tokdiag.errors import ConfigError


def growers(run_or_growers_df: Any, *, top: int | None = 20) -> go.Figure:
    """The owners that grew, as a table: largest growth per step first, with what holds each of them.

    One row per owner (a class watched and counted by the census is one
    row), the figures of :func:`tokdiag.analysis.growers_table` in six
    columns: the owner (its kind and what its bytes measure below it), the
    verdict in its colour, growth per step in bytes (with its interval when
    it says something) and in instances, what it grew by and where it ended,
    the recorded why-alive chain (``held by``) with allocation sites, and
    what else measured it. ``run_or_growers_df``: a Run, a list of Runs (a ``run``
    column tells them apart), or the DataFrame of
    :func:`tokdiag.analysis.growers`; ``top`` as there.
    """
    if isinstance(run_or_growers_df, pd.DataFrame):
        missing = [c for c in GROWER_COLUMNS if c not in run_or_growers_df.columns]
        if missing:
            raise ConfigError(f"growers: the DataFrame lacks column(s) {missing}; pass a Run or "
                              "tokdiag.analysis.growers(run)")
        df = run_or_growers_df
    else:
        df = analysis_growers(run_or_growers_df, top=top)
    title = ("What grows: one row per owner, largest growth per step first"
             "<br><sup>every probe's measure of an owner merged into its row; 'held by' is the reference chain "
             "recorded at the end of the run</sup>")
    if df.empty:
        return _empty(title, "no owner grew in this run (nothing leaked, stepped or settled above where it began)")
    table = growers_table(df)
    verdicts = table["verdict"].tolist()

    def col(name: str) -> list[str]:
        return [str(v) for v in table[name]] if name in table.columns else [""] * len(table)

    def lines(*parts: tuple[str, str]) -> list[Segment]:
        return [(text, style) for text, style in parts if text]

    header = ["owner", "verdict", "growth per step", "grew", "held by", "also measured"]
    columns: list[list[list[Segment]]] = [
        [
            lines((str(n), "b"), (" · ".join(x for x in (k, m) if x), "grey"))
            for n, k, m in zip(table.index, col("kind"), col("measured by"), strict=True)
        ],
        [[(v, "b")] for v in verdicts],
        [lines((g, ""), (c, "")) for g, c in zip(col("growth per step"), col("instances per step"), strict=True)],
        [
            lines((g, ""), (f"now {e}" if e else "", "grey"))
            for g, e in zip(col("grew"), col("at the end"), strict=True)
        ],
        [
            lines((h, ""), (f"allocated at {a}" if a else "", "grey"))
            for h, a in zip(col("held by"), col("allocated at"), strict=True)
        ],
        [lines((x, "grey")) for x in col("also measured")],
    ]
    widths = [170, 80, 150, 140, 260, 200]
    if "run" in table.columns:
        header.insert(0, "run")
        columns.insert(0, [[(r, "")] for r in col("run")])
        widths.insert(0, 90)
    tint = [_LABEL_TINTS.get(v, "#ffffff") for v in verdicts]
    fill = [[LABEL_COLORS.get(v, "#cccccc") for v in verdicts] if h == "verdict" else tint for h in header]
    font = [["white"] * len(verdicts) if h == "verdict" else ["#222222"] * len(verdicts) for h in header]
    head, values, height = _table(header, columns, widths)
    fig = go.Figure(go.Table(
        columnwidth=widths,
        header={"values": head, "fill_color": "#404040", "font": {"color": "white", "size": 12}, "align": "left"},
        cells={"values": values, "fill_color": fill, "font": {"color": font, "size": 11}, "align": "left",
               "height": 30},
    ))
    _base_layout(fig, title, height=min(height, 6000))
    fig.update_layout(margin={"l": 10, "r": 10, "t": 80, "b": 10})
    return fig
