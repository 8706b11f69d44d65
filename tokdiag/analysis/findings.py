"""Findings: what a run says, in words, built once from its verdicts, warnings and status.

:func:`findings` is the one place that decides what a run reports. The
answer at the top of a report (:func:`tokdiag.analysis.answer`) renders
them, and the headlines of ``summary.json``
(:func:`tokdiag.report.summary.headlines_from_runs`) are derived from them,
so the two never disagree.

What a run's findings are, in order
-----------------------------------
1. ``leak``: every owner with a leaking series (after
   :func:`~tokdiag.analysis.fold.fold_verdicts`: watch, census, cache,
   container, native, allocation sites, allocator free memory, file pages,
   disk; never the collector's generation counters, never tokdiag's own
   buffers), bytes per step first, largest first; among owners that grow
   by the same bytes per step (a count alone has none), those that name a
   holder (a container, a cache, a class with a chain) come first, so a
   growing container leads the census counts of what it holds. Each with
   the recorded why-alive chain (``held by ...``) and the allocation sites
   in the owner's module when they were recorded; a builtin type only the
   census counted (``dict``, ``str``) points at the first holder instead
   of at watching it. A leaking container that a class's chain passes
   through is not a finding of its own: the class says it. RSS, when it
   leaks, follows as a ``process`` finding.
2. ``clear`` or ``undecided`` when no series leaks: ``clear`` says what was
   measured and for how long (steps, snapshots, seconds, RSS, watched
   classes, caches, census types); it is ``undecided`` instead, never an
   all-clear, when the run did not complete or RSS, a watched class or a
   cache is inconclusive.
3. ``warning``: every warning of the run (a watched name that matched
   nothing, ...), never dropped; ``status``: a run that did not complete.
4. ``process``: RSS, whatever its verdict (``Process: +125 MiB per 10,000
   steps``).
5. ``settled``: at most ``limit`` owners that grew and stopped (``step`` or
   ``bounded``: a cache that filled), one-off steps first, then watched
   classes, caches and containers, largest first. Census types alone are
   not named here: what stepped once at start-up is in the ``startup``
   finding, in aggregate.
6. ``shown``: series named in ``always`` that no finding above carries.
7. ``ledger``, ``startup``, ``reconcile``: who owns the RSS growth after
   warm-up, what warm-up cost, and why an owner's projection and RSS's
   disagree (:mod:`tokdiag.analysis.explain`).
8. ``self``: tokdiag's own cost, apart from the findings about the workload.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd

from tokdiag.analysis.fold import fold_verdicts
from tokdiag.analysis.format import (
    format_value,
    short_name,
)
from tokdiag.analysis.owners import (
    chain_text,
    chain_through,
    display_name,
    is_builtin,
    module_sites,
    names_holder,
)
from tokdiag.analysis.verdicts import verdicts as judge

__all__ = ["FINDING_KINDS", "Finding", "Series", "Text", "code", "findings", "sentence"]

FINDING_KINDS: tuple[str, ...] = ("leak", "clear", "undecided", "warning", "status", "process", "settled", "shown",
                                  "ledger", "startup", "reconcile", "self")
"""Every ``kind`` of :class:`Finding`, in the order a run's findings come."""

_SETTLED_KINDS = ("class", "cache", "container")
_PROBE_RANK = {"watch": 0, "cache": 1, "container": 2}


class code(str):
    """A name (class, cache, path, chain) inside a sentence: `backticked` in Markdown, <code> in HTML."""


Text = tuple[tuple[str, bool], ...]
"""A sentence as pieces ``(text, is_code)``: :class:`Finding` renders it as text, Markdown or HTML."""


def sentence(*pieces: str) -> Text:
    """Pieces of a sentence; those made with :class:`code` are names."""
    return tuple((str(p), isinstance(p, code)) for p in pieces if p)


