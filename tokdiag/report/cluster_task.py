"""The Dask task of a cluster batch: what runs on a worker (see :mod:`tokdiag.report.cluster` for the client).

:func:`run_task` does on a worker exactly what the local batch does on the
client's machine: :func:`tokdiag.report.batch.run_one` starts a fresh kernel
(its own process, a child of the worker) in a scratch folder under the
worker's local directory; the task then sends the run folder's files back to
the client in a :class:`Shipped`. First it checks that the worker runs the
client's tokdiag and Python (:func:`environment_probe`), and that it is not
a second start of a run whose worker died (Dask would repeat it silently).

Measured like the local pool
----------------------------
A kernel on a worker gets the worker's environment minus what Dask's nanny
put there (``distributed.nanny.pre-spawn-environ`` and ``.environ``: by
default ``MALLOC_TRIM_THRESHOLD_=65536``, which makes glibc hand freed memory
back early and so changes RSS, ``OMP/MKL/OPENBLAS_NUM_THREADS=1`` and
``PYTHONHASHSEED=6640``): it measures what a kernel of the local pool would.
A variable you exported yourself with exactly Dask's value is removed too. A
``local:N`` cluster's nannies run in the client's process and write those
variables there as well; they are undone when the cluster closes.

Large run folders
-----------------
A run's files travel back in the task's result, each compressed with zlib
at level 1 (journals are JSON lines: a test journal and one of the suite's
came out 11x and 16x smaller). Up to :data:`tokdiag.report.cluster.MAX_RUN_BYTES`
(256 MiB, counted before compression) per run are sent, smallest files
first; when the folder holds more, the files that do not fit stay on the
worker (in a folder that is then not deleted), the run is failed with
``RunTooLarge`` naming those files, their sizes, the worker and the folder to
copy them from, and whatever fit (the notebook and its HTML, usually) is
written on the client. Pass ``max_run_bytes`` to
:func:`tokdiag.report.cluster.run_on_cluster` for another cap.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from tokdiag.report.batch import run_one
from tokdiag.report.folders import RUN_MARKER
from tokdiag.report.kernel import ExecutionFailure
from tokdiag.report.plan import RunSpec
from tokdiag.report.summary import Summary

__all__ = ["Shipped", "describe_environment", "environment_differs", "environment_probe", "run_task"]


# ---------------------------------------------------------------------------
# the environment every worker must share with the client


def environment_probe() -> Callable[[], dict[str, str | None]]:
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


def describe_environment(env: Mapping[str, str | None]) -> str:
    tokdiag = f"tokdiag {env.get('tokdiag')}" if env.get("tokdiag") else "no importable tokdiag"
    return f"{tokdiag} and Python {env.get('python')} ({env.get('implementation')})"


def environment_differs(expected: Mapping[str, str | None], found: Mapping[str, str | None]) -> bool:
    return any(found.get(k) != expected.get(k) for k in ("tokdiag", "python", "implementation"))


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
class Shipped:
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


def _mib(size: float) -> str:
    return f"{size / 2**20:.1f} MiB"


def run_task(spec: RunSpec, notebook: bytes, *, expected: Mapping[str, str | None], timeout: float | None,
              topic: str, max_run_bytes: int) -> Shipped:
    """The Dask task: run ``spec`` on this worker in a fresh kernel, return its files. Never raises for a failed run."""
    from distributed import get_client, get_worker

    worker = get_worker()
    key = worker.get_current_task()
    here = environment_probe()()
    host = str(here["host"])
    client = get_client()
    earlier = client.get_metadata(key, None)
    if earlier is not None:  # Dask runs a task again when its worker is lost; a memory run must not repeat silently
        return Shipped(failure=ExecutionFailure(
            ename="WorkerLost", evalue=f"the Dask worker {earlier['worker']} on {earlier['host']} died or lost "
                                       "its scheduler while running this run (killed, or out of memory?)"),
            host=str(earlier["host"]), worker=str(earlier["worker"]))
    if environment_differs(expected, here):
        return Shipped(failure=ExecutionFailure(
            ename="EnvironmentMismatch", evalue=f"worker {worker.address} on {host} has "
                                                f"{describe_environment(here)}, the client "
                                                f"{describe_environment(expected)}"), host=host, worker=worker.address)
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
            return Shipped(failure=ExecutionFailure(ename=type(exc).__name__, evalue=str(exc)), host=host,
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

        return Shipped(failure=failure, host=host, worker=worker.address, duration_s=result.duration_s,
                        files=tuple(files), notebook=relative(result.notebook), html=relative(result.html),
                        journals=tuple(r for r in map(relative, result.journals) if r is not None),
                        summary=result.summary)
    finally:
        if not keep:
            shutil.rmtree(scratch, ignore_errors=True)
