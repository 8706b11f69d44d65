"""Top growers: one row per owner that grew, every probe's measure of it merged, largest growth per step first.

A class can be judged by the watch (count, reachable bytes), the census
(count, shallow bytes, unowned bytes) and the native registry (instances,
native bytes); a cache by its entries, deep bytes and native estimate.
:func:`growers` folds them per owner (:func:`tokdiag.analysis.fold_verdicts`)
into one row, so ``Job`` appears once, and sorts the rows by bytes per step.
:func:`growers_table` is the same table for people: units, no pandas
column names, no row numbers.

Columns of :func:`growers` (:data:`GROWER_COLUMNS`):

=========================  ===================================================
``run``, ``owner``         the run, and the owner's full name (class, cache
                           label, container path, ``file:line``)
``name``, ``kind``         the short name a sentence uses; ``class``,
                           ``cache``, ``container``, ``site``, ``allocator``,
                           ``file``
``verdict``                the most alarming verdict among its series
                           (leak, inconclusive, step, bounded, flat)
``bytes_per_step``         growth per step in bytes: the first bytes measure
                           (watch reachable, cache deep, census shallow) plus
                           the native estimate; ``_low``/``_high`` its 99%
                           interval (sum of the parts' bounds). NaN for a
                           measure that settled (``growth`` says how much)
``native_per_step``        of which native (estimated); NaN when none
``count_per_step``         instances (or entries, blocks) per step
``count_unit``             ``objects``, ``entries`` or ``blocks``
``growth``                 bytes gained over the run (first snapshot to the
                           end level), native included
``bytes_end``, ``count_end``  the last measured values
``measured_by``            what the bytes are: ``"watch reachable bytes"``
``chain``                  the recorded why-alive chain (root to holder)
``sites``                  allocation sites in the owner's module
``also``                   what else was folded in, in words
=========================  ===================================================
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import pandas as pd

from tokdiag.analysis.classification import SEVERITY_RANK
from tokdiag.analysis.fold import fold_verdicts
from tokdiag.analysis.format import (
    format_interval,
    format_signed,
    format_value,
    measure_words,
    short_name,
)
from tokdiag.analysis.owners import chain_text, display_name, module_sites, names_holder, runs_of
from tokdiag.analysis.thresholds import PRACTICAL_MIN
from tokdiag.analysis.verdicts import verdicts as judge
from tokdiag.errors import ConfigError

__all__ = ["GROWER_COLUMNS", "growers", "growers_table"]

GROWER_COLUMNS: tuple[str, ...] = (
    "run", "owner", "name", "kind", "verdict", "bytes_per_step", "bytes_per_step_low", "bytes_per_step_high",
    "native_per_step", "count_per_step", "count_unit", "growth", "bytes_end", "count_end", "measured_by", "chain",
    "sites", "also",
)
"""Columns of :func:`growers`, in order."""

_KINDS = ("class", "cache", "container", "site", "allocator", "file")


def _last(tl: pd.DataFrame, row: dict[str, Any] | None) -> float:
    if row is None:
        return math.nan
    sel = tl[(tl["probe"] == row["probe"]) & (tl["subject"] == row["subject"]) & (tl["metric"] == row["metric"])]
    sel = sel.dropna(subset=["value"])
    return float(sel.sort_values("step")["value"].iloc[-1]) if len(sel) else math.nan


def _grew(r: dict[str, Any]) -> bool:
    if r["verdict"] in ("leak", "inconclusive"):
        return float(r["per_step"]) > 0
    return r["verdict"] in ("step", "bounded") and float(r["growth"]) > 0


def _add(*values: float) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return math.fsum(finite) if finite else math.nan


def _run_growers(run: Any, project_to: int) -> list[dict[str, Any]]:
    folded = fold_verdicts(judge(run.timeline, project_to=project_to)).to_dict(orient="records")
    by_owner: dict[str, list[dict[str, Any]]] = {}
    for r in folded:
        if r["role"] in ("main", "merged", "duplicate") and r["owner_kind"] in _KINDS:
            by_owner.setdefault(str(r["owner"]), []).append(r)
    sites = [r for r in folded if r["owner_kind"] == "site" and r["role"] == "main" and r["measure"] == "bytes"
             and r["verdict"] in ("leak", "inconclusive") and float(r["per_step"]) > 0]
    bare = Counter(short_name("census", o)[0] for o, rows in by_owner.items() if rows[0]["owner_kind"] == "class")
    clashes = {b for b, n in bare.items() if n > 1}
    attached: set[str] = set()
    out: list[dict[str, Any]] = []
    for owner, rows in by_owner.items():
        kind = str(rows[0]["owner_kind"])
        main = {str(r["measure"]): r for r in rows if r["role"] == "main"}
        if not any(_grew(r) for r in main.values()):
            continue
        if not any(r["verdict"] in ("leak", "inconclusive") for r in main.values()) and not any(
                abs(float(r["growth"])) >= PRACTICAL_MIN.get(str(r["unit"]), 0.0) for r in main.values()):
            continue  # settled by less than the practical minimum: start-up noise, not a grower
        size, native = main.get("bytes"), main.get("native")
        count = next((main[m] for m in ("count", "entries", "blocks") if m in main), None)
        judged = [r for r in rows if r["role"] != "duplicate"]
        verdict = min((str(r["verdict"]) for r in judged), key=lambda v: SEVERITY_RANK.get(v, len(SEVERITY_RANK)))
        owned_sites = module_sites(owner, kind, sites) if kind != "site" else ()
        attached.update(owned_sites)

        def f(r: dict[str, Any] | None, col: str) -> float:
            return float(r[col]) if r is not None else math.nan

        def rate(r: dict[str, Any] | None, col: str) -> float:
            """A per-step figure of a measure that grows at the end; NaN for one that settled (its growth says it)."""
            return f(r, col) if r is not None and r["verdict"] in ("leak", "inconclusive") else math.nan

        out.append({
            "run": str(run.name), "owner": owner, "name": display_name(owner, kind, clashes), "kind": kind,
            "verdict": verdict,
            "bytes_per_step": _add(rate(size, "per_step"), rate(native, "per_step")),
            "bytes_per_step_low": _add(rate(size, "per_step_low"), rate(native, "per_step_low")),
            "bytes_per_step_high": _add(rate(size, "per_step_high"), rate(native, "per_step_high")),
            "native_per_step": rate(native, "per_step"),
            "count_per_step": rate(count, "per_step"), "count_unit": str(count["unit"]) if count is not None else "",
            "growth": _add(f(size, "growth"), f(native, "growth")),
            "bytes_end": _add(_last(run.timeline, size), _last(run.timeline, native)),
            "count_end": _last(run.timeline, count),
            "measured_by": f"{size['probe']} {measure_words(str(size['probe']), str(size['metric']))}"
                           if size is not None else ("native estimate" if native is not None else ""),
            "chain": chain_text(getattr(run, "retention", {}) or {}, owner),
            "sites": ", ".join(owned_sites),
            "also": "; ".join(str(r["folded"]) for r in main.values() if r["folded"]),
        })
    return [r for r in out if not (r["kind"] == "site" and r["owner"] in attached)]


def _order(r: dict[str, Any]) -> tuple[int, float, bool, float, float]:
    """Growing at the end first (bytes per step; among equals, an owner that names a holder before one that only
    counts; then count per step), then settled owners by growth."""
    def neg(v: float) -> float:
        return -v if math.isfinite(v) else math.inf

    growing = math.isfinite(r["bytes_per_step"]) or math.isfinite(r["count_per_step"])
    return (0 if growing else 1, neg(r["bytes_per_step"]), not names_holder(r["kind"], r["chain"]),
            neg(r["count_per_step"]), neg(r["growth"]))


def growers(run_or_runs: Any, *, top: int | None = 20, project_to: int = 10_000) -> pd.DataFrame:
    """The owners that grew, one row each, largest bytes per step first; columns :data:`GROWER_COLUMNS`.

    ``run_or_runs``: a :class:`tokdiag.Run`, a journal path, a list of them
    or ``{label: run}``. An owner grew when one of its measures is a leak or
    inconclusive with a positive slope, or stepped or settled above where it
    started. Rows are sorted by ``bytes_per_step`` (owners without a bytes
    measure last), then owners that name a holder (a container, a cache, a
    class with a chain: :func:`~tokdiag.analysis.owners.names_holder`) before
    those that only count, then by ``count_per_step``; ``top`` keeps the
    first rows of each run (None: all).
    """
    if top is not None and (isinstance(top, bool) or not isinstance(top, int) or top <= 0):
        raise ConfigError(f"top={top!r}: pass a positive number of owners per run, or None for all")
    rows: list[dict[str, Any]] = []
    for run in runs_of(run_or_runs):
        mine = _run_growers(run, project_to)
        mine.sort(key=_order)
        rows += mine[:top] if top is not None else mine
    out = pd.DataFrame(rows, columns=list(GROWER_COLUMNS))
    for c in ("bytes_per_step", "bytes_per_step_low", "bytes_per_step_high", "native_per_step", "count_per_step",
              "growth", "bytes_end", "count_end"):
        out[c] = out[c].astype("float64")
    return out


def _interval(lo: float, hi: float) -> str:
    text = format_interval(lo, hi, "bytes", per_step=True)
    return f" ({text})" if text else ""


def growers_table(df: pd.DataFrame) -> pd.DataFrame:
    """:func:`growers` for people: one text column per figure, units written, indexed by owner (no row numbers).

    Columns: ``run`` (only when the table holds several runs), ``kind``,
    ``verdict``, ``growth per step`` (bytes, with its 99% interval when
    that says something), ``instances per step``, ``grew`` (over the run),
    ``at the end``, ``measured by``, ``held by``, ``allocated at``,
    ``also measured``. Empty columns (no chain recorded anywhere, no sites)
    are left out.
    """
    missing = [c for c in GROWER_COLUMNS if c not in getattr(df, "columns", ())]
    if not isinstance(df, pd.DataFrame) or missing:
        raise ConfigError("growers_table: pass the DataFrame of tokdiag.analysis.growers(run)"
                          + (f" (this one lacks {missing})" if isinstance(df, pd.DataFrame) else ""))
    many = df["run"].nunique() > 1

    def per_step(v: float, unit: str) -> str:
        return f"{format_signed(v, unit)}/step" if math.isfinite(v) else ""

    def end(r: Any) -> str:
        parts = [format_value(r.bytes_end, "bytes") if math.isfinite(r.bytes_end) else "",
                 format_value(r.count_end, r.count_unit) if math.isfinite(r.count_end) else ""]
        return ", ".join(p for p in parts if p)

    table = pd.DataFrame({
        "run": df["run"].astype(str).tolist(),
        "kind": df["kind"].astype(str).tolist(),
        "verdict": df["verdict"].astype(str).tolist(),
        "growth per step": [per_step(r.bytes_per_step, "bytes") + _interval(r.bytes_per_step_low, r.bytes_per_step_high)
                            + (f", of which native {format_signed(r.native_per_step, 'bytes')}"
                               if math.isfinite(r.native_per_step) and math.isfinite(r.bytes_per_step)
                               and r.native_per_step != r.bytes_per_step else "")
                            for r in df.itertuples()],
        "instances per step": [per_step(r.count_per_step, r.count_unit) for r in df.itertuples()],
        "grew": [format_signed(v, "bytes") if math.isfinite(v) else "" for v in df["growth"]],
        "at the end": [end(r) for r in df.itertuples()],
        "measured by": df["measured_by"].astype(str).tolist(),
        "held by": df["chain"].astype(str).tolist(),
        "allocated at": df["sites"].astype(str).tolist(),
        "also measured": df["also"].astype(str).tolist(),
    }, index=pd.Index(df["name"].astype(str).to_numpy(), name="owner"))
    keep = [c for c in table.columns if (c != "run" or many)
            and (c not in ("held by", "allocated at", "also measured") or bool((table[c] != "").any()))]
    return table[keep]
