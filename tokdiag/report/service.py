"""The report on a service: its worker processes' journals as one, per process and in total.

``tokdiag report`` runs the bundled :data:`SERVICE_REPORT_NOTEBOOK` when
it is given the journals of one service's processes (``tokdiag attach``
on a parent and its workers, or ``td.record("svc-{pid}.jsonl")`` in each
worker: see :func:`tokdiag.recording.service.one_service`), or with
``--service``::

    tokdiag attach 4242 --for 30m --limit 4GiB -o runs/svc.jsonl    # svc.pid0004242.jsonl, svc.pid0004243.jsonl
    tokdiag report runs/svc.jsonl -o reports/svc                     # -> reports/svc/service.html

The notebook shows each process and the total: what grew (verdicts),
RSS per process, the ledger, the watched classes, the why-alive chains
recorded at the end, and when the service reaches its memory limit
(:func:`time_to_limit_table`). Its cells are calls into this module,
:mod:`tokdiag.recording.service` and :mod:`tokdiag.charts`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from tokdiag.errors import ConfigError, JournalError

__all__ = ["SERVICE_REPORT_NOTEBOOK", "overview", "report_from_service", "time_to_limit_table"]

SERVICE_REPORT_NOTEBOOK = Path(__file__).parent / "notebooks" / "service.ipynb"
"""The bundled notebook of a service's report; its parameters are ``journals``, ``limit`` and ``output_dir``."""

_MiB = 1024 * 1024


def overview(parts: Mapping[str, Any]) -> pd.DataFrame:
    """One row per process (and the total) of :func:`tokdiag.recording.service.service_parts`.

    Columns: ``run``, ``pid`` (None for the total), ``status``,
    ``snapshots``, ``first_step``, ``last_step``, ``rss_mib_start``,
    ``rss_mib_end``, ``message``.
    """
    rows = []
    for label, run in parts.items():
        s = run.summary()
        rows.append({"run": label, "pid": None if label.endswith("(total)") else run.header.get("pid"),
                     "status": run.status, "snapshots": s["snapshots"], "first_step": s.get("first_step"),
                     "last_step": s.get("last_step"),
                     "rss_mib_start": round(s["rss_start"] / _MiB, 1) if "rss_start" in s else None,
                     "rss_mib_end": round(s["rss_end"] / _MiB, 1) if "rss_end" in s else None,
                     "message": run.message})
    return pd.DataFrame(rows).astype({"pid": "Int64"})


def time_to_limit_table(parts: Mapping[str, Any], limit: int | float | str | None = None) -> pd.DataFrame:
    """When each process, and the service in total, reaches the memory limit; one row each.

    ``limit``: bytes or a size (``"4GiB"``); default: the limit given when
    recording, else each journal's cgroup limit
    (:func:`tokdiag.analysis.time_to_limit`). A cgroup counts every process
    in it, so when the workers share a container the total is the row that
    says when it is killed. Columns: ``run``, ``status`` (``limit``,
    ``over``, ``max``, ``unknown``, or ``no leak`` when RSS does not keep
    growing), ``per_step`` and ``per_hour`` (bytes), ``limit_bytes``,
    ``seconds`` (central estimate), ``text``.
    """
    from tokdiag.analysis import time_to_limit

    rows: list[dict[str, Any]] = []
    for label, run in parts.items():
        when = time_to_limit(run, limit)
        if when is None:
            rows.append({"run": label, "status": "no leak", "per_step": None, "per_hour": None,
                         "limit_bytes": None, "seconds": None,
                         "text": "RSS does not keep growing: no time to the limit"})
            continue
        rows.append({"run": label, "status": when.status, "per_step": when.per_step, "per_hour": when.per_hour,
                     "limit_bytes": when.limit_bytes, "seconds": when.seconds, "text": when.text})
    return pd.DataFrame(rows, columns=["run", "status", "per_step", "per_hour", "limit_bytes", "seconds", "text"])


def report_from_service(journals: Sequence[str | os.PathLike[str]], out_dir: str | os.PathLike[str], *,
                        limit: int | float | str | None = None, with_code: bool = False) -> Path:
    """Run :data:`SERVICE_REPORT_NOTEBOOK` on a service's journals into ``out_dir``; return the HTML path.

    ``journals``: the per-process journals (or one), glob patterns, or the
    ``-o`` path given to ``tokdiag attach`` (its ``.pid*`` journals are
    found). ``limit``: the memory limit for the time to the limit. Writes
    ``service.ipynb``, ``service.html`` and ``summary.json``; errors as
    :func:`tokdiag.report.export.run_report_notebook`, and a
    :class:`ConfigError` for journals that cannot be found or read, or a
    bad ``limit``, before any kernel starts.
    """
    from tokdiag.recording.service import service_journals
    from tokdiag.report.journal_report import check_journals, run_report_notebook

    if not journals:
        raise ConfigError("no journal given; pass the service's journal files (.jsonl), or the -o path given to "
                          "tokdiag attach")
    try:
        paths = service_journals(journals)
    except JournalError as exc:
        raise ConfigError(str(exc)) from None
    check_journals(paths)
    if limit is not None:
        from tokdiag.analysis.limit import parse_size

        parse_size(limit)
    return run_report_notebook(SERVICE_REPORT_NOTEBOOK, paths, out_dir, parameters={"limit": limit},
                               with_code=with_code,
                               title="tokdiag service report: " + ", ".join(p.name for p in paths))
