"""Why-alive reference chains drawn as paths, root on the left, the kept instance on the right."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import plotly.graph_objects as go

from tokdiag.charts._style import _base_layout, _empty, _esc
from tokdiag.errors import ConfigError


def _as_chain(c: Any) -> Any:
    """A :class:`tokdiag.analysis.retention.Chain` from a Chain or its dict (``Chain.as_dict()``)."""
    from tokdiag.analysis.retention.records import Chain

    if isinstance(c, Chain):
        return c
    if isinstance(c, Mapping):
        return Chain.from_dict(dict(c))
    raise ConfigError(f"chain: {c!r} is not a retention chain; pass tokdiag.analysis.retention.Chain objects "
                      "(run.why_alive(...)) or their dicts (Chain.as_dict())")


_ROOT_TYPES = ("module", "type", "frame", "function", "cell")


_CHAIN_LABEL_MAX = 40
_CHAIN_UNIT_PX = 95
"""Pixels per unit of a chain's x axis: an edge label of 11 monospace characters, with its border."""
_CHAIN_MIN_WIDTH = 500
"""Characters of an edge label drawn in :func:`chain`; longer ones end in an ellipsis."""


def _chain_path(c: Any) -> tuple[list[str], list[str]]:
    """Node labels (root, the type of each object on the way, target; escaped) and the edge labels between
    them (plain text, shortened to :data:`_CHAIN_LABEL_MAX` characters).

    Edge ``k`` leaves an object of type ``edges[k].source_type`` (the root
    for ``k = 0``), so node ``k`` is that type and the last node the target.
    """
    from tokdiag.analysis.retention.records import CONTAINER_ROOTS

    c = _as_chain(c)
    root = str(c.root)
    # "module app", "class app.Bus", "frame serve (...)" say their kind; "sys.modules" and the roots
    # held outside Python's heap ("held outside ...", "unreachable: ...") are written as they are
    named = root.startswith(str(c.root_kind)) or root in CONTAINER_ROOTS or c.root_kind in ("c", "gc")
    first = _esc(root if named else f"{c.root_kind} {root}".strip())
    edges = list(c.edges)
    if edges and edges[0].source_type and edges[0].source_type not in (*_ROOT_TYPES, str(c.root_kind)):
        first += f"<br>({_esc(edges[0].source_type)})"  # the root object's own type
    target = c.target_type if c.count == 1 else f"{c.target_type} (x{c.count})"  # instances held this way
    nodes = [first] + [_esc(e.source_type or "?") for e in edges[1:]] + [_esc(target)]
    labels = [e.text if len(e.text) <= _CHAIN_LABEL_MAX else e.text[: _CHAIN_LABEL_MAX - 1] + "…" for e in edges]
    return nodes, labels or [""]  # no edges: the root holds the target directly


def chain(chains: Any, *, top: int = 6) -> go.Figure:
    """Why-alive chains drawn as paths: root -> intermediate objects -> leaked type, edges labelled.

    Each chain is one row, read left to right: the root (a module, a class,
    a thread's frame...) on the left in green, each object on the way by its
    type, the leaked type on the right in red; the label on each arrow is
    how the next object is held (``.agent``, ``["messages"]``, ``[3]``).
    Accepts one chain or a list, as :class:`tokdiag.analysis.retention.Chain` objects
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
    # Drawn at a fixed width in which every label fits (an edge unit holds 11 characters of its monospace label),
    # the root's and the target's names included: a narrow page scrolls the chart sideways, never squeezes it
    # into overlapping labels (tokdiag's export gives such a figure its own horizontal scroll).
    def half(label: str) -> float:  # half a node label's width, in units
        return max(len(part) for part in re.sub(r"<[^>]+>", "", label.replace("<br>", "\n")).split("\n")) / 2 / 12.0

    left = max([0.6, *(half(nodes[0]) + 0.2 for nodes, _ in paths)])
    right = max([0.6, *(half(nodes[-1]) - (widest - float(pos[-1])) + 0.2
                        for (nodes, _), pos in zip(paths, positions, strict=True))])
    _base_layout(fig, title, height=170 + 150 * len(paths))
    fig.update_xaxes(visible=False, range=[-left, widest + right])
    fig.update_yaxes(visible=False, range=[-len(paths) + 0.5, 0.6])
    fig.update_layout(margin={"l": 20, "r": 20, "t": 90, "b": 30},
                      width=max(_CHAIN_MIN_WIDTH, round((left + widest + right) * _CHAIN_UNIT_PX) + 40))
    return fig


