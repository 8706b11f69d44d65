"""A service's journals, one per worker process, read as one run: per-process series and their total.

``tokdiag attach`` on several processes (or on a parent and its Python
children) writes one journal per process, named so that they sort and say
which process: ``service.pid0012345.jsonl`` for ``-o service.jsonl``
(:func:`journal_for`). Workers that start :func:`tokdiag.recording` themselves
do the same with ``"service-{pid}.jsonl"``. :func:`load_service` reads them
back::

    svc = td.load_service("service.jsonl")          # finds service.pid*.jsonl beside it
    svc.verdicts()                                   # one row per series per process, plus the total

The timeline holds every process's rows under its own ``run``
(``"service pid 12345"``) and a total run (``"service (total)"``): the sum
over processes of every quantity (bytes, objects, entries, blocks, calls;
timings and fingerprints are not summed) at every step from the last
process's first snapshot to the first process's last, each process counting
with its latest snapshot at or before that step. Processes recorded by one
``tokdiag attach`` share one clock, and their per-second steps are the slots
of the same ``every`` grid, so they line up.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tokdiag.errors import JournalError
from tokdiag.recording.run import Run, load

__all__ = ["journal_for", "load_service"]

_SUMMED_UNITS = ("bytes", "objects", "entries", "blocks", "calls")


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


def _paths(journals: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]) -> list[Path]:
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
    "status"}`` per process.
    """
    paths = _paths(journals)
    runs = [load(p) for p in paths]
    service = name or _service_name(paths)
    frames: list[pd.DataFrame] = []
    processes: list[dict[str, Any]] = []
    for path, run in zip(paths, runs):
        pid = run.header.get("pid", "?")
        label = f"{service} pid {pid}"
        frames.append(run.timeline.assign(run=label).astype({"run": "string"}))
        processes.append({"pid": pid, "journal": str(path), "status": run.status, "run": label})
    timeline = pd.concat(frames, ignore_index=True) if frames else runs[0].timeline
    if len(runs) > 1:
        timeline = pd.concat([timeline, _total(frames, f"{service} (total)")], ignore_index=True)
    odd = [r for r in runs if r.status not in ("completed", "stopped")]
    status = odd[0].status if odd else "completed"
    message = "; ".join(f"pid {p['pid']}: {r.status} ({r.message})" for p, r in zip(processes, runs))
    header = dict(runs[0].header)
    header.update(run=service, processes=processes)
    retention: dict[str, list[dict[str, Any]]] = {}
    for run in runs:
        for subject, chains in run.retention.items():
            retention.setdefault(subject, []).extend(chains)
    return Run(name=service, timeline=timeline, header=header, status=status, message=message,
               events=[{**e, "pid": p["pid"]} for p, r in zip(processes, runs) for e in r.events],
               warnings=[w for r in runs for w in r.warnings], retention=retention, journal=None)


def _service_name(paths: list[Path]) -> str:
    stem = paths[0].stem
    base = stem.split(".pid", 1)[0] if ".pid" in stem else stem
    return base or "service"


def _total(frames: list[pd.DataFrame], label: str) -> pd.DataFrame:
    """The sum over processes of every summable series, at every step from the last process's first snapshot to
    the first process's last: each process counts with its latest snapshot at or before that step."""
    firsts = [int(f["step"].min()) for f in frames if len(f)]
    lasts = [int(f["step"].max()) for f in frames if len(f)]
    if len(firsts) < len(frames) or max(firsts) > min(lasts):
        return frames[0].iloc[0:0]
    steps = sorted({int(s) for f in frames for s in f["step"].unique() if max(firsts) <= s <= min(lasts)})
    keys = ["probe", "subject", "metric", "unit"]
    parts = []
    for f in frames:
        f = f[f["unit"].isin(_SUMMED_UNITS)]
        wide = f.pivot_table(index="step", columns=keys, values="value", aggfunc="mean")
        parts.append(wide.reindex(wide.index.union(steps)).sort_index().ffill().loc[steps])
    summed = pd.concat(parts, keys=range(len(parts))).groupby(level=1).sum(min_count=1)
    series = summed.columns.to_frame(index=False)
    total = series.loc[series.index.repeat(len(summed))].reset_index(drop=True)
    total["step"] = np.tile(summed.index.to_numpy(), len(series))
    total["value"] = summed.to_numpy().T.ravel()
    total = total.dropna(subset=["value"])
    elapsed = pd.concat(frames).groupby("step")["elapsed_s"].mean()
    total["elapsed_s"] = total["step"].map(elapsed).astype("float64")
    total["run"] = label
    return total[list(frames[0].columns)].astype(frames[0].dtypes.to_dict())