@dataclass(frozen=True, slots=True)
class Series:
    """One judged series behind a finding (a row of the folded verdicts, see :mod:`tokdiag.analysis.fold`)."""

    probe: str
    subject: str
    metric: str
    unit: str
    verdict: str
    per_step: float
    per_step_low: float
    per_step_high: float
    growth: float
    projected: float
    warmup_steps: int
    n_snapshots: int
    reason: str
    role: str = "main"


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing a run says: its ``kind`` (:data:`FINDING_KINDS`), about ``owner``, with its verdict label.

    ``pieces`` is the sentence (render it with :attr:`text`; Markdown and
    HTML forms are in :mod:`tokdiag.analysis.answer`); ``series`` the judged
    series it stands for; ``chain`` the recorded why-alive chain; ``sites``
    allocation sites; ``detail`` the message of a warning or status.
    """

    kind: str
    run: str
    owner: str
    verdict: str
    pieces: Text
    series: tuple[Series, ...] = ()
    chain: str = ""
    sites: tuple[str, ...] = ()
    detail: str = ""
    numbers: Mapping[str, float] = field(default_factory=dict)
    name: str = ""

    @property
    def text(self) -> str:
        return "".join(t for t, _ in self.pieces)

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe form (NaN as None), for ``summary.json``."""
        def clean(v: Any) -> Any:
            return None if isinstance(v, float) and not math.isfinite(v) else v

        return {"kind": self.kind, "run": self.run, "owner": self.owner, "name": self.name or self.owner,
                "verdict": self.verdict, "text": self.text,
                "chain": self.chain, "sites": list(self.sites), "detail": self.detail,
                "numbers": {k: clean(float(v)) for k, v in self.numbers.items()},
                "series": [{k: clean(v) for k, v in asdict(s).items()} for s in self.series]}


# --------------------------------------------------------------------------- helpers

def _series(row: Mapping[str, Any]) -> Series:
    return Series(str(row["probe"]), str(row["subject"]), str(row["metric"]), str(row["unit"]), str(row["verdict"]),
                  float(row["per_step"]), float(row["per_step_low"]), float(row["per_step_high"]),
                  float(row["growth"]), float(row["projected"]), int(row["warmup_steps"]), int(row["n_snapshots"]),
                  str(row["reason"]), str(row["role"]))


# --------------------------------------------------------------------------- the one entry point

