"""Run a plan on a Dask cluster: ``tokdiag batch plan.yaml --cluster tcp://HOST:8786`` (or ``local:N``).

The local pool stays the default; this path is taken only when a cluster is
named, and only then is Dask (``distributed``, the optional extra
``tokdiag[cluster]``) imported. Each run of the plan becomes one Dask task
that does on a worker exactly what the local batch does on this machine:
:func:`tokdiag.report.batch.run_one` starts a fresh kernel (its own process, a child
of the worker) in a scratch folder under the worker's local directory, then
the task sends the run folder's files (executed notebook, HTML, journals,
``summary.json``) back to this client, which writes them under the output
folder. Workers need no shared filesystem: the notebook itself travels with
the task. The index and the reports are those of a local batch, plus where
each run ran (host and worker) and how many attempts it took.

``--cluster`` takes

* ``tcp://HOST:PORT`` (or ``tls://``, ``ws://``, ``wss://``, or a bare
  ``HOST:PORT``): a running ``dask scheduler``; at least one worker must
  join within :data:`WORKER_WAIT_S` seconds;
* ``local:N``: a :class:`distributed.LocalCluster` of N single-threaded
  worker processes on this machine, closed at the end.

How many runs go at once is the cluster's number of worker threads (start
workers with ``--nthreads 1``: one run, one kernel per worker process); the
plan's ``jobs`` and ``--jobs`` are not used.

What a worker needs
-------------------
The same tokdiag version and the same Python (implementation and version) as
this client: every worker is checked before anything is submitted, and the
batch is refused with a :class:`~tokdiag.errors.ConfigError` naming each
worker that differs; a worker that joins later is checked by the task itself
(its runs fail with ``EnvironmentMismatch`` and are retried elsewhere when
``retries`` allows). Besides that, whatever the notebooks import (tokdiag's
built-in workloads come with it; your ``-p target mypkg.jobs:handle`` needs
``mypkg`` importable on the worker: installed, or on the worker's
``PYTHONPATH``, or in the folder the worker was started from), and any file a
plan parameter names by path. Memory figures from different machines are not
comparable: the index says where each run ran, and :func:`tokdiag.compare`
warns when two journals come from different hosts.

A kernel on a worker gets the worker's environment minus what Dask's nanny
put there (``distributed.nanny.pre-spawn-environ`` and ``.environ``: by
default ``MALLOC_TRIM_THRESHOLD_=65536``, which makes glibc hand freed memory
back early and so changes RSS, ``OMP/MKL/OPENBLAS_NUM_THREADS=1`` and
``PYTHONHASHSEED=6640``): it
measures what a kernel of the local pool would. A variable you exported
yourself with exactly Dask's value is removed too. A ``local:N`` cluster's
nannies run in this process and write those variables here as well; they are
undone when the cluster closes.

Faults
------
* A run whose worker dies while the run is in progress (killed, out of
  memory) is failed with ``WorkerLost`` naming the worker and its host. Dask
  would otherwise run the task again by itself, silently; the task marks its
  start on the scheduler (``Client.set_metadata`` under its own key, dropped
  with the task) and a second start returns that failure at once instead.
* A kernel that dies on the worker (e.g. OOM-killed) fails its run as in a
  local batch (``DeadKernelError``); the worker goes on with the next run.
* ``retries=N`` (``--retries N``) runs a run again, up to N more times,
  after a failure that is not the notebook's own doing: a lost worker, a dead
  or unstartable kernel, a timeout, a worker whose environment differs. The
  retry runs only on a worker that has not failed this run yet, waiting for
  one to be free; on any worker when no other was there, or when all those
  have left the cluster since. A cell that raises is not retried: it would
  raise again.
* Ctrl-C cancels every run that has not started, keeps the runs that
  finished (their folders are written as each one arrives), writes the index
  with the others marked ``Cancelled`` and re-raises ``KeyboardInterrupt``.
  Runs already in progress on an external cluster finish on their workers
  and their results are dropped; a ``local:N`` cluster is shut down, and its
  kernels exit with their workers.

Large run folders
-----------------
A run's files travel back in the task's result, each compressed with zlib
at level 1 (journals are JSON lines: a test journal and one of the suite's
came out 11x and 16x smaller). Up to :data:`MAX_RUN_BYTES` (256 MiB,
counted before compression) per run are sent, smallest files first; when the folder holds more, the files that do
not fit stay on the worker (in a folder that is then not deleted), the run
is failed with ``RunTooLarge`` naming those files, their sizes, the worker
and the folder to copy them from, and whatever fit (the notebook and its
HTML, usually) is written here. Pass ``max_run_bytes`` to
:func:`run_on_cluster` for another cap.

>>> from tokdiag.report.batch import run_batch
>>> run_batch("plans/default.yaml", "reports", cluster="tcp://scheduler:8786", retries=1).index  # doctest: +SKIP
PosixPath('reports/index.html')
"""

