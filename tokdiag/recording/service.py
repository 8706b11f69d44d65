"""A service's journals, one per worker process, read as one run: per-process series and their total.

``tokdiag attach`` on several processes (or on a parent and its Python
children) writes one journal per process, named so that they sort and say
which process: ``service.pid0012345.jsonl`` for ``-o service.jsonl``
(:func:`journal_for`). Workers that start :func:`tokdiag.recording` themselves
do the same with ``"service-{pid}.jsonl"``. :func:`load_service` reads them
back::

    svc = td.load_service("service.jsonl")          # finds service.pid*.jsonl beside it
    svc.verdicts()                                   # one row per series per process, plus the total
    service_parts(svc)                               # {"service pid 12345": Run, ..., "service (total)": Run}

The timeline holds every process's rows under its own ``run``
(``"service pid 12345"``) and a total run (``"service (total)"``): the sum
over processes of every quantity (bytes, objects, entries, blocks, calls;
timings and fingerprints are not summed; a directory that every process
measures with ``--disk`` counts once, at its largest) at every step from the last
process's first snapshot to the first process's last, each process counting
with its latest snapshot at or before that step. Processes recorded by one
``tokdiag attach`` share one clock, and their per-second steps are the slots
of the same ``every`` grid, so they line up.

``tokdiag report`` reports on several journals as one service
(``tokdiag/report/notebooks/service.ipynb``) when :func:`one_service` says
they are: every header names the same service (``params["service"]``,
written by ``td.record`` and ``tokdiag attach``) or every file is named
``STEM.pidNNNNNNN.jsonl`` with one ``STEM``, and no two come from one pid.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tokdiag.errors import ConfigError, JournalError
from tokdiag.recording.journal import read_header
from tokdiag.recording.run import Run, load

__all__ = ["journal_for", "load_service", "one_service", "service_journals", "service_name", "service_parts"]

_SUMMED_UNITS = ("bytes", "objects", "entries", "blocks", "calls")
_SHARED_PROBES = ("disk",)
"""Probes that measure something outside the process (a directory): every process sees the same one, so the
total takes the largest value among the processes instead of their sum."""


def journal_for(journal: str | os.PathLike[str], pid: int, several: bool) -> Path:
    """The journal of process ``pid``: ``journal`` itself for one process, ``STEM.pidNNNNNNN.SUFFIX`` for several.

    >>> str(journal_for("runs/service.jsonl", 4242, True))
    'runs/service.pid0004242.jsonl'
    >>> str(journal_for("runs/service.jsonl", 4242, False))
    'runs/service.jsonl'
    """
    path = Path(journal)
    if not several:
        return path
    return path.with_name(f"{path.stem}.pid{pid:07d}{path.suffix or '.jsonl'}")


def service_name(journal: str | os.PathLike[str]) -> str:
    """The service a journal (or a ``{pid}`` template of one) belongs to: its name without the pid.

    >>> service_name("runs/service-{pid}.jsonl"), service_name("svc.{pid}.jsonl"), service_name("{pid}.jsonl")
    ('service', 'svc', 'service')
    """
    return Path(journal).stem.replace("{pid}", "").strip("-_. ") or "service"


def service_journals(journals: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[Path]:
    """The journal files ``journals`` names: paths, glob patterns, or an attach ``-o`` path (its ``.pid*`` siblings).

    A :class:`~tokdiag.errors.JournalError` names one that finds nothing.
    """
    items = [journals] if isinstance(journals, (str, os.PathLike)) else list(journals)
    out: list[Path] = []
    for item in items:
        text = str(item)
        if glob.has_magic(text):
            found = sorted(Path(p) for p in glob.glob(text))
        elif Path(text).exists():
            found = [Path(text)]
        else:
            path = Path(text)
            found = sorted(path.parent.glob(f"{glob.escape(path.stem)}.pid*{path.suffix or '.jsonl'}"))
        if not found:
            raise JournalError(f"no journal at {text!r} (nor {Path(text).stem}.pid*.jsonl beside it); pass the "
                               "journals tokdiag attach or td.record wrote, e.g. 'service.pid*.jsonl'")
        out.extend(p for p in found if p not in out)
    return out


def load_service(journals: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], *,
                 name: str | None = None) -> Run:
    """One :class:`~tokdiag.Run` for a service's journals: per-process runs and their total.

    ``journals``: paths, glob patterns, or the ``-o`` path given to
    ``tokdiag attach`` (its ``.pid*`` siblings are found). ``status`` is
    the first process's status that is not ``completed``/``stopped``, else
    ``completed``; ``header["processes"]`` lists ``{"pid", "journal",
    "status", "message", "run", "header"}`` per process (``run``: its label
    in the timeline; ``header``: its journal's). :func:`service_parts`
    splits the result into one Run per process and the total.
    """
    paths = service_journals(journals)
    runs = [load(p) for p in paths]
    service = name or _service_name(paths, runs)
    frames: list[pd.DataFrame] = []
    processes: list[dict[str, Any]] = []
    for path, run in zip(paths, runs, strict=True):
        pid = run.header.get("pid", "?")
        label = f"{service} pid {pid}"
        frames.append(run.timeline.assign(run=label).astype({"run": "string"}))
        processes.append({"pid": pid, "journal": str(path), "status": run.status, "message": run.message,
                          "run": label, "header": run.header})
    timeline = pd.concat(frames, ignore_index=True) if frames else runs[0].timeline
    if len(runs) > 1:
        timeline = pd.concat([timeline, _total(frames, f"{service} (total)")], ignore_index=True)
    odd = [r for r in runs if r.status not in ("completed", "stopped")]
    status = odd[0].status if odd else "completed"
    message = "; ".join(f"pid {p['pid']}: {r.status} ({r.message})" for p, r in zip(processes, runs, strict=True))
    header = dict(runs[0].header)
    header.update(run=service, processes=processes)
    retention: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        for subject, chains in run.retention.items():
            retention.setdefault(subject, []).extend(chains)
    return Run(name=service, timeline=timeline, header=header, status=status, message=message,
               events=[{**e, "pid": p["pid"]} for p, r in zip(processes, runs, strict=True) for e in r.events],
               warnings=[w for r in runs for w in r.warnings], retention=retention, journal=None)


def _service_name(paths: list[Path], runs: list[Run]) -> str:
    named = {str((r.header.get("params") or {}).get("service") or "") for r in runs}
    if len(named) == 1 and "" not in named:
        return named.pop()
    stem = paths[0].stem
    base = stem.split(".pid", 1)[0] if ".pid" in stem else stem
    return base or "service"


def service_parts(service: Run) -> dict[str, Run]:
    """One :class:`~tokdiag.Run` per process of a :func:`load_service` result, then the total (several processes).

    Keys are the timeline's ``run`` labels (``"svc pid 12345"``, ``"svc
    (total)"``). A process's Run has its own journal's header (its cgroup
    limit, its params) and status; the total has the service's header and
    status, and every process's why-alive chains.
    """
    processes = service.header.get("processes")
    if not processes:
        raise ConfigError(f"run {service.name!r} is not a service's: load the journals with td.load_service(...)")
    tl = service.timeline
    parts: dict[str, Run] = {}
    for p in processes:
        label = str(p["run"])
        parts[label] = Run(name=label, timeline=tl[tl["run"] == label].reset_index(drop=True),
                           header=dict(p.get("header") or {}), status=str(p["status"]),
                           message=str(p.get("message", "")),
                           events=[e for e in service.events if e.get("pid") == p["pid"]],
                           journal=Path(p["journal"]))
    total = f"{service.name} (total)"
    if len(processes) > 1 and (tl["run"] == total).any():
        header = {k: v for k, v in service.header.items() if k != "processes"}
        parts[total] = Run(name=total, timeline=tl[tl["run"] == total].reset_index(drop=True), header=header,
                           status=service.status, message=service.message, warnings=list(service.warnings),
                           retention=service.retention)
    return parts


def one_service(journals: Sequence[str | os.PathLike[str]]) -> bool:
    """Whether ``journals`` are the per-process journals of one service (see the module docstring).

    A path that is not a file but names a service's ``.pid*`` journals
    (the ``-o`` of ``tokdiag attach``) is one service's; glob patterns are
    resolved, then judged like the files they match.
    """
    items = [str(j) for j in journals]
    paths: list[str | Path] = list(items)
    if any(glob.has_magic(j) or not Path(j).is_file() for j in items):
        try:
            paths = list(service_journals(items))
        except JournalError:
            return False
        if not any(glob.has_magic(j) for j in items):
            return True  # the -o path of tokdiag attach: its .pid* journals
    if len(paths) < 2:
        return False
    try:
        headers = [read_header(j) for j in paths]
    except (JournalError, OSError):
        return False
    pids = [h.get("pid") for h in headers]
    if None in pids or len(set(pids)) != len(pids):
        return False
    named = {(h.get("params") or {}).get("service") for h in headers}
    if len(named) == 1 and None not in named:
        return True
    stems = {Path(j).stem.split(".pid", 1)[0] if re.search(r"\.pid\d+$", Path(j).stem) else None for j in paths}
    return len(stems) == 1 and None not in stems


def _total(frames: list[pd.DataFrame], label: str) -> pd.DataFrame:
    """The sum over processes of every summable series (the largest value for a directory every process measures),
    at every step from the last process's first snapshot to the first process's last: each process counts with
    its latest snapshot at or before that step."""
    firsts = [int(f["step"].min()) for f in frames if len(f)]
    lasts = [int(f["step"].max()) for f in frames if len(f)]
    if len(firsts) < len(frames) or max(firsts) > min(lasts):
        return frames[0].iloc[0:0]
    steps = sorted({int(s) for f in frames for s in f["step"].unique() if max(firsts) <= s <= min(lasts)})
    keys = ["probe", "subject", "metric", "unit"]
    parts = []
    for f in frames:
        shared = f["probe"].isin(_SHARED_PROBES)
        f = f[(f["unit"].isin(_SUMMED_UNITS) & ~shared) | (shared & f["unit"].isin(("bytes", "files")))]
        wide = f.pivot_table(index="step", columns=keys, values="value", aggfunc="mean")
        parts.append(wide.reindex(wide.index.union(steps)).sort_index().ffill().loc[steps])
    stacked = pd.concat(parts, keys=range(len(parts))).groupby(level=1)
    summed = stacked.sum(min_count=1)
    shared_columns = [c for c in summed.columns if c[0] in _SHARED_PROBES]
    if shared_columns:
        summed[shared_columns] = stacked.max()[shared_columns]
    series = summed.columns.to_frame(index=False)
    total = series.loc[series.index.repeat(len(summed))].reset_index(drop=True)
    total["step"] = np.tile(summed.index.to_numpy(), len(series))
    total["value"] = summed.to_numpy().T.ravel()
    total = total.dropna(subset=["value"])
    elapsed = pd.concat(frames).groupby("step")["elapsed_s"].mean()
    total["elapsed_s"] = total["step"].map(elapsed).astype("float64")
    total["run"] = label
    return total[list(frames[0].columns)].astype(frames[0].dtypes.to_dict())
