"""What runs produced: one run's files, outcome and place (:class:`RunResult`), and a whole batch's.

Written by :func:`tokdiag.report.batch.run_one` (or landed from a Dask worker
by :mod:`tokdiag.report.cluster`), read by the index page
(:mod:`tokdiag.report.index`).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from pathlib import Path

from tokdiag.report.kernel import ExecutionFailure
from tokdiag.report.plan import RunSpec
from tokdiag.report.summary import Summary

__all__ = ["BatchResult", "RunResult"]

@dataclass(frozen=True, slots=True)
class RunResult:
    """What one run produced. Paths are absolute; the index makes them relative."""

    spec: RunSpec
    folder: Path
    duration_s: float
    failure: ExecutionFailure | None = None
    notebook: Path | None = None
    html: Path | None = None
    journals: tuple[Path, ...] = ()
    summary: Summary | None = None
    host: str = field(default_factory=socket.gethostname)
    """The machine whose kernel ran it (RSS figures from different machines are not comparable)."""
    worker: str = ""
    """The Dask worker's address when the batch ran on a cluster (``""`` on the local pool)."""
    attempts: int = 1
    """How many times the run was started (more than 1 after a retry on a cluster)."""

    @property
    def ok(self) -> bool:
        return self.failure is None

    @property
    def status(self) -> str:
        return "ok" if self.ok else "failed"




@dataclass(frozen=True, slots=True)
class BatchResult:
    """The outcome of :func:`tokdiag.report.batch.run_batch`: every run (in plan order) and the index page."""
    out_dir: Path
    index: Path
    runs: tuple[RunResult, ...] = field(default_factory=tuple)

    @property
    def failed(self) -> tuple[RunResult, ...]:
        return tuple(r for r in self.runs if not r.ok)