from __future__ import annotations

import itertools
import logging
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any

from tokdiag.errors import ConfigError, did_you_mean
from tokdiag.report.batch import (
    RUN_MARKER,
    Plan,
    RunResult,
    RunSpec,
    _entries_below,
    _prepare_folder,
    _Progress,
    _run_writes,
    _seal_folder,
    run_one,
    write_index,
)
from tokdiag.report.kernel import ExecutionFailure
from tokdiag.report.summary import Summary

__all__ = ["MAX_RUN_BYTES", "WORKER_WAIT_S", "ClusterTarget", "check_workers", "parse_cluster", "run_on_cluster"]

MAX_RUN_BYTES = 256 * 2**20
"""The most bytes (before compression) of one run's files sent back to the client (see "Large run folders")."""

WORKER_WAIT_S = 30.0
"""Seconds to wait for a first worker to join an external scheduler before refusing the batch."""

CONNECT_TIMEOUT_S = 10.0
"""Seconds to wait for the scheduler to answer."""

_FINAL = frozenset({"RunTooLarge"})
"""Failures not retried although no cell raised them (they would fail the same way again)."""


@dataclass(frozen=True, slots=True)
class ClusterTarget:
    """Where to run: a scheduler's address, or ``local_workers`` processes of a LocalCluster."""

    address: str | None
    local_workers: int = 0

    def __str__(self) -> str:
        return self.address if self.address is not None else f"local:{self.local_workers}"


_ADDRESS = re.compile(r"(?:(tcp|tls|ws|wss)://)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+)(?::(\d{1,5}))?")


def parse_cluster(text: object) -> ClusterTarget:
    """Read a ``--cluster`` value: ``tcp://HOST:PORT`` (also ``tls://``, ``ws://``, ``wss://``) or ``local:N``.

    >>> parse_cluster("local:2")
    ClusterTarget(address=None, local_workers=2)
    >>> str(parse_cluster("127.0.0.1:8786"))
    'tcp://127.0.0.1:8786'
    >>> parse_cluster("local:0")
    Traceback (most recent call last):
    ...
    tokdiag.errors.ConfigError: --cluster 'local:0': local:N needs N >= 1 worker processes, e.g. local:2
    """
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"--cluster {text!r}: give a scheduler address (tcp://HOST:8786) or local:N")
    value = text.strip()
    if value.split(":", 1)[0].lower() == "local":
        count = value.split(":", 1)[1] if ":" in value else ""
        if not count.isdigit() or int(count) < 1:
            raise ConfigError(f"--cluster {text!r}: local:N needs N >= 1 worker processes, e.g. local:2")
        return ClusterTarget(address=None, local_workers=int(count))
    match = _ADDRESS.fullmatch(value)
    if match is None or (match.group(3) is not None and not 0 < int(match.group(3)) < 65536):
        scheme = value.split("://", 1)[0] if "://" in value else ""
        hint = did_you_mean(scheme, ("tcp", "tls", "ws", "wss"), start=" (", end=")") if scheme else ""
        raise ConfigError(f"--cluster {text!r} is not a scheduler address{hint}; give tcp://HOST:PORT, e.g. "
                          "tcp://10.0.0.5:8786 (what `dask scheduler` prints), or local:N for N worker "
                          "processes on this machine")
    scheme, host, port = match.group(1) or "tcp", match.group(2), match.group(3)
    return ClusterTarget(address=f"{scheme}://{host}" + (f":{port}" if port else ""))


