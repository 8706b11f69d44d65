"""What every figure shares: colours, layout, escaping, argument checks.

Private to :mod:`tokdiag.charts`; the figure modules import from here.
"""

from __future__ import annotations

import fnmatch
import html
from collections.abc import Iterable, Sequence
from typing import Any

import plotly.graph_objects as go

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

