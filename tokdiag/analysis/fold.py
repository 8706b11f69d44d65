"""Verdicts per owner: one row for what several probes measured twice, and no noise.

A timeline judges the same thing more than once: a watched class has a
``watch`` count and a ``census`` count (which may disagree: the census
counts every instance, the watch the instances of the named class at that
moment), a census type has ``bytes`` and ``unowned_bytes``, the collector's
``gc_objects`` climbs with the class that leaks, and the tracker judges
its own buffers. :func:`fold_verdicts` gives every verdict row an owner, a
measure and a role, so a table shows one row per owner and measure:

=============  ================================================================
role           rows
=============  ================================================================
``main``       the row shown: per (run, owner, measure), the first of watch,
               cache, container, native, census, allocation sites, process,
               allocator, other probes (census ``bytes`` before
               ``unowned_bytes``)
``merged``     measured the same owner and measure again (a census count of a
               watched class; ``gc_objects`` folded into the class that makes
               it grow, see below; the allocator's heap totals under RSS)
``duplicate``  a census type's ``unowned_bytes`` with the same verdict as its
               ``bytes``: the same growth twice
``noise``      :data:`~tokdiag.analysis.verdicts.NOISE_METRICS` (the
               collector's generation counters: not memory)
``self``       the ``tracker`` probe: tokdiag's own cost, shown apart
=============  ================================================================

``gc_objects`` (every object the collector tracks) is folded into a class
when it leaks and the leaking class counts of the run account for at least
half its growth per step; it goes to the class that grows fastest. When they
do not (objects of types nobody counted), it stays a finding of its own.

Owners and measures (:func:`owner_of`): a class or type (``watch``,
``census``, ``native`` subjects) by its qualified name, a cache by its label,
a container by its path, an allocation site by ``file:line``; measures are
``count`` (instances), ``bytes``, ``entries``, ``native`` (native bytes),
and otherwise the metric.

>>> import pandas as pd
>>> from tokdiag.analysis.verdicts import verdicts
>>> cols = ["run", "step", "elapsed_s", "probe", "subject", "metric", "value", "unit"]
>>> rows = [("r", s, 0.0, p, "app.Job", "count", float(s), "objects")
...         for s in range(0, 50, 5) for p in ("watch", "census")]
>>> rows += [("r", s, 0.0, "process", "process", "gc_gen0", float(s % 7), "objects") for s in range(0, 50, 5)]
>>> f = fold_verdicts(verdicts(pd.DataFrame(rows, columns=cols)))
>>> f[["probe", "owner", "measure", "role"]].to_dict("records")  # doctest: +NORMALIZE_WHITESPACE
[{'probe': 'census', 'owner': 'app.Job', 'measure': 'count', 'role': 'merged'},
 {'probe': 'process', 'owner': 'process', 'measure': 'gc_gen0', 'role': 'noise'},
 {'probe': 'watch', 'owner': 'app.Job', 'measure': 'count', 'role': 'main'}]
"""

from __future__ import annotations

import math

import pandas as pd

from tokdiag.analysis.format import format_signed, measure_words
from tokdiag.analysis.ledger import ALLOCATOR_OWNERS, FILE_OWNERS
from tokdiag.analysis.verdicts import NOISE_METRICS, VERDICT_COLUMNS
from tokdiag.errors import ConfigError

__all__ = ["FOLD_COLUMNS", "OWNER_KINDS", "ROLES", "fold_verdicts", "owner_of"]

FOLD_COLUMNS: tuple[str, ...] = (*VERDICT_COLUMNS, "owner", "owner_kind", "measure", "role", "folded")
"""Columns of :func:`fold_verdicts`: the verdict columns, then the owner, its kind, the measure, the
row's role and (on ``main`` rows) what was folded into it, in words."""

ROLES: tuple[str, ...] = ("main", "merged", "duplicate", "noise", "self")
"""Every value of the ``role`` column (see the module docstring)."""

OWNER_KINDS: tuple[str, ...] = ("class", "cache", "container", "site", "allocator", "file", "disk", "process",
                                "tokdiag")
"""Kinds of owner :func:`owner_of` gives (a probe it does not know gives its own name)."""

_RANK = {"watch": 0, "cache": 1, "container": 2, "containers": 2, "native": 3, "census": 4, "alloc": 5,
         "process": 6, "allocator": 7}
_MEASURE = {"count": "count", "bytes": "bytes", "unowned_bytes": "bytes", "entries": "entries",
            "native_bytes": "native"}
_PROCESS_TOTALS = {("glibc", "in_use"), ("glibc", "free_chunks"), ("pymalloc", "in_use"), ("pymalloc", "arenas"),
                   ("pages", "anon")}
"""Allocator series that measure the whole process (not one owner): folded under RSS."""

GC_FOLD_SHARE = 0.5
"""``gc_objects`` is folded into a class when leaking class counts explain at least this share of its growth."""


def owner_of(probe: str, subject: str, metric: str) -> tuple[str, str, str]:
    """``(owner, owner kind, measure)`` of one series (see the module docstring).

    >>> owner_of("census", "app.Job", "unowned_bytes"), owner_of("allocator", "glibc", "free")
    (('app.Job', 'class', 'bytes'), ('glibc free (kept by malloc)', 'allocator', 'bytes'))
    """
    measure = _MEASURE.get(metric, metric)
    if probe in ("watch", "census", "native"):
        return subject, "class", measure
    if probe == "cache":
        return subject, "cache", measure
    if probe in ("container", "containers"):
        return subject, "container", measure
    if probe == "alloc":
        return subject, "site", "blocks" if metric == "count" else measure
    if probe == "process":
        return "process", "process", metric
    if probe == "allocator":
        if metric == "free" and subject in ALLOCATOR_OWNERS:
            return ALLOCATOR_OWNERS[subject], "allocator", "bytes"
        if subject == "pages" and metric in FILE_OWNERS:
            return FILE_OWNERS[metric], "file", "bytes"
        if (subject, metric) in _PROCESS_TOTALS:
            return "process", "process", "rss"
        return f"allocator {subject}", "allocator", metric
    if probe == "disk":
        return subject, "disk", measure
    if probe == "tracker":
        return "tokdiag", "tokdiag", metric
    return f"{probe} {subject}", probe, measure