def _import_distributed() -> ModuleType:
    try:
        import distributed
    except ImportError as exc:
        raise ConfigError(f"--cluster needs Dask's `distributed` package, which cannot be imported here ({exc}); "
                          "install it with pip install 'tokdiag[cluster]' (here and on every worker), or run "
                          "without --cluster on the local pool") from None
    return distributed


# ---------------------------------------------------------------------------
# the environment every worker must share with the client


def _environment_probe() -> Callable[[], dict[str, str | None]]:
    """A function reporting tokdiag's version, Python and the host where it is called.

    Defined inside a function so that cloudpickle sends it by value: it runs
    (and reports ``tokdiag: None``) on a worker where tokdiag is missing.
    """

    def probe() -> dict[str, str | None]:
        import platform
        import socket
        import sys

        try:
            import tokdiag

            version: str | None = str(tokdiag.__version__)
        except Exception:  # not installed, or broken: reported as "not importable"
            version = None
        return {"tokdiag": version, "python": platform.python_version(), "implementation": sys.implementation.name,
                "host": socket.gethostname()}

    return probe


def _describe(env: Mapping[str, str | None]) -> str:
    tokdiag = f"tokdiag {env.get('tokdiag')}" if env.get("tokdiag") else "no importable tokdiag"
    return f"{tokdiag} and Python {env.get('python')} ({env.get('implementation')})"


def _mismatch(expected: Mapping[str, str | None], found: Mapping[str, str | None]) -> bool:
    return any(found.get(k) != expected.get(k) for k in ("tokdiag", "python", "implementation"))


def check_workers(client: Any, expected: Mapping[str, str | None] | None = None) -> dict[str, dict[str, str | None]]:
    """Every worker's environment (``{address: {"tokdiag", "python", "implementation", "host"}}``).

    Raises :class:`ConfigError` naming each worker whose tokdiag version or
    Python differs from ``expected`` (default: this process's), or that did
    not answer.
    """
    expected = dict(expected) if expected is not None else _environment_probe()()
    found = client.run(_environment_probe(), on_error="return")
    bad = []
    for address, env in sorted(found.items()):
        if isinstance(env, BaseException):
            bad.append(f"worker {address} did not answer the check ({type(env).__name__}: {env})")
        elif _mismatch(expected, env):
            bad.append(f"worker {address} on {env.get('host')} has {_describe(env)}")
    if bad:
        wanted = expected.get("tokdiag")
        raise ConfigError(f"the Dask workers must run the same tokdiag and Python as this client "
                          f"({_describe(expected)}): " + "; ".join(bad) + f"; install tokdiag {wanted} on Python "
                          f"{expected.get('python')} there (pip install 'tokdiag[cluster]=={wanted}') or stop "
                          "those workers")
    return found


# ---------------------------------------------------------------------------
# on the worker


_ENVIRON_LOCK = threading.Lock()


def _dask_environ() -> dict[str, str]:
    """The variables Dask's nanny puts into a worker process's environment (``distributed.nanny.*environ``)."""
    import dask

    found: dict[str, str] = {}
    for key in ("distributed.nanny.pre-spawn-environ", "distributed.nanny.environ"):
        found.update({str(name): str(value) for name, value in (dask.config.get(key, None) or {}).items()
                      if value is not None})
    if found.get("PYTHONHASHSEED") in (None, "0"):  # what the nanny then sets (distributed.nanny.Nanny.__init__)
        found["PYTHONHASHSEED"] = "6640"
    return found


