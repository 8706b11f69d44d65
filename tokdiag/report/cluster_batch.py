"""One plan on one connected Dask client: submission, retries, progress, landing the files, Ctrl-C.

Used by :func:`tokdiag.report.cluster.run_on_cluster` once it has a client
whose workers passed the environment check; the tasks it submits are
:func:`tokdiag.report.cluster_task.run_task`. A finished task's files are
written into the run's folder here as a local run writes them
(the folder is prepared and sealed the same way).
"""

from __future__ import annotations

import itertools
import os
import threading
import time
import uuid
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any

from tokdiag.errors import ConfigError
from tokdiag.report.batch import Progress
from tokdiag.report.cluster_task import Shipped, run_task
from tokdiag.report.folders import (
    entries_below,
    prepare_folder,
    run_writes,
    seal_folder,
)
from tokdiag.report.index import write_index
from tokdiag.report.kernel import ExecutionFailure
from tokdiag.report.plan import Plan, RunSpec
from tokdiag.report.results import RunResult

__all__ = ["ClusterBatch"]

_FINAL = frozenset({"RunTooLarge"})
"""Failures not retried although no cell raised them (they would fail the same way again)."""


def _inside(folder: Path, rel: str) -> Path:
    parts = PurePosixPath(rel).parts
    if not parts or PurePosixPath(rel).is_absolute() or ".." in parts:
        raise ConfigError(f"a worker sent a file named {rel!r}, outside its run folder; refusing to write it")
    return folder.joinpath(*parts)


def _land(shipped: Shipped, spec: RunSpec, out: Path, attempts: int) -> RunResult:
    """Write a task's files into ``out/<run folder>`` and describe the run as a local batch would."""
    folder = (out / spec.folder_name).resolve()
    plan = prepare_folder(folder, run_writes(spec))
    before_dirs = entries_below(folder)[1]
    try:
        for rel, _, data in shipped.files:
            target = _inside(folder, rel)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(zlib.decompress(data))
    finally:  # the next batch must know which files were this run's (as run_one does locally)
        seal_folder(plan, before_dirs)

    def at(rel: str | None) -> Path | None:
        return None if rel is None else _inside(folder, rel)

    return RunResult(spec=spec, folder=folder, duration_s=shipped.duration_s, failure=shipped.failure,
                     notebook=at(shipped.notebook), html=at(shipped.html),
                     journals=tuple(_inside(folder, rel) for rel in shipped.journals), summary=shipped.summary,
                     host=shipped.host, worker=shipped.worker, attempts=attempts)


def _retriable(failure: ExecutionFailure) -> bool:
    """A failure that is not the notebook's own doing (no cell raised it) and may go away on another worker."""
    return failure.cell_index is None and failure.ename not in _FINAL


@dataclass(slots=True)
class _Job:
    """One submitted attempt of a run."""

    future: Any
    spec: RunSpec
    attempt: int
    tried: tuple[str, ...]  # workers where earlier attempts failed
    workers: tuple[str, ...] = ()  # the workers it may run on (empty: any)


