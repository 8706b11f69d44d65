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

A kernel on a worker measures what a kernel of the local pool would, and a
run's files come back compressed, up to :data:`MAX_RUN_BYTES` per run: see
:mod:`tokdiag.report.cluster_task`, the side of a cluster batch that runs on
the workers.

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

>>> from tokdiag.report.batch import run_batch
>>> run_batch("plans/default.yaml", "reports", cluster="tcp://scheduler:8786", retries=1).index  # doctest: +SKIP
PosixPath('reports/index.html')
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from tokdiag.errors import ConfigError, did_you_mean
from tokdiag.report.batch import Progress
from tokdiag.report.cluster_batch import ClusterBatch
from tokdiag.report.cluster_task import (
    describe_environment,
    environment_differs,
    environment_probe,
)
from tokdiag.report.plan import Plan
from tokdiag.report.results import RunResult

__all__ = ["MAX_RUN_BYTES", "WORKER_WAIT_S", "ClusterTarget", "check_workers", "parse_cluster", "run_on_cluster"]

MAX_RUN_BYTES = 256 * 2**20
"""The most bytes (before compression) of one run's files sent back to the client.

See "Large run folders" in :mod:`tokdiag.report.cluster_task`."""

WORKER_WAIT_S = 30.0
"""Seconds to wait for a first worker to join an external scheduler before refusing the batch."""

CONNECT_TIMEOUT_S = 10.0
"""Seconds to wait for the scheduler to answer."""


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


def check_workers(client: Any, expected: Mapping[str, str | None] | None = None) -> dict[str, dict[str, str | None]]:
    """Every worker's environment (``{address: {"tokdiag", "python", "implementation", "host"}}``).

    Raises :class:`ConfigError` naming each worker whose tokdiag version or
    Python differs from ``expected`` (default: this process's), or that did
    not answer.
    """
    expected = dict(expected) if expected is not None else environment_probe()()
    found = client.run(environment_probe(), on_error="return")
    bad = []
    for address, env in sorted(found.items()):
        if isinstance(env, BaseException):
            bad.append(f"worker {address} did not answer the check ({type(env).__name__}: {env})")
        elif environment_differs(expected, env):
            bad.append(f"worker {address} on {env.get('host')} has {describe_environment(env)}")
    if bad:
        wanted = expected.get("tokdiag")
        raise ConfigError(f"the Dask workers must run the same tokdiag and Python as this client "
                          f"({describe_environment(expected)}): " + "; ".join(bad) + f"; install tokdiag {wanted} "
                          f"on Python {expected.get('python')} there (pip install 'tokdiag[cluster]=={wanted}') "
                          "or stop those workers")
    return found


# ---------------------------------------------------------------------------
# connecting, and the batch


def _count(n: int, thing: str) -> str:
    return f"{n} {thing}" + ("" if n == 1 else "s")


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


def run_on_cluster(plan: Plan, out_dir: str | Path, cluster: str | ClusterTarget, *, retries: int = 0,
                   progress: Progress | None = None,
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
    report = progress if progress is not None else Progress(None, len(plan.runs))
    expected = environment_probe()()
    out = Path(out_dir).resolve()
    with _connect(target, distributed) as client:
        workers = check_workers(client, expected)
        threads = client.nthreads()
        hosts = sorted({str(env["host"]) for env in workers.values()})
        at_once = sum(threads.values())
        report.say(f"tokdiag batch: {_count(len(workers), 'Dask worker')} on {', '.join(hosts)}, "
                   f"{_count(at_once, 'run')} at a time; all have {describe_environment(expected)}")
        batch = ClusterBatch(client, distributed, plan, out, retries=retries, report=report, expected=expected,
                             max_run_bytes=max_run_bytes)
        return batch.run()