def _drop_dask_environ() -> None:
    """Keep Dask's worker settings out of the kernels this worker starts: they would change what a run measures.

    Dask's nanny sets ``MALLOC_TRIM_THRESHOLD_=65536`` (glibc then returns
    freed memory to the OS early, which changes RSS),
    ``OMP/MKL/OPENBLAS_NUM_THREADS=1`` and ``PYTHONHASHSEED=6640`` in every worker process; a kernel
    started from it would inherit them, unlike a kernel of the local pool.
    Each variable still holding the value Dask gave it is removed from this
    process's environment (the worker itself read them when it started).
    """
    with _ENVIRON_LOCK:  # tasks of a multi-threaded worker: one removes, the others find nothing to do
        for name, value in _dask_environ().items():
            if os.environ.get(name) == value:
                del os.environ[name]


@dataclass(frozen=True, slots=True)
class _Shipped:
    """What one task sends back: the run's outcome and its files (paths relative to the run folder)."""

    failure: ExecutionFailure | None
    host: str
    worker: str
    duration_s: float = 0.0
    files: tuple[tuple[str, int, bytes], ...] = ()  # (relative path, size, zlib-compressed content)
    notebook: str | None = None
    html: str | None = None
    journals: tuple[str, ...] = ()
    summary: Summary | None = None


def _pack(folder: Path, cap: int) -> tuple[list[tuple[str, int, bytes]], list[tuple[str, int]]]:
    """The files under ``folder``, smallest first, compressed, while their sizes add up to ``cap``; and those left."""
    found = sorted(((p.relative_to(folder).as_posix(), p.stat().st_size) for p in folder.rglob("*")
                    if p.is_file() and not p.is_symlink()), key=lambda item: (item[1], item[0]))
    shipped: list[tuple[str, int, bytes]] = []
    left: list[tuple[str, int]] = []
    total = 0
    for rel, size in found:
        if rel == RUN_MARKER:  # the client's folder gets its own
            continue
        if total + size <= cap:
            shipped.append((rel, size, zlib.compress(folder.joinpath(rel).read_bytes(), 1)))
            total += size
        else:
            left.append((rel, size))
    return shipped, left


def _count(n: int, thing: str) -> str:
    return f"{n} {thing}" + ("" if n == 1 else "s")


def _mib(size: float) -> str:
    return f"{size / 2**20:.1f} MiB"


def _run_task(spec: RunSpec, notebook: bytes, *, expected: Mapping[str, str | None], timeout: float | None,
              topic: str, max_run_bytes: int) -> _Shipped:
    """The Dask task: run ``spec`` on this worker in a fresh kernel, return its files. Never raises for a failed run."""
    from distributed import get_client, get_worker

    worker = get_worker()
    key = worker.get_current_task()
    here = _environment_probe()()
    host = str(here["host"])
    client = get_client()
    earlier = client.get_metadata(key, None)
    if earlier is not None:  # Dask runs a task again when its worker is lost; a memory run must not repeat silently
        return _Shipped(failure=ExecutionFailure(
            ename="WorkerLost", evalue=f"the Dask worker {earlier['worker']} on {earlier['host']} died or lost "
                                       "its scheduler while running this run (killed, or out of memory?)"),
            host=str(earlier["host"]), worker=str(earlier["worker"]))
    if _mismatch(expected, here):
        return _Shipped(failure=ExecutionFailure(
            ename="EnvironmentMismatch", evalue=f"worker {worker.address} on {host} has {_describe(here)}, the "
                                                f"client {_describe(expected)}"), host=host, worker=worker.address)
    client.set_metadata(key, {"worker": worker.address, "host": host})  # dropped by the scheduler with the task
    _drop_dask_environ()
    worker.log_event(topic, {"key": key, "worker": worker.address, "host": host})
    scratch = Path(tempfile.mkdtemp(prefix="tokdiag-", dir=worker.local_directory))
    keep = False
    try:
        source = scratch / "notebook" / spec.notebook.name
        source.parent.mkdir()
        source.write_bytes(notebook)
        try:
            result = run_one(replace(spec, notebook=source), scratch / spec.folder_name, timeout=timeout)
        except Exception as exc:  # anything unforeseen fails this run only (as in the local pool)
            return _Shipped(failure=ExecutionFailure(ename=type(exc).__name__, evalue=str(exc)), host=host,
                            worker=worker.address)
        files, left = _pack(result.folder, max_run_bytes)
        failure = result.failure
        if left:
            keep = True
            listing = ", ".join(f"{rel} ({_mib(size)})" for rel, size in left)
            where = (f"{listing} left on worker {worker.address} on {host} in {result.folder}: copy them from there, "
                     f"or raise the cap (max_run_bytes) of {_mib(max_run_bytes)} a run may send back")
            failure = (ExecutionFailure(ename="RunTooLarge", evalue=where) if failure is None
                       else replace(failure, evalue=f"{failure.evalue}; {where}"))
        sent = {rel for rel, _, _ in files}

        def relative(path: Path | None) -> str | None:
            rel = None if path is None else path.relative_to(result.folder).as_posix()
            return rel if rel in sent else None

        return _Shipped(failure=failure, host=host, worker=worker.address, duration_s=result.duration_s,
                        files=tuple(files), notebook=relative(result.notebook), html=relative(result.html),
                        journals=tuple(r for r in map(relative, result.journals) if r is not None),
                        summary=result.summary)
    finally:
        if not keep:
            shutil.rmtree(scratch, ignore_errors=True)


