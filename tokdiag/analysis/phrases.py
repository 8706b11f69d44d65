"""How each kind of finding is said: the sentence builders behind :func:`tokdiag.analysis.findings.findings`.

One function per kind (``leak``, ``settled``, ``process``, ``warning``,
``clear``/``undecided``, ``self``), each taking the judged series of one
owner (:class:`~tokdiag.analysis.findings.Series`) and returning a
:class:`~tokdiag.analysis.findings.Finding` whose sentence names things
with :class:`~tokdiag.analysis.findings.code` and figures with
:mod:`tokdiag.analysis.format`.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import pandas as pd

from tokdiag.analysis.findings import Finding, Series, code, sentence
from tokdiag.analysis.fold import owner_of
from tokdiag.analysis.format import format_signed, format_value, measure_words
from tokdiag.analysis.owners import display_name, is_builtin
from tokdiag.analysis.thresholds import MIN_SNAPSHOTS

CLEAR_SNAPSHOTS = 2 * MIN_SNAPSHOTS
"""Fewest snapshots a run needs to be called leak-free: the verdicts judge the end of a run on its last
half once it has ``2 * MIN_SNAPSHOTS`` (see :mod:`tokdiag.analysis.classification`); fewer, and a flat
RSS over four snapshots is no evidence that a slow leak is absent."""

__all__ = ["clear", "leak", "process_finding", "rate", "self_cost", "settled", "warning"]

SETTLED_RANK = {"step": 0, "bounded": 1}
_LEAK_WORD = {"cache": "cache ", "container": "container ", "site": "allocations at ", "disk": "disk "}


def rate(s: Series | None) -> float:
    """A series' growth per step, 0 when it has none."""
    return s.per_step if s is not None and math.isfinite(s.per_step) else 0.0


def _amounts(rows: list[Series], only_leaks: bool) -> list[str]:
    """``["+10.5 KiB", "+1 object"]``: the owner's growth per step in bytes (python + native) and in count."""
    def pick(measures: tuple[str, ...]) -> Series | None:
        cands = [s for s in rows if s.role != "duplicate" and _measure(s) in measures
                 and (s.verdict == "leak" or not only_leaks)]
        mains = [s for s in cands if s.role == "main"]
        return next(iter(mains or cands), None)

    out = []
    size, native, count = pick(("bytes",)), pick(("native",)), pick(("count", "entries", "blocks"))
    if size is not None or native is not None:
        total = rate(size) + rate(native)
        out.append(format_signed(total, "bytes") + (" (native estimate)" if size is None else ""))
    if count is not None:
        out.append(format_signed(count.per_step, count.unit))
    return out


def _measure(s: Series) -> str:
    return owner_of(s.probe, s.subject, s.metric)[2]


def _held_by(chain: str) -> list[str]:
    """The pieces that say what holds a leak: ``, held by `module app -> _DONE[0]```.

    A root that says how it holds by itself (:data:`~tokdiag.analysis.retention.HELD_OUTSIDE`,
    ``"held outside Python's heap (C state, e.g. atexit)"``) is written as it is, not after "held by",
    and the rest of the chain follows it.

    >>> "".join(_held_by("module app -> _DONE[0]"))
    ', held by module app -> _DONE[0]'
    >>> "".join(_held_by("held outside Python's heap (C state, e.g. atexit) -> method.__self__"))
    ", held outside Python's heap (C state, e.g. atexit), via method.__self__"
    """
    root, _, rest = chain.partition(" -> ")
    if not root.startswith("held "):
        return [", held by ", code(chain)]
    return [", ", root] + ([", via ", code(rest)] if rest else [])


