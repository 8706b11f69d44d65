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
   buffers), bytes per step first, largest first; with the recorded
   why-alive chain (``held by ...``) and the allocation sites in the owner's
   module when they were recorded. RSS, when it leaks, follows as a
   ``process`` finding.
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
    format_signed,
    format_value,
    measure_words,
    short_name,
)
from tokdiag.analysis.owners import chain_text, display_name, module_sites
from tokdiag.analysis.verdicts import verdicts as judge

__all__ = ["FINDING_KINDS", "Finding", "Series", "Text", "code", "findings", "sentence"]

FINDING_KINDS: tuple[str, ...] = ("leak", "clear", "undecided", "warning", "status", "process", "settled", "shown",
                                  "ledger", "startup", "reconcile", "self")
"""Every ``kind`` of :class:`Finding`, in the order a run's findings come."""

_SETTLED_RANK = {"step": 0, "bounded": 1}
_SETTLED_KINDS = ("class", "cache", "container")
_PROBE_RANK = {"watch": 0, "cache": 1, "container": 2}
_LEAK_WORD = {"cache": "cache ", "container": "container ", "site": "allocations at ", "disk": "disk "}


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


def _rate(s: Series | None) -> float:
    return s.per_step if s is not None and math.isfinite(s.per_step) else 0.0


# --------------------------------------------------------------------------- findings per kind

def _amounts(rows: list[Series], only_leaks: bool) -> list[str]:
    """``["+10.5 KiB", "+1 object"]``: the owner's growth per step in bytes (python + native) and in count."""
    def pick(measures: tuple[str, ...]) -> Series | None:
        cands = [s for s in rows if s.role != "duplicate" and _measure(s) in measures
                 and (s.verdict == "leak" or not only_leaks)]
        mains = [s for s in cands if s.role == "main"]
        return (mains or cands or [None])[0]

    out = []
    size, native, count = pick(("bytes",)), pick(("native",)), pick(("count", "entries", "blocks"))
    if size is not None or native is not None:
        total = _rate(size) + _rate(native)
        out.append(format_signed(total, "bytes") + (" (native estimate)" if size is None else ""))
    if count is not None:
        out.append(format_signed(count.per_step, count.unit))
    return out


def _measure(s: Series) -> str:
    from tokdiag.analysis.fold import owner_of

    return owner_of(s.probe, s.subject, s.metric)[2]


def _leak(run: str, owner: str, kind: str, rows: list[Series], name: str, chain: str,
          sites: tuple[str, ...]) -> Finding:
    amounts = _amounts(rows, only_leaks=True)
    first, *rest = amounts or ["growth"]
    what = first + (f" ({rest[0]})" if rest else "")
    pieces: list[str] = ["Leak: ", _LEAK_WORD.get(kind, ""), code(name), f" {what} per step"]
    if kind == "allocator":
        pieces.append(": memory freed but kept by the allocator (fragmentation), not held by an object")
    leaking = [s for s in rows if s.verdict == "leak" and s.role != "duplicate"]
    if all(s.role != "main" for s in leaking):  # only a second measure leaks: say which one
        pieces.append(f" (by its {leaking[0].probe} {measure_words(leaking[0].probe, leaking[0].metric)}; its main measure is "
                      f"{next((s.verdict for s in rows if s.role == 'main'), 'not judged')})")
    if chain:
        pieces += [", held by ", code(chain)]
    elif kind == "class" and not any(s.probe == "watch" for s in rows):
        pieces += [" (no why-alive chain: only the census saw it; watch ", code(name), " to record one)"]
    if sites:
        pieces += [", allocated at ", code(", ".join(sites))]
    bytes_rate = sum(_rate(s) for s in leaking if s.unit == "bytes" and s.role == "main")
    return Finding("leak", run, owner, "leak", sentence(*pieces, "."), tuple(rows), chain, sites,
                   numbers={"bytes_per_step": bytes_rate}, name=name)


def _main(rows: list[Series], measures: tuple[str, ...]) -> Series | None:
    return next((s for m in measures for s in rows if s.role == "main" and _measure(s) == m), None)


def _bytes_of(rows: list[Series], field: str) -> float:
    """``field`` (``projected``, ``growth``) of the owner's bytes: its Python bytes plus its native estimate."""
    parts = [getattr(s, field) for s in (_main(rows, ("bytes",)), _main(rows, ("native",))) if s is not None]
    finite = [v for v in parts if math.isfinite(v)]
    return math.fsum(finite) if finite else math.nan