def _note(row: dict[str, object]) -> str:
    """``"census instances: leak, +1 object/step"``: a folded row in words."""
    verdict, unit = str(row["verdict"]), str(row["unit"])
    rate, growth = float(row["per_step"]), float(row["growth"])  # type: ignore[arg-type]
    if verdict in ("leak", "inconclusive") and math.isfinite(rate):
        figure = f", {format_signed(rate, unit)}/step"
    elif verdict in ("step", "bounded") and math.isfinite(growth):
        figure = f", {format_signed(growth, unit)}"
    else:
        figure = ""
    return f"{row['probe']} {measure_words(str(row['probe']), str(row['metric']))}: {verdict}{figure}"


def _fold_gc_objects(rows: list[dict[str, object]]) -> None:
    """Move a leaking ``gc_objects`` row under the class whose count explains it (module docstring)."""
    gc_rows = [r for r in rows if r["probe"] == "process" and r["metric"] == "gc_objects" and r["verdict"] == "leak"]
    for gc_row in gc_rows:
        rate = float(gc_row["per_step"])  # type: ignore[arg-type]
        counts = [r for r in rows if r["role"] == "main" and r["owner_kind"] == "class" and r["measure"] == "count"
                  and r["verdict"] == "leak" and r["run"] == gc_row["run"] and float(r["per_step"]) > 0]  # type: ignore[arg-type]
        if not counts or not rate > 0:
            continue
        explained = math.fsum(float(r["per_step"]) for r in counts)  # type: ignore[arg-type]
        if explained >= GC_FOLD_SHARE * rate:
            top = max(counts, key=lambda r: float(r["per_step"]))  # type: ignore[arg-type]
            gc_row.update(owner=top["owner"], owner_kind="class", measure="count", role="merged")


def fold_verdicts(verdicts_df: pd.DataFrame) -> pd.DataFrame:
    """The verdicts of :func:`tokdiag.analysis.verdicts` with owner, measure and role; columns :data:`FOLD_COLUMNS`.

    Rows keep their order; ``df[df.role == "main"]`` is the table to show,
    with ``folded`` saying in words what each of its rows stands for besides
    itself (``"census instances: leak, +1 object/step"``). Several runs are
    folded each on its own.
    """
    if not isinstance(verdicts_df, pd.DataFrame):
        raise ConfigError(f"fold_verdicts: got a {type(verdicts_df).__name__}; pass the DataFrame of "
                          "tokdiag.analysis.verdicts(timeline) (or run.verdicts())")
    missing = [c for c in VERDICT_COLUMNS if c not in verdicts_df.columns]
    if missing:
        raise ConfigError(f"fold_verdicts: the DataFrame lacks column(s) {missing}; pass the DataFrame of "
                          "tokdiag.analysis.verdicts(timeline) (or run.verdicts())")
    rows: list[dict[str, object]] = verdicts_df[list(VERDICT_COLUMNS)].to_dict(orient="records")
    for r in rows:
        probe, subject, metric = str(r["probe"]), str(r["subject"]), str(r["metric"])
        r["owner"], r["owner_kind"], r["measure"] = owner_of(probe, subject, metric)
        r["role"] = "noise" if (probe, metric) in NOISE_METRICS else "self" if probe == "tracker" else ""
        r["folded"] = ""
    groups: dict[tuple[object, ...], list[dict[str, object]]] = {}
    for r in rows:
        if not r["role"]:
            groups.setdefault((r["run"], r["owner"], r["measure"]), []).append(r)

    def elect(members: list[dict[str, object]]) -> None:
        members.sort(key=lambda r: (_RANK.get(str(r["probe"]), len(_RANK)),
                                    0 if (r["probe"], r["metric"]) == ("process", "rss") else 1,
                                    r["metric"] == "unowned_bytes"))
        main = members[0]
        main["role"] = "main"
        shallow = {str(m["subject"]): m["verdict"] for m in members if (m["probe"], m["metric"]) == ("census", "bytes")}
        for m in members[1:]:
            same = m["metric"] == "unowned_bytes" and shallow.get(str(m["subject"])) == m["verdict"]
            m["role"] = "duplicate" if same else "merged"

    for members in groups.values():
        elect(members)
    _fold_gc_objects(rows)
    mains = {(r["run"], r["owner"], r["measure"]): r for r in rows if r["role"] == "main"}
    for r in rows:
        if r["role"] in ("merged", "duplicate"):
            main = mains.get((r["run"], r["owner"], r["measure"]))
            if main is not None:
                main["folded"] = f"{main['folded']}; {_note(r)}" if main["folded"] else _note(r)
    out = pd.DataFrame(rows, columns=list(FOLD_COLUMNS))
    for c in ("per_step", "per_step_low", "per_step_high", "growth", "projected"):
        out[c] = out[c].astype("float64")
    for c in ("warmup_steps", "n_snapshots"):
        out[c] = out[c].astype("int64")
    out.attrs.update(verdicts_df.attrs)
    return out