def findings(run: Any, *, project_to: int = 10_000, always: Iterable[tuple[str, str]] = (("process", "rss"),),
             limit: int = 5, table: pd.DataFrame | None = None) -> tuple[Finding, ...]:
    """The findings of one run, in the order of the module docstring.

    ``run``: a :class:`tokdiag.Run` (anything with ``name``, ``timeline``,
    ``status``, ``message``, ``warnings`` and ``retention``). ``always``:
    ``(probe, metric)`` series that must appear whatever their verdict (RSS
    by default). ``limit``: at most this many ``settled`` owners. ``table``:
    the run's verdicts when already computed (``run.verdicts(project_to=...)``).
    """
    from tokdiag.analysis import phrases as say
    from tokdiag.analysis.explain import ledger_findings, reconcile_findings

    name = str(run.name)
    if table is None:
        table = judge(run.timeline, project_to=project_to)
    folded = fold_verdicts(table).to_dict(orient="records")
    kinds: dict[str, str] = {}
    owners: dict[str, list[Series]] = {}
    for r in folded:
        if r["role"] in ("main", "merged", "duplicate"):
            owners.setdefault(str(r["owner"]), []).append(_series(r))
            kinds[str(r["owner"])] = str(r["owner_kind"])
    bare = Counter(short_name("census", o)[0] for o, k in kinds.items() if k == "class")
    clashes = {b for b, n in bare.items() if n > 1}
    site_rows = [r for r in folded if r["owner_kind"] == "site" and r["role"] == "main" and r["measure"] == "bytes"
                 and r["verdict"] in ("leak", "inconclusive") and float(r["per_step"]) > 0]
    attached: set[str] = set()
    leaks: list[Finding] = []
    settled: list[tuple[tuple[int, int, float], Finding]] = []
    for owner, rows in owners.items():
        kind = kinds[owner]
        if kind in ("process", "tokdiag"):
            continue
        label = display_name(owner, kind, clashes)
        if any(s.verdict == "leak" and s.role != "duplicate" for s in rows):
            sites = module_sites(owner, kind, site_rows)
            attached.update(sites)
            leaks.append(say.leak(name, owner, kind, rows, label, chain_text(run.retention, owner), sites))
        elif kind in _SETTLED_KINDS and any(s.probe != "census" for s in rows) and any(
                s.role == "main" and s.verdict in say.SETTLED_RANK and s.growth > 0 for s in rows):
            main = [s for s in rows if s.role == "main" and s.verdict in say.SETTLED_RANK and s.growth > 0]
            key = (min(say.SETTLED_RANK[s.verdict] for s in main), min(_PROBE_RANK.get(s.probe, 3) for s in rows),
                   -max(abs(s.growth) if math.isfinite(s.growth) else 0.0 for s in main))
            settled.append((key, say.settled(name, owner, kind, rows, label)))
    leaks = [f for f in leaks if not (kinds[f.owner] == "site" and f.owner in attached)]
    # a leaking container that a leaking class's chain already names is said once, as "held by" that class
    chains = [chain_text(run.retention, f.owner) for f in leaks if kinds[f.owner] == "class"]
    leaks = [f for f in leaks
             if not (kinds[f.owner] == "container" and any(chain_through(c, f.owner) for c in chains))]
    # bytes per step first; among equals (count-only growth has none) what names a holder first: a growing
    # container before the census counts of what it holds
    leaks.sort(
        key=lambda f: (
            -f.numbers.get("bytes_per_step", 0.0),
            not names_holder(kinds[f.owner], f.chain),
            -max((say.rate(s) for s in f.series if s.unit != "bytes" and s.verdict == "leak"), default=0),
        )
    )
    holder = next((f for f in leaks if names_holder(kinds[f.owner], f.chain)), None)
    if holder is not None:  # census counts of builtin types point at it rather than at watching them
        leaks = [say.leak(name, f.owner, kinds[f.owner], list(f.series), f.name, f.chain, f.sites,
                          (kinds[holder.owner], holder.name))
                 if f is not holder and is_builtin(f.owner, kinds[f.owner]) and not f.chain else f for f in leaks]
    process = say.process_finding(name, owners.get("process", []), project_to, bool(leaks))
    any_leak = bool(leaks) or (process is not None and process.verdict == "leak") or any(
        s.verdict == "leak" and s.role != "duplicate" for s in owners.get("process", []))
    warnings = [say.warning(name, m) for m in dict.fromkeys(str(w) for w in run.warnings)]
    status = [] if run.status == "completed" else [Finding(
        "status", name, "run", str(run.status),
        sentence(f"The run did not complete ({run.status}): ", str(run.message).rstrip("."), "."),
        detail=str(run.message))]
    out: list[Finding] = list(leaks)
    if process is not None and process.verdict == "leak":
        out.append(process)
    if not any_leak:
        out.append(say.clear(run, owners, kinds, len(warnings)))
    out += warnings + status
    if process is not None and process.verdict != "leak":
        out.append(process)
    out += [f for _, f in sorted(settled, key=lambda item: item[0])[: max(int(limit), 0)]]
    carried = {(s.probe, s.subject, s.metric) for f in out for s in f.series}
    for probe, metric in always:
        for owner, rows in owners.items():
            shown = [s for s in rows if (s.probe, s.metric) == (probe, metric) and s.role != "duplicate"
                     and (s.probe, s.subject, s.metric) not in carried]
            if shown:
                s = shown[0]
                label = display_name(owner, kinds[owner], clashes)
                out.append(Finding("shown", name, owner, s.verdict, sentence(
                    code(label), f" {metric}: {s.verdict} at {format_value(s.projected, s.unit)}."), tuple(shown),
                    name=label))
                carried.update((x.probe, x.subject, x.metric) for x in shown)
    out += ledger_findings(run, table)
    out += reconcile_findings(run, [f for f in out if f.kind == "leak"], owners.get("process", []), project_to)
    mine = say.self_cost(name, run.timeline)
    if mine is not None:
        out.append(mine)
    return tuple(out)