def _level(rows: list[Series]) -> str:
    """``32 entries (229 KiB)``: where the owner settled, count first, bytes (native included) beside it."""
    count = _main(rows, ("count", "entries", "blocks"))
    size = _bytes_of(rows, "projected")
    parts = ([format_value(count.projected, count.unit)] if count is not None and math.isfinite(count.projected)
             else []) + ([format_value(size, "bytes")] if math.isfinite(size) else [])
    native = _main(rows, ("native",))
    python = _main(rows, ("bytes",))
    if native is not None and python is not None and math.isfinite(native.projected) and math.isfinite(size):
        parts[-1] += f", of which {format_value(native.projected, 'bytes')} native, estimated"
    return parts[0] + (f" ({parts[1]})" if len(parts) > 1 else "") if parts else ""


def _settled(run: str, owner: str, kind: str, rows: list[Series], name: str) -> Finding:
    main = [s for s in rows if s.role == "main" and s.verdict in _SETTLED_RANK]
    step = all(s.verdict == "step" for s in main)
    level = _level(rows)
    at = f" at {level}" if level else ""
    if step:
        size = _bytes_of(rows, "growth")
        first = main[0]
        growth = format_signed(size, "bytes") if math.isfinite(size) else format_signed(first.growth, first.unit)
        pieces = ["One-off: ", code(name), f" {growth}, then flat{at}."]
    else:
        label = {"cache": "Cache", "container": "Container"}.get(kind, "Bounded")
        pieces = [f"{label}: ", code(name), f" settled{at}."]
    return Finding("settled", run, owner, "step" if step else "bounded", sentence(*pieces), tuple(rows), name=name)


def _process(run: str, rows: list[Series], project_to: int, owner_leaks: bool) -> Finding | None:
    rss = next((s for s in rows if s.probe == "process" and s.metric == "rss"), None)
    if rss is None:
        return None
    warm = f" after a {rss.warmup_steps}-step warm-up" if rss.warmup_steps else ""
    if rss.verdict == "leak":
        body = (f"RSS leaks, {format_signed(rss.per_step * project_to, 'bytes')} per {project_to:,} steps "
                f"({format_signed(rss.per_step, 'bytes')} per step{warm})")
    elif rss.verdict == "bounded":
        body = f"RSS grew {format_signed(rss.growth, 'bytes')}, then level at {format_value(rss.projected, 'bytes')}"
    elif rss.verdict == "step":
        body = f"RSS one-off {format_signed(rss.growth, 'bytes')}, then flat at {format_value(rss.projected, 'bytes')}"
    elif rss.verdict == "flat":
        body = f"RSS flat at {format_value(rss.projected, 'bytes')} ({format_signed(rss.growth, 'bytes')} over the run)"
    else:
        body = f"RSS undecided: {rss.reason}"
    others = [s for s in rows if s is not rss and s.verdict == "leak" and s.role != "duplicate"]
    tail = ""
    if others:
        tail = "; also leaking: " + ", ".join(
            f"{s.subject + ' ' if s.probe == 'allocator' else ''}{measure_words(s.probe, s.metric)} "
            f"{format_signed(s.per_step, s.unit)} per step" for s in others)
    if rss.verdict == "leak" and not owner_leaks:
        tail += "; no measured owner leaks (the ledger below says how much of it is attributed)"
    return Finding("process", run, "process", rss.verdict, sentence("Process: ", body, tail, "."), tuple(rows),
                   numbers={"rss_per_step": rss.per_step, "project_to": float(project_to)})


def _warning(run: str, message: str) -> Finding:
    head, sep, rest = message.partition(": ")
    owner, detail = (head, rest) if sep and head.isidentifier() else ("run", message)
    return Finding("warning", run, owner, "warning", sentence("Warning: ", message.rstrip("."), "."), detail=detail)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "es" if word.endswith("ss") else "s")