def leak(run: str, owner: str, kind: str, rows: list[Series], name: str, chain: str,
         sites: tuple[str, ...], holder: tuple[str, str] | None = None) -> Finding:
    """``Leak: Job +10.5 KiB (+1 object) per step, held by module app -> _DONE[0].``

    What holds it: the recorded ``chain``; for a class only the census saw,
    how to record one (watch it), except for a builtin type
    (:func:`~tokdiag.analysis.owners.is_builtin`), where watching is no
    help: then ``holder`` (``(kind, name)`` of another leak of the run that
    names a holder, see :func:`~tokdiag.analysis.owners.names_holder`) is
    pointed at, or nothing is said.
    """
    amounts = _amounts(rows, only_leaks=True)
    first, *rest = amounts or ["growth"]
    what = first + (f" ({rest[0]})" if rest else "")
    pieces: list[str] = ["Leak: ", _LEAK_WORD.get(kind, ""), code(name), f" {what} per step"]
    if kind == "allocator":
        pieces.append(": memory freed but kept by the allocator (fragmentation), not held by an object")
    leaking = [s for s in rows if s.verdict == "leak" and s.role != "duplicate"]
    if all(s.role != "main" for s in leaking):  # only a second measure leaks: say which one
        pieces.append(
            f" (by its {leaking[0].probe} {measure_words(leaking[0].probe, leaking[0].metric)}; its main measure is "
            f"{next((s.verdict for s in rows if s.role == 'main'), 'not judged')})"
        )
    if chain:
        pieces += _held_by(chain)
    elif kind == "class" and not any(s.probe == "watch" for s in rows):
        if not is_builtin(owner, kind):
            pieces += [" (no why-alive chain: only the census saw it; watch ", code(name), " to record one)"]
        elif holder is not None:
            pieces += [" (a builtin type: perhaps held in ", _LEAK_WORD.get(holder[0], ""), code(holder[1]),
                       ", which grows too)"]
    if sites:
        pieces += [", allocated at ", code(", ".join(sites))]
    bytes_rate = sum(rate(s) for s in leaking if s.unit == "bytes" and s.role == "main")
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


def settled(run: str, owner: str, kind: str, rows: list[Series], name: str) -> Finding:
    main = [s for s in rows if s.role == "main" and s.verdict in SETTLED_RANK]
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


def process_finding(run: str, rows: list[Series], project_to: int, owner_leaks: bool) -> Finding | None:
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


def warning(run: str, message: str) -> Finding:
    head, sep, rest = message.partition(": ")
    owner, detail = (head, rest) if sep and head.isidentifier() else ("run", message)
    return Finding("warning", run, owner, "warning", sentence("Warning: ", message.rstrip("."), "."), detail=detail)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "es" if word.endswith("ss") else "s")


def clear(run: Any, owners: dict[str, list[Series]], kinds: dict[str, str], n_warnings: int) -> Finding:
    tl = run.timeline
    steps = sorted(pd.to_numeric(tl["step"], errors="coerce").dropna().unique().tolist())
    elapsed = (
        float(pd.to_numeric(tl["elapsed_s"], errors="coerce").max()) if "elapsed_s" in tl.columns and len(tl) else 0.0
    )
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
    too_few = len(steps) < CLEAR_SNAPSHOTS
    if run.status != "completed" or undecided or too_few:
        why = (f"the run did not complete ({run.status})" if run.status != "completed" else
               "undecided: " + ", ".join(undecided) + " (run longer: their reasons say how much)" if undecided else
               f"{_plural(len(steps), 'snapshot')} cannot show that the end of the run is flat "
               f"(an all-clear needs {CLEAR_SNAPSHOTS}; run more steps or snapshot more often)")
        pieces = sentence(f"No leak shown in {measured}, but this is not an all-clear: {why}. Measured: {what}.")
        kind_ = "undecided"
    else:
        pieces = sentence(f"No leak in {measured}: {what}.")
        kind_ = "clear"
    if n_warnings:
        pieces += sentence(f" See the {'warning' if n_warnings == 1 else 'warnings'} below.")
    return Finding(kind_, str(run.name), "run", "inconclusive" if kind_ == "undecided" else "flat", pieces,
                   numbers={"steps": float(n_steps), "snapshots": float(len(steps)), "elapsed_s": elapsed})


def self_cost(run: str, tl: pd.DataFrame) -> Finding | None:
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