# ---------------------------------------------------------------------------
# on the client


def _inside(folder: Path, rel: str) -> Path:
    parts = PurePosixPath(rel).parts
    if not parts or PurePosixPath(rel).is_absolute() or ".." in parts:
        raise ConfigError(f"a worker sent a file named {rel!r}, outside its run folder; refusing to write it")
    return folder.joinpath(*parts)


def _land(shipped: _Shipped, spec: RunSpec, out: Path, attempts: int) -> RunResult:
    """Write a task's files into ``out/<run folder>`` and describe the run as a local batch would."""
    folder = (out / spec.folder_name).resolve()
    plan = _prepare_folder(folder, _run_writes(spec))
    before_dirs = _entries_below(folder)[1]
    try:
        for rel, _, data in shipped.files:
            target = _inside(folder, rel)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(zlib.decompress(data))
    finally:  # the next batch must know which files were this run's (as run_one does locally)
        _seal_folder(plan, before_dirs)

    def at(rel: str | None) -> Path | None:
        return None if rel is None else _inside(folder, rel)

    return RunResult(spec=spec, folder=folder, duration_s=shipped.duration_s, failure=shipped.failure,
                     notebook=at(shipped.notebook), html=at(shipped.html),
                     journals=tuple(_inside(folder, rel) for rel in shipped.journals), summary=shipped.summary,
                     host=shipped.host, worker=shipped.worker, attempts=attempts)


def _retriable(failure: ExecutionFailure) -> bool:
    """A failure that is not the notebook's own doing (no cell raised it) and may go away on another worker."""
    return failure.cell_index is None and failure.ename not in _FINAL


