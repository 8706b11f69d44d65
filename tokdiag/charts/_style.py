"""What every figure shares: colours, layout, escaping, argument checks.

Private to :mod:`tokdiag.charts`; the figure modules import from here.
"""

from __future__ import annotations

import fnmatch
import html
from collections.abc import Iterable, Sequence
from typing import Any

import plotly.graph_objects as go

from tokdiag.analysis.classification import SEVERITY_RANK
from tokdiag.analysis.format import short_name as _series_name  # noqa: F401  (the figure modules' name for it)
from tokdiag.analysis.ledger import KINDS as LEDGER_KINDS
from tokdiag.errors import ConfigError
from tokdiag.recording.run import Run

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
_LABEL_RANK = SEVERITY_RANK

KIND_ORDER: tuple[str, ...] = LEDGER_KINDS
"""Ledger owner kinds, bottom of the stack first (:data:`tokdiag.analysis.ledger.KINDS`); ``unexplained`` is
drawn last, hatched grey."""

UNEXPLAINED = "unexplained (native or untracked)"
"""The ledger's remainder owner (what no probe accounts for)."""

_KIND_PALETTES: dict[str, tuple[str, ...]] = {
    "cache": ("#ff7f0e", "#fdae6b", "#e6550d", "#fdd0a2", "#a63603"),
    "native": ("#8c564b", "#c49c94", "#5d3a32"),
    "watch": ("#1f77b4", "#6baed6", "#08519c", "#9ecae1", "#3182bd"),
    "census": ("#2ca02c", "#98df8a", "#006d2c", "#74c476", "#31a354"),
    "tokdiag": ("#bcbd22", "#dbdb8d"),
    "allocator": ("#9467bd", "#c5b0d5", "#6a3d9a"),
    "file": ("#e377c2", "#f7b6d2"),
    "other": ("#17becf", "#9edae5"),
}
"""Colours per ledger kind: each kind its own hue, so an owner's kind reads from its colour."""
_UNEXPLAINED_COLOR = "#9e9e9e"
_LINE_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
                "#7f7f7f", "#bcbd22")
_MAX_LINES = 12


def _kind_colors(owners: Sequence[str], kinds: dict[str, str]) -> dict[str, str]:
    """A colour per ledger owner: its kind's palette in turn (``other`` for a kind not known), grey for unexplained."""
    used: dict[str, int] = {}
    out: dict[str, str] = {}
    for owner in owners:
        kind = kinds.get(owner, "other")
        if kind == "unexplained":
            out[owner] = _UNEXPLAINED_COLOR
            continue
        palette = _KIND_PALETTES.get(kind, _KIND_PALETTES["other"])
        out[owner] = palette[used.get(kind, 0) % len(palette)]
        used[kind] = used.get(kind, 0) + 1
    return out


TABLE_WIDTH_PX = 764
"""Width a table's text is wrapped for: an 800 px page less plotly's and the table's margins. On a wider page
the same lines fit with room to spare, so a row is as tall at 1,400 px as at 800 and nothing is clipped."""

_CHAR_PX = 6.3
"""Widest average advance of an 11 px sans-serif character (bold names included), for wrapping."""
_LINE_PX = 14.3
_ROW_PAD_PX = 13.7
_ROW_MIN_PX = 30.0
"""A plotly table row of k lines at 11 px is ``13.7 + 14.3 k`` px tall, at least 30 (measured in Chromium)."""

Segment = tuple[str, str]
"""A run of cell text and its style: ``""`` plain, ``"b"`` bold, ``"grey"`` a subtitle in grey."""


def _wrap_cell(segments: Sequence[Segment], chars: int, *, split_words: bool = True) -> tuple[str, int]:
    """(cell HTML, line count): each segment wrapped to ``chars`` characters, escaped, styled line by line.

    The lines are broken here, not by plotly, so the row height is known
    (:func:`_table`) and a styled line (plotly does not wrap inside a
    ``<span>``) never runs out of its column.
    """
    import textwrap

    lines: list[str] = []
    for text, style in segments:
        for line in textwrap.wrap(str(text), max(chars, 4), break_long_words=split_words,
                                  break_on_hyphens=False) or [""]:
            esc = _esc(line)
            lines.append(f"<b>{esc}</b>" if style == "b" else f'<span style="color:#555">{esc}</span>'
                         if style == "grey" else esc)
    return "<br>".join(lines), len(lines)


def _table(header: Sequence[str], columns: Sequence[Sequence[Sequence[Segment]]], widths: Sequence[float]
           ) -> tuple[list[str], list[list[str]], int]:
    """(header cells, body cells, figure height) of a table whose text is wrapped for :data:`TABLE_WIDTH_PX`.

    The height holds the title (80 px margin), the header and every row,
    and nothing more: no scroll bar inside the figure, no blank space below.
    """
    share = [w / float(sum(widths)) for w in widths]
    chars = [max(6, int(f * TABLE_WIDTH_PX / _CHAR_PX) - 2) for f in share]
    # headers in 12 px, their words whole (a column is never narrower than its longest header word)
    head, head_lines = zip(*(_wrap_cell([(h, "b")], int(c * 11 / 12), split_words=False)
                             for h, c in zip(header, chars, strict=True)), strict=True)
    body: list[list[str]] = []
    lines: list[list[int]] = []
    for col, c in zip(columns, chars, strict=True):
        cells = [_wrap_cell(segments, c) for segments in col]
        body.append([html_ for html_, _ in cells])
        lines.append([n for _, n in cells])
    rows = max((len(col) for col in columns), default=0)
    height = 88 + max(_ROW_MIN_PX, _ROW_PAD_PX + _LINE_PX * max(head_lines)) + 14
    for i in range(rows):
        k = max((col[i] for col in lines if i < len(col)), default=1)
        height += max(_ROW_MIN_PX, _ROW_PAD_PX + _LINE_PX * k)
    return list(head), body, int(height + 0.5)


def _esc(value: Any) -> str:
    """``value`` as text that plotly shows literally (its pseudo-HTML cannot see a tag in it)."""
    return html.escape(str(value), quote=False)  # plotly shows &quot; literally; without "<" no tag can form


def _step_axis(fig: go.Figure, **where: Any) -> go.Figure:
    """The x axis of a chart over steps: titled, and labelled in whole steps only (no "step 0.5" in a short run).

    ``where``: the subplot to set (``row=2, col=1``), as for ``fig.update_xaxes``.
    """
    xs = [float(x) for trace in fig.data if getattr(trace, "x", None) is not None for x in trace.x]
    span = max(xs) - min(xs) if xs else 0.0
    ticks: dict[str, Any] = {"tickformat": ",d"}
    if span <= 10:  # plotly would put ticks at halves
        ticks.update(dtick=1, tick0=0)
    return fig.update_xaxes(title_text=STEP_AXIS, **ticks, **where)


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


def _steps_note(run: Run) -> str:
    steps = run.steps
    return f"{len(steps)} snapshots over {steps[-1]} steps" if steps else "no snapshots"