class ClusterBatch:
    """One plan on one connected client: submission, retries, progress, landing, Ctrl-C."""

    POLL_S = 0.2
    """How often the client looks for finished runs (it sleeps in between, so Ctrl-C is seen at once)."""

    STRANDED_CHECK_S = 5.0
    """How often it looks for retries whose allowed workers have all left the cluster."""

    def __init__(self, client: Any, distributed: ModuleType, plan: Plan, out: Path, *, retries: int,
                 report: Progress, expected: Mapping[str, str | None], max_run_bytes: int) -> None:
        self.client, self.distributed, self.plan, self.out = client, distributed, plan, out
        self.retries, self.report, self.expected, self.max_run_bytes = retries, report, expected, max_run_bytes
        self.topic = f"tokdiag-batch-{uuid.uuid4().hex}"
        self.notebooks = {spec.notebook: spec.notebook.read_bytes() for spec in plan.runs}
        self.jobs: dict[str, _Job] = {}
        self.results: dict[int, RunResult] = {}
        self.lock = threading.Lock()
        self.running: set[str] = set()
        self.ended: set[str] = set()
        self.keys = itertools.count(1)
        self.pending: Any = None

    def submit(self, spec: RunSpec, attempt: int, tried: tuple[str, ...], *, anywhere: bool = False) -> None:
        """Submit one attempt; a retry goes only to workers that have not failed this run (when any is left)."""
        key = f"tokdiag-run-{self.topic[-12:]}-{spec.index}-{attempt}-{next(self.keys)}"
        others = () if anywhere or not tried else tuple(w for w in self.client.nthreads() if w not in tried)
        where: dict[str, Any] = {"workers": list(others), "allow_other_workers": False} if others else {}
        job = _Job(future=None, spec=spec, attempt=attempt, tried=tried, workers=others)
        with self.lock:  # known before the task can announce its start
            self.jobs[key] = job
        job.future = self.client.submit(run_task, spec, self.notebooks[spec.notebook], expected=self.expected,
                                        timeout=self.plan.timeout, topic=self.topic,
                                        max_run_bytes=self.max_run_bytes, key=key, retries=0, **where)
        self.pending.add(job.future)

    def started(self, event: tuple[float, Any]) -> None:
        """A task's start, sent by the worker (called on the client's event loop thread)."""
        message = event[1]
        key = str(message.get("key"))
        with self.lock:
            job = self.jobs.get(key)
            if job is None or key in self.ended:
                return
            self.running.add(key)
        again = f", attempt {job.attempt}" if job.attempt > 1 else ""
        self.report.say(f"[start] {job.spec.folder_name} on {message.get('host')} ({message.get('worker')}{again})")

    @staticmethod
    def outcome(future: Any) -> Shipped:
        """What a finished future holds, as a :class:`Shipped` even when the task itself failed."""
        try:
            return future.result()
        except Exception as exc:  # the task raised (e.g. distributed's KilledWorker) or was cancelled
            ename = "Cancelled" if future.status == "cancelled" else type(exc).__name__
            text = " ".join(str(exc).split()) or "the Dask task ended without a result"
            return Shipped(failure=ExecutionFailure(ename=ename, evalue=text), host="", worker="")

    def finished(self, result: RunResult) -> None:
        with self.lock:
            running = len(self.running)
        done = len(self.results)
        failed = sum(1 for r in self.results.values() if not r.ok)
        mark = "ok" if result.ok else "FAILED"
        where = f" on {result.host}" if result.host else ""
        detail = "" if result.failure is None else f": {result.failure.describe()}"
        self.report.say(f"[{done}/{len(self.plan.runs)}] {mark:6} {result.spec.folder_name}{where} in "
                        f"{result.duration_s:.1f}s{detail}  ({done} done, {failed} failed, {running} running)")

    def run(self) -> tuple[RunResult, ...]:
        self.client.subscribe_topic(self.topic, self.started)
        self.pending = self.distributed.as_completed(loop=self.client.loop)
        try:
            for spec in self.plan.runs:
                self.submit(spec, 1, ())
            checked = time.monotonic()
            while not self.pending.is_empty():
                ready = self.pending.next_batch(block=False)
                for future in ready:
                    self.collect(future)
                if not ready:
                    time.sleep(self.POLL_S)
                if time.monotonic() - checked > self.STRANDED_CHECK_S:
                    self.rescue_stranded()
                    checked = time.monotonic()
        except KeyboardInterrupt:
            self.interrupted()
            raise
        finally:
            try:
                self.client.unsubscribe_topic(self.topic)
            except Exception:  # the client may already be closing
                pass
        return tuple(self.results[spec.index] for spec in self.plan.runs)

    def rescue_stranded(self) -> None:
        """A retry allowed only on workers that have all left would wait forever: let it run anywhere."""
        alive = set(self.client.nthreads())
        with self.lock:
            stranded = [(key, job) for key, job in self.jobs.items()
                        if job.workers and not alive.intersection(job.workers) and not job.future.done()]
            for key, _ in stranded:
                del self.jobs[key]
        for _, job in stranded:
            self.client.cancel([job.future])
            self.report.say(f"[retry] {job.spec.folder_name}: the other workers have left; attempt {job.attempt} "
                            "now goes to any worker")
            self.submit(job.spec, job.attempt, job.tried, anywhere=True)

    def collect(self, future: Any) -> None:
        key = future.key
        with self.lock:
            job = self.jobs.get(key)
        if job is None:  # a stranded retry, cancelled and submitted again
            return
        shipped = self.outcome(future)
        with self.lock:
            self.running.discard(key)
            self.ended.add(key)
            del self.jobs[key]
        spec, attempt, failure = job.spec, job.attempt, shipped.failure
        retry = failure is not None and _retriable(failure) and attempt <= self.retries
        if failure is not None and retry:
            self.report.say(f"[retry] {spec.folder_name}: {failure.describe()}; attempt {attempt + 1} of "
                            f"{self.retries + 1}, on a worker that has not failed it when there is one")
            self.submit(spec, attempt + 1, (*job.tried, shipped.worker) if shipped.worker else job.tried)
        else:
            self.results[spec.index] = _land(shipped, spec, self.out, attempt)
        future.release()  # the worker keeps a result until the client lets go of it
        if not retry:
            self.finished(self.results[spec.index])

    def interrupted(self) -> None:
        """Ctrl-C: cancel what has not finished, keep what has, write the index, say so."""
        with self.lock:
            futures = [job.future for job in self.jobs.values() if job.future is not None]
        if futures:
            self.client.cancel(futures)
        cancelled = ExecutionFailure(ename="Cancelled", evalue="interrupted (Ctrl-C) before this run finished; "
                                                               "run the batch again to redo it")
        kept = len(self.results)
        for spec in self.plan.runs:
            if spec.index not in self.results:
                self.results[spec.index] = RunResult(spec=spec, folder=self.out / spec.folder_name, duration_s=0.0,
                                                     failure=cancelled, host="")
        ordered = [self.results[spec.index] for spec in self.plan.runs]
        index = write_index(ordered, self.out, title=self.plan.title, plan_name=self.plan.source)
        self.report.say(f"tokdiag batch: interrupted; {kept} finished runs kept, {len(ordered) - kept} cancelled; "
                        f"index: {os.path.relpath(index)}")
