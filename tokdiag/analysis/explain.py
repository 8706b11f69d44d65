"""Findings that explain RSS: who owns its growth after warm-up, what warm-up cost, and contradictions.

Three kinds of :class:`~tokdiag.analysis.findings.Finding`, added to a run's
findings by :func:`~tokdiag.analysis.findings.findings`:

- ``ledger``: the ledger from the end of warm-up
  (:func:`tokdiag.analysis.ledger`, ``since="warmup"``) read at the last
  snapshot: how much RSS grew, its largest owner (``mostly`` when one owner
  holds at least :data:`DOMINANT` of it) and the share no owner accounts
  for. Left out when RSS grew by less than the practical minimum (64 KiB).
- ``startup``: what the snapshots before the end of warm-up cost
  (:func:`tokdiag.analysis.startup_costs`), when that is at least the
  practical minimum: the one-off costs the ledger leaves out.
- ``reconcile``: an owner whose bytes surely grow faster than RSS (the
  lower bound of its rate above the upper bound of RSS's, by at least the
  practical minimum over ``project_to`` steps), with the reasons that
  apply, each measured on the run: the two were fitted over different
  windows (different warm-ups); the allocators' free memory fell over RSS's
  window (new objects reused memory freed earlier, which RSS had already
  counted), or, without the allocator probe, that this cannot be ruled
  out; the owner's figure includes a native estimate; RSS itself was
  judged settled. RSS growing faster than its owners is the ``ledger``
  finding's unattributed share.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from tokdiag.analysis.findings import Finding, Series, code, sentence
from tokdiag.analysis.format import format_signed, format_value, short_name
from tokdiag.analysis.ledger import OTHER_OBJECTS, ledger, startup_costs
from tokdiag.analysis.thresholds import PRACTICAL_MIN
from tokdiag.errors import ConfigError

__all__ = ["DOMINANT", "ledger_findings", "reconcile_findings"]

DOMINANT = 0.5
"""An owner holding at least this share of the RSS growth after warm-up is named as where it mostly went."""

_MIN = PRACTICAL_MIN["bytes"]


def _owner_label(owner: str, kind: str) -> str:
    """A ledger owner as a sentence names it: ``Job``, ``_ENCODINGS (native estimate)``."""
    if kind in ("watch", "census") and owner != OTHER_OBJECTS:
        return short_name("census", owner)[0]
    if kind in ("cache", "native") and ":" in owner:
        return owner.rsplit(":", 1)[1]
    return owner


def _top(rows: pd.DataFrame, total: float) -> list[str]:
    """Sentence pieces naming the largest owner of ``rows`` (``mostly`` when it holds :data:`DOMINANT` of ``total``).

    Shares are given only when the owners do not add up to more than
    ``total`` (a share of 1,100% says nothing).
    """
    owned = rows[rows["kind"] != "unexplained"].sort_values("bytes", ascending=False)
    if not len(owned) or not float(owned["bytes"].iloc[0]) > 0:
        return []
    top = owned.iloc[0]
    size = float(top["bytes"])
    label = _owner_label(str(top["owner"]), str(top["kind"]))
    over = float(owned["bytes"].clip(lower=0).sum()) > total
    if over:
        return ["its largest owner ", code(label), f" {format_signed(size, 'bytes')}"]
    share = size / total
    lead = "mostly " if share >= DOMINANT else "largest owner "
    return [lead, code(label), f" {format_value(size, 'bytes')} ({share:.0%})"]


def ledger_findings(run: Any, table: pd.DataFrame | None = None) -> list[Finding]:
    """``startup`` and ``ledger`` findings of one run (see the module docstring); ``[]`` without RSS."""
    name = str(run.name)
    try:
        led = ledger(run.timeline, since="warmup")
        start = startup_costs(run.timeline)
    except ConfigError:  # no RSS, or an empty timeline: nothing to split
        return []
    out: list[Finding] = []
    base = int(next(iter(led.attrs["baseline"].values())))
    first = int(pd.to_numeric(run.timeline["step"]).min())
    if base > first and len(start):
        total = float(start["bytes"].sum())
        if total >= _MIN:
            pieces = _top(start, total)
            out.append(Finding("startup", name, "run", "step", sentence(
                f"Start-up (step {first} to {base}, left out of the ledger): RSS {format_signed(total, 'bytes')}",
                *([", "] + pieces if pieces else []), "."), numbers={"bytes": total, "step": float(base)}))
    end = led[led["step"] == led["step"].max()]
    growth = float(end["bytes"].sum())
    last = int(led["step"].max())
    if growth < _MIN:
        return out
    pieces = _top(end, growth)
    unexplained = float(end.loc[end["kind"] == "unexplained", "bytes"].sum())
    since = f"after warm-up (step {base} to {last})" if base > first else f"over the run (step {first} to {last})"
    if unexplained > growth:
        rest = (f"none of it attributed (native memory, or objects no probe sees); its owners shrank by "
                f"{format_value(unexplained - growth, 'bytes')}")
    elif unexplained >= 0:
        rest = f"{unexplained / growth:.0%} of it not attributed (native memory, or objects no probe sees)"
    else:
        rest = (f"the owners hold {format_value(-unexplained, 'bytes')} more than RSS grew: they reused memory freed "
                "before the baseline, which RSS already counted")
    body = [f"RSS {since}: {format_signed(growth, 'bytes')}; "] + pieces + (["; "] if pieces else []) + [rest, "."]
    out.append(Finding("ledger", name, "run", "ledger", sentence(*body),
                       numbers={"growth": growth, "unexplained": unexplained, "baseline": float(base)}))
    return out


def _free_drop(tl: pd.DataFrame, start: float) -> float | None:
    """How much the allocators' free memory fell from step ``start`` to the end; None without the probe."""
    free = tl[(tl["probe"] == "allocator") & (tl["metric"] == "free")]
    if free.empty:
        return None
    wide = free.pivot_table(index="step", columns="subject", values="value", aggfunc="last").sort_index().ffill()
    wide = wide[wide.index >= start]
    if len(wide) < 2:
        return None
    total = wide.fillna(0.0).sum(axis=1)
    return float(total.iloc[0] - total.iloc[-1])