def _clear(run: Any, owners: dict[str, list[Series]], kinds: dict[str, str], n_warnings: int) -> Finding:
    tl = run.timeline
    steps = sorted(pd.to_numeric(tl["step"], errors="coerce").dropna().unique().tolist())
    elapsed = float(pd.to_numeric(tl["elapsed_s"], errors="coerce").max()) if "elapsed_s" in tl.columns and len(tl) else 0.0
    n_steps = int(steps[-1]) if steps else 0
    measured = f"{n_steps:,} steps ({_plural(len(steps), 'snapshot')}, {elapsed:.0f} s)"
    said: list[str] = []
    undecided: list[str] = []
    rss = next((s for s in owners.get("process", []) if s.metric == "rss"), None)
    if rss is not None:
        said.append(f"RSS {rss.verdict}")
        if rss.verdict == "inconclusive":
            undecided.append("RSS")
    for label, kind, probe in (("watched class", "class", "watch"), ("cache", "cache", "cache")):
        verdicts_of = {}
        for owner, rows in owners.items():
            main = [s for s in rows if s.role == "main" and s.probe == probe]
            if kinds.get(owner) == kind and main:
                verdicts_of[owner] = "inconclusive" if any(s.verdict == "inconclusive" for s in main) else (
                    min((s.verdict for s in main), key=lambda v: ("step", "bounded", "flat").index(v)
                        if v in ("step", "bounded", "flat") else 3))
        for verdict, n in sorted(Counter(verdicts_of.values()).items()):
            said.append(f"{_plural(n, label)} {verdict}")
        undecided += [display_name(o, kind) for o, v in verdicts_of.items() if v == "inconclusive"]
    census = {s.subject for rows in owners.values() for s in rows if s.probe == "census"}
    if census:
        said.append(f"{len(census):,} census types, none leaking")
    what = ", ".join(said) if said else "nothing judged"
    if run.status != "completed" or undecided:
        why = (f"the run did not complete ({run.status})" if run.status != "completed" else
               "undecided: " + ", ".join(undecided) + " (run longer: their reasons say how much)")
        pieces = sentence(f"No leak shown in {measured}, but this is not an all-clear: {why}. Measured: {what}.")
        kind_ = "undecided"
    else:
        pieces = sentence(f"No leak in {measured}: {what}.")
        kind_ = "clear"
    if n_warnings:
        pieces += sentence(f" See the {'warning' if n_warnings == 1 else 'warnings'} below.")
    return Finding(kind_, str(run.name), "run", "inconclusive" if kind_ == "undecided" else "flat", pieces,
                   numbers={"steps": float(n_steps), "snapshots": float(len(steps)), "elapsed_s": elapsed})


def _self(run: str, tl: pd.DataFrame) -> Finding | None:
    mine = tl[tl["probe"] == "tracker"]
    own = mine[mine["metric"] == "self_bytes"].sort_values("step")["value"]
    spent = float(mine[mine["metric"] == "snapshot_s"]["value"].sum())
    if own.empty and not spent:
        return None
    elapsed = float(pd.to_numeric(tl["elapsed_s"], errors="coerce").max()) if "elapsed_s" in tl.columns else 0.0
    parts = []
    if not own.empty:
        parts.append(f"{format_value(float(own.iloc[-1]), 'bytes')} of its own memory "
                     f"({format_signed(float(own.iloc[-1] - own.iloc[0]), 'bytes')} over the run)")
    if spent:
        parts.append(f"snapshots took {spent:.1f} s" + (f" of {elapsed:.0f} s" if elapsed > spent else ""))
    return Finding("self", run, "tokdiag", "self", sentence("tokdiag's own cost (not in the findings): ",
                                                            ", ".join(parts), "."))


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
            leaks.append(_leak(name, owner, kind, rows, label, chain_text(run.retention, owner), sites))
        elif kind in _SETTLED_KINDS and any(s.probe != "census" for s in rows) and any(
                s.role == "main" and s.verdict in _SETTLED_RANK and s.growth > 0 for s in rows):
            main = [s for s in rows if s.role == "main" and s.verdict in _SETTLED_RANK and s.growth > 0]
            key = (min(_SETTLED_RANK[s.verdict] for s in main), min(_PROBE_RANK.get(s.probe, 3) for s in rows),
                   -max(abs(s.growth) if math.isfinite(s.growth) else 0.0 for s in main))
            settled.append((key, _settled(name, owner, kind, rows, label)))
    leaks = [f for f in leaks if not (kinds[f.owner] == "site" and f.owner in attached)]
    leaks.sort(key=lambda f: (-f.numbers.get("bytes_per_step", 0.0),
                              -max((_rate(s) for s in f.series if s.unit != "bytes" and s.verdict == "leak"), default=0)))
    process = _process(name, owners.get("process", []), project_to, bool(leaks))
    any_leak = bool(leaks) or (process is not None and process.verdict == "leak") or any(
        s.verdict == "leak" and s.role != "duplicate" for s in owners.get("process", []))
    warnings = [_warning(name, m) for m in dict.fromkeys(str(w) for w in run.warnings)]
    status = [] if run.status == "completed" else [Finding(
        "status", name, "run", str(run.status),
        sentence(f"The run did not complete ({run.status}): ", str(run.message).rstrip("."), "."),
        detail=str(run.message))]
    out: list[Finding] = list(leaks)
    if process is not None and process.verdict == "leak":
        out.append(process)
    if not any_leak:
        out.append(_clear(run, owners, kinds, len(warnings)))
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
    mine = _self(name, run.timeline)
    if mine is not None:
        out.append(mine)
    return tuple(out)