@contextmanager
def _environ_restored() -> Iterator[None]:
    """Undo what a LocalCluster's nannies, which run in this process, write into ``os.environ``."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        for name in set(os.environ) - set(saved):
            del os.environ[name]
        for name, value in saved.items():
            if os.environ.get(name) != value:
                os.environ[name] = value


@contextmanager
def _local_cluster(target: ClusterTarget, distributed: ModuleType) -> Iterator[Any]:
    cluster = distributed.LocalCluster(n_workers=target.local_workers, threads_per_worker=1, processes=True,
                                       dashboard_address=":0", scheduler_kwargs={"dashboard": False},
                                       memory_limit=0, silence_logs=logging.CRITICAL)
    try:
        client = distributed.Client(cluster, set_as_default=False)
        try:
            yield client
        finally:
            client.close()
    finally:
        cluster.close()


@contextmanager
def _connect(target: ClusterTarget, distributed: ModuleType) -> Iterator[Any]:
    if target.address is None:
        with _environ_restored(), _local_cluster(target, distributed) as client:
            yield client
        return
    try:
        client = distributed.Client(target.address, timeout=CONNECT_TIMEOUT_S, set_as_default=False)
    except (OSError, TimeoutError) as exc:
        raise ConfigError(f"--cluster {target}: no Dask scheduler answered within {CONNECT_TIMEOUT_S:.0f} s "
                          f"({type(exc).__name__}); start one with `dask scheduler` on that host and give the "
                          "address it prints") from None
    try:
        try:
            client.wait_for_workers(1, timeout=WORKER_WAIT_S)
        except (OSError, TimeoutError):
            raise ConfigError(f"--cluster {target}: no worker joined the scheduler within {WORKER_WAIT_S:.0f} s; "
                              f"start some with `dask worker {target} --nworkers 1 --nthreads 1`") from None
        yield client
    finally:
        client.close()


@dataclass(slots=True)
class _Job:
    """One submitted attempt of a run."""

    future: Any
    spec: RunSpec
    attempt: int
    tried: tuple[str, ...]  # workers where earlier attempts failed
    workers: tuple[str, ...] = ()  # the workers it may run on (empty: any)


class _ClusterBatch:
    """One plan on one connected client: submission, retries, progress, landing, Ctrl-C."""

    POLL_S = 0.2
    """How often the client looks for finished runs (it sleeps in between, so Ctrl-C is seen at once)."""

    STRANDED_CHECK_S = 5.0
    """How often it looks for retries whose allowed workers have all left the cluster."""

    def __init__(self, client: Any, distributed: ModuleType, plan: Plan, out: Path, *, retries: int,
                 report: _Progress, expected: Mapping[str, str | None], max_run_bytes: int) -> None:
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
        job.future = self.client.submit(_run_task, spec, self.notebooks[spec.notebook], expected=self.expected,
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
    def outcome(future: Any) -> _Shipped:
        """What a finished future holds, as a :class:`_Shipped` even when the task itself failed."""
        try:
            return future.result()
        except Exception as exc:  # the task raised (e.g. distributed's KilledWorker) or was cancelled
            ename = "Cancelled" if future.status == "cancelled" else type(exc).__name__
            text = " ".join(str(exc).split()) or "the Dask task ended without a result"
            return _Shipped(failure=ExecutionFailure(ename=ename, evalue=text), host="", worker="")

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


def run_on_cluster(plan: Plan, out_dir: str | Path, cluster: str | ClusterTarget, *, retries: int = 0,
                   progress: _Progress | None = None,
                   max_run_bytes: int = MAX_RUN_BYTES) -> tuple[RunResult, ...]:
    """Run every run of ``plan`` as a Dask task on ``cluster``; land their files under ``out_dir``.

    Returns the results in plan order (failed runs included, never raised).
    Used by :func:`tokdiag.report.batch.run_batch` (``cluster=...``), which checks the
    plan and the output folder first and writes the index after. Raises
    :class:`ConfigError` when the cluster cannot be reached, has no worker,
    or has a worker whose tokdiag or Python differs from this client's; on
    Ctrl-C writes the index of what finished and re-raises.
    """
    target = cluster if isinstance(cluster, ClusterTarget) else parse_cluster(cluster)
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ConfigError(f"retries must be a whole number >= 0, got {retries!r}")
    if isinstance(max_run_bytes, bool) or not isinstance(max_run_bytes, int) or max_run_bytes < 0:
        raise ConfigError(f"max_run_bytes must be a whole number of bytes >= 0, got {max_run_bytes!r}")
    distributed = _import_distributed()
    report = progress if progress is not None else _Progress(None, len(plan.runs))
    expected = _environment_probe()()
    out = Path(out_dir).resolve()
    with _connect(target, distributed) as client:
        workers = check_workers(client, expected)
        threads = client.nthreads()
        hosts = sorted({str(env["host"]) for env in workers.values()})
        at_once = sum(threads.values())
        report.say(f"tokdiag batch: {_count(len(workers), 'Dask worker')} on {', '.join(hosts)}, "
                   f"{_count(at_once, 'run')} at a time; all have {_describe(expected)}")
        batch = _ClusterBatch(client, distributed, plan, out, retries=retries, report=report, expected=expected,
                              max_run_bytes=max_run_bytes)
        return batch.run()