def reconcile_findings(run: Any, leaks: Sequence[Finding], process: Sequence[Series],
                       project_to: int) -> list[Finding]:
    """``reconcile`` findings: owners whose bytes surely grow faster than RSS, and why (module docstring)."""
    rss = next((s for s in process if s.metric == "rss"), None)
    if rss is None:
        return []
    tl = run.timeline
    steps = np.sort(pd.to_numeric(tl["step"], errors="coerce").dropna().unique())
    dx = float(np.median(np.diff(steps))) if steps.size > 1 else 1.0
    rss_rate = rss.per_step if math.isfinite(rss.per_step) else 0.0
    rss_high = rss.per_step_high if math.isfinite(rss.per_step_high) else math.inf
    out: list[Finding] = []
    for f in leaks:
        parts = [s for s in f.series if s.role == "main" and s.verdict == "leak" and s.unit == "bytes"
                 and s.metric in ("bytes", "native_bytes", "unowned_bytes")]
        if not parts:
            continue
        rate = math.fsum(s.per_step for s in parts)
        low = math.fsum(s.per_step_low for s in parts)
        if not (math.isfinite(low) and low > max(rss_high, 0.0) and (rate - max(rss_rate, 0.0)) * project_to >= _MIN):
            continue
        reasons: list[str] = []
        warm = max(s.warmup_steps for s in parts)
        if abs(warm - rss.warmup_steps) >= dx:
            reasons.append(f"they are fitted over different windows (the owner from step {int(steps[0]) + warm}, "
                           f"RSS from step {int(steps[0]) + rss.warmup_steps}: different warm-ups)")
        drop = _free_drop(tl, float(steps[0]) + rss.warmup_steps)
        if drop is None:
            reasons.append("new objects may reuse memory freed earlier, which RSS already counted (run with the "
                           "allocator probe to measure it)")
        elif drop >= _MIN:
            reasons.append(f"the allocators' free memory fell by {format_value(drop, 'bytes')} over RSS's window: "
                           "new objects reused memory freed earlier, which RSS already counted")
        if any(s.metric == "native_bytes" for s in parts):
            reasons.append("its native figure is an estimate")
        if rss.verdict != "leak":
            reasons.append(f"RSS itself was judged {rss.verdict}")
        if not reasons:
            reasons.append("no measured cause: memory the owner's size counts may not be resident (deep sizes "
                           "are what Python reports, not pages the process touched)")
        name = f.name or f.owner
        out.append(Finding("reconcile", f.run, f.owner, "note", sentence(
            code(name), f" grows {format_signed(rate, 'bytes')} per step ({format_signed(rate * project_to, 'bytes')} "
            f"at {project_to:,} steps) but RSS only {format_signed(rss_rate, 'bytes')} per step "
            f"({format_signed(rss_rate * project_to, 'bytes')}): ", "; ".join(reasons), "."), tuple(parts),
            numbers={"owner_per_step": rate, "rss_per_step": rss_rate}))
    return out
