"""Which allocations outlive the steps, and who made them: a workload run under memray.

RSS says *how much* a process grows; it does not say *who* holds the bytes,
and for memory outside Python's objects (OpenSSL's parsed CA store inside an
``ssl.SSLContext``, a C extension's buffers, ``libc.malloc`` through ctypes)
no Python-level probe can say either. `memray <https://bloomberg.github.io/memray/>`_
can: it intercepts every ``malloc``/``free`` (and, here, every allocation of
Python's own allocator) and records the Python stack that made it.

:func:`alive_by_site` runs ``factory(**kwargs)`` in a child process (the
conventions of :func:`tokdiag.recording.isolated.track_isolated`: a
``"package.module:function"`` returning ``step(i)``, kwargs as JSON), runs
``warmup`` steps untraced, opens a :class:`memray.Tracker` (all allocations,
Python stacks only unless ``native_traces=True``), runs ``steps`` steps,
collects garbage and closes the capture. What was allocated while the
capture was open and is still allocated when it closes is what the steps
left behind; :func:`tokdiag.analysis.attribution.by_site` groups it by the
deepest library frame that allocated it, under the user's frame that called
into the library, and divides by ``steps``::

    from tokdiag.recording.native_trace import alive_by_site
    table = alive_by_site("tokdiag_workloads.aworld:agent_step", steps=25, warmup=3)
    table[["site", "owner", "bytes_per_step", "steps"]].head()

A run under memray is **not** an RSS measurement, and nothing here claims to
be one: memray slows the workload down (on the AWorld case 2.8x the CPU
time with Python's allocator traced, 2.2x without: ``bench/native_trace.py``)
and its own buffers live in the same process, so the child's RSS is not
reported.
What is reported is the bytes the workload's allocations still hold (the
size asked for, plus the allocator's per-block overhead, measured in the
child: see :class:`AllocatorModel`), which a separate RSS run
(:func:`~tokdiag.recording.isolated.track_isolated`) can be compared with.
Journal records say so in their names: probe ``native_trace``, metrics
``survivor_bytes`` and ``survivor_blocks``, never ``rss``.

Each step runs inside a frame whose code object is named
``tokdiag_step_<i>``, so every allocation's stack says which step made it;
the frames of tokdiag's own loop (outside that frame) are cut off.
Allocations made outside any step (a thread started before the capture, a
server thread handling a request) keep their whole stack and have no step.

What it cannot see: memory the allocator keeps after a ``free`` (freed is
freed here; the allocator probe and RSS see the rest), pages a library maps
without ``malloc``/``mmap`` interposition, and growth that happens during the
warm-up. A bounded cache that evicts shows its last entries as survivors of
the last steps. The capture file can be kept (``capture=path``) and opened
with memray's own reporters, e.g. ``memray flamegraph --leaks path``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tokdiag.errors import ConfigError, TargetError, TokdiagError
from tokdiag.recording.factories import check_factory, spec_json
from tokdiag.recording.glibc import measure_allocators
from tokdiag.recording.isolated import STDERR_TAIL
from tokdiag.recording.native_child import (
    EXIT_BAD_FACTORY,
    EXIT_NO_MEMRAY,
    EXIT_WORKLOAD_ERROR,
    child_main,
)
from tokdiag.recording.native_records import AliveStack, AllocatorModel, NativeTrace

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["AliveStack", "AllocatorModel", "NativeTrace", "alive_by_site", "measure_allocators", "run_child",
           "trace_native"]


def run_child(module: str, payload: str, timeout: float | None) -> tuple[int | None, str]:
    """Run ``python -m module`` with ``payload`` on its stdin; its exit code (None: timed out) and stderr."""
    try:
        proc = subprocess.run([sys.executable, "-m", module], input=payload, text=True,
                              capture_output=True, timeout=timeout, check=False)
        return proc.returncode, proc.stderr
    except subprocess.TimeoutExpired as exc:
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        return None, stderr


# -- the parent -------------------------------------------------------------------------------------------


def _check_count(name: str, value: object, minimum: int) -> int:
    if type(value) is not int or value < minimum:
        raise ConfigError(f"{name}={value!r}: expected an int >= {minimum}")
    return value


def trace_native(
    factory: str,
    kwargs: Mapping[str, Any] | None = None,
    *,
    steps: int = 25,
    warmup: int = 3,
    python_allocators: bool = True,
    native_traces: bool = False,
    capture: str | os.PathLike[str] | None = None,
    timeout: float | None = None,
) -> NativeTrace:
    """Run ``factory(**kwargs)`` in a child process under memray and return what its steps left alive.

    ``warmup`` steps run untraced first, then ``steps`` traced ones (see the
    module docstring). ``python_allocators`` traces every allocation of
    Python's own allocator (each object where it is made; without it memray
    sees only pymalloc's 1 MiB arenas, charged to whichever stack needed a new
    one; off, the run is faster and the capture smaller). ``native_traces``
    also records C stacks (slower; symbols need debug info to read well).
    ``capture`` keeps the capture file at that path (it must not exist);
    otherwise it is deleted once read. ``timeout`` (seconds) kills the child.

    Raises :class:`ConfigError` for bad arguments, :class:`TargetError` for a
    factory that does not resolve, :class:`TokdiagError` when memray is not
    installed or the workload raised (with the child's traceback).
    """
    check_factory(factory)
    _check_count("steps", steps, 1)
    _check_count("warmup", warmup, 0)
    for name, flag in (("python_allocators", python_allocators), ("native_traces", native_traces)):
        if type(flag) is not bool:
            raise ConfigError(f"{name}={flag!r}: expected True or False")
    if capture is not None and Path(capture).exists():
        raise ConfigError(f"capture={str(capture)!r} already exists; memray will not overwrite it: delete it or "
                          "pass a new path (or capture=None to read the capture and delete it)")
    with tempfile.TemporaryDirectory(prefix="tokdiag-memray-") as tmp:
        keep = capture is not None
        capture_path = Path(capture) if capture is not None else Path(tmp) / "capture.bin"
        if keep:
            capture_path.parent.mkdir(parents=True, exist_ok=True)
        result_path = Path(tmp) / "result.json"
        spec = {"factory": factory, "kwargs": dict(kwargs or {}), "steps": steps, "warmup": warmup,
                "python_allocators": python_allocators, "native_traces": native_traces,
                "capture": str(capture_path), "result": str(result_path), "trace": True}
        payload = spec_json(spec, "trace_native: kwargs must be JSON values")
        returncode, stderr = run_child("tokdiag.recording.native_trace", payload, timeout)
        if returncode == EXIT_BAD_FACTORY:
            raise TargetError(stderr.strip())
        if returncode == EXIT_NO_MEMRAY:
            raise TokdiagError(stderr.strip())
        if returncode != 0 or not result_path.exists():
            how = (f"timed out after {timeout} s" if returncode is None else
                   "raised" if returncode == EXIT_WORKLOAD_ERROR else f"ended with exit code {returncode}")
            raise TokdiagError(f"trace_native({factory!r}): the child process {how}; its stderr ends with:\n"
                               f"{stderr[-STDERR_TAIL:].strip() or '(empty)'}")
        data = json.loads(result_path.read_text())
    return _trace_from_json(data, capture_path if keep else None)


def _trace_from_json(data: dict[str, Any], capture: Path | None) -> NativeTrace:
    frames = [tuple(f) for f in data["frames"]]
    stacks = tuple(
        AliveStack(frames=tuple(frames[k] for k in s["frames"]), step=s["step"], bytes=s["bytes"],
                   blocks=s["blocks"], allocator=s["allocator"], thread=s["thread"], main_thread=s["main"],
                   own=s["own"],
                   native=tuple(frames[k] for k in s.get("native", ())))
        for s in data["stacks"])
    model = AllocatorModel(**data["allocators"]) if data["allocators"] else None
    return NativeTrace(
        factory=data["factory"], kwargs=data["kwargs"], warmup=data["warmup"], steps=data["steps"], stacks=stacks,
        paths=data["paths"], allocators=model, python_allocators=data["python_allocators"],
        native_traces=data["native_traces"], warmup_s=data["warmup_s"], traced_s=data["traced_s"],
        traced_cpu_s=data["traced_cpu_s"],
        read_s=data["read_s"], capture_bytes=data["capture_bytes"], allocations=data["allocations"],
        python_allocator=data["python_allocator"], memray=data["memray"], capture=capture,
        heap_growth=data["heap_growth"], step_ends_s=tuple(data["step_ends_s"]), pid=data["pid"])


def alive_by_site(
    factory: str,
    kwargs: Mapping[str, Any] | None = None,
    *,
    steps: int = 25,
    warmup: int = 3,
    python_allocators: bool = True,
    native_traces: bool = False,
    capture: str | os.PathLike[str] | None = None,
    journal: str | os.PathLike[str] | None = None,
    timeout: float | None = None,
) -> pd.DataFrame:
    """Bytes the workload's steps left alive, per step, by allocation site: a table, one row per site.

    Runs :func:`trace_native` (arguments as there) and groups its survivors
    with :func:`tokdiag.analysis.attribution.by_site`: the columns are
    explained there; ``bytes_per_step`` is what a site adds per step,
    allocator overhead included. The run's figures (wall time, capture size,
    read time, allocator overhead per block) are in ``table.attrs``.

    ``journal`` also writes the table's sites as a journal, overwritten if
    it exists (:func:`tokdiag.load` reads it): probe ``native_trace``, one
    subject per site (``"<site> <- <owner>"``, the 20 largest, the rest as
    ``"(other sites)"``, and ``"(all sites)"``), metrics ``survivor_bytes``
    and ``survivor_blocks`` at each step: of the allocations made by the
    steps up to that one, those still alive when the capture closed (see
    :func:`tokdiag.analysis.attribution.survivors_by_step`); ``elapsed_s``
    counts from the capture's opening. Not RSS: no ``process`` rows.

    Example (a step that calls ``libc.strdup`` on 64 KiB through ctypes in
    ``copy_text`` and never frees the copy)::

        table = alive_by_site("myapp.leaks:make_step", steps=10, warmup=2)
        table.iloc[0][["site", "bytes_per_step", "steps"]]   # myapp.leaks.copy_text, 65552.0, 10
    """
    from tokdiag.analysis.attribution import by_site, survivors_by_step

    trace = trace_native(factory, kwargs, steps=steps, warmup=warmup, python_allocators=python_allocators,
                         native_traces=native_traces, capture=capture, timeout=timeout)
    table = by_site(trace)
    table.attrs.update(_meta(trace))
    if journal is not None:
        _write_journal(journal, trace, survivors_by_step(trace))
    return table


def _write_journal(path: str | os.PathLike[str], trace: NativeTrace, long: pd.DataFrame) -> None:
    from tokdiag.recording.journal import JournalWriter, make_header
    from tokdiag.records import Record

    params = {"factory": trace.factory, "kwargs": trace.kwargs, "warmup": trace.warmup, "steps": trace.steps,
              "measurement": "memray: bytes allocated by each step and still alive when the capture closed, "
                             "with allocator overhead; not RSS",
              "python_allocators": trace.python_allocators, "native_traces": trace.native_traces}
    header = make_header(f"native_trace {trace.factory}", params)
    header["pid"] = trace.pid  # the child's, which ran the steps
    elapsed = {trace.warmup + k + 1: t for k, t in enumerate(trace.step_ends_s)}  # seconds since the capture opened
    with JournalWriter(path, header, overwrite=True) as out:
        for step, rows in long.groupby("step", sort=True):
            out.snapshot(int(step), elapsed.get(int(step), 0.0),
                         [Record("native_trace", r.subject, r.metric, float(r.value), r.unit)
                          for r in rows.itertuples()])
        out.event("native_trace", values=_meta(trace))
        out.write({"kind": "end", "reason": "completed", "step": trace.warmup + trace.steps,
                   "elapsed_s": round(trace.traced_s, 6), "message": ""})


def _meta(trace: NativeTrace) -> dict[str, Any]:
    """The run's own figures, for ``table.attrs`` and the journal's event line."""
    return {"factory": trace.factory, "warmup": trace.warmup, "steps": trace.steps,
            "warmup_s": trace.warmup_s, "traced_s": trace.traced_s, "traced_cpu_s": trace.traced_cpu_s,
            "read_s": trace.read_s,
            "capture_bytes": trace.capture_bytes, "allocations": trace.allocations,
            "python_allocators": trace.python_allocators, "native_traces": trace.native_traces,
            "python_allocator": trace.python_allocator, "memray": trace.memray,
            "allocator_model": asdict(trace.allocators) if trace.allocators else None,
            "capture": str(trace.capture) if trace.capture else None}


if __name__ == "__main__":  # pragma: no cover
    sys.exit(child_main())
