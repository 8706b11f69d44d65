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

import functools
import itertools
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tokdiag.errors import ConfigError, TargetError, TokdiagError
from tokdiag.recording.isolated import STDERR_TAIL, build_step, check_factory, spec_json

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["AliveStack", "AllocatorModel", "NativeTrace", "alive_by_site", "trace_native"]

INSTALL_HINT = "pip install 'tokdiag[native]'  (memray 1.20; Linux or macOS)"
MARKER = "tokdiag_step_"
"""Prefix of the code object name of the frame each traced step runs in: ``tokdiag_step_<i>``."""

_EXIT_WORKLOAD_ERROR = 2
_EXIT_BAD_FACTORY = 3
_EXIT_NO_MEMRAY = 4


Frame = tuple[str, str, int]
"""``(function, filename, line)``, as memray reports a Python frame."""


@dataclass(frozen=True)
class AliveStack:
    """Allocations from one stack that were still alive when the capture closed."""

    frames: tuple[Frame, ...]
    """Python frames, innermost first, cut where tokdiag's frames begin (the step frame, or its loop)."""
    step: int | None
    """Index ``i`` of the traced step whose ``step(i)`` made them; None: made outside any step."""
    bytes: int
    """Bytes requested (the allocator's overhead is not included)."""
    blocks: int
    allocator: str
    """memray's allocator of the record: ``MALLOC``, ``PYMALLOC_MALLOC``, ``MMAP``, ..."""
    thread: str = ""
    main_thread: bool = True
    """Made by the thread that ran the steps."""
    own: bool = False
    """Made by tokdiag's own loop around the steps, outside any step: not the workload's."""
    native: tuple[Frame, ...] = ()
    """Native frames, innermost first (with ``native_traces=True`` only)."""


@dataclass(frozen=True)
class AllocatorModel:
    """What one block costs beyond the bytes asked for, measured in the process that ran the workload.

    glibc ``malloc(n)`` takes a chunk of ``max(min_chunk, roundup(n + header,
    align))`` bytes. The child measures chunk sizes before it imports the
    workload (:func:`measure_allocators`: 95 sizes from 1 B to 100 KB, each
    from ``malloc_usable_size`` and the growth of ``mallinfo2().uordblks``)
    and keeps ``header``, ``align`` and ``min_chunk`` only if that formula
    reproduces every one of them: on x86-64 glibc 2.36, 8, 16 and 32, so 8 to
    23 B per block of more than 24 B (~16 B on average; 17.2 B over the
    blocks AWorld's tasks left alive), up to 31 B below. Blocks of ``mmap_threshold`` bytes or
    more are mapped separately and rounded up to pages (glibc's default
    threshold, 128 KiB; not measured: glibc raises it as large blocks are
    freed). Python's small-object allocator (pymalloc) serves requests of up
    to ``pymalloc_max`` bytes from blocks rounded up to ``pymalloc_align``
    (measured as the distance between neighbouring ``bytes`` objects of one
    size: 16), with no header; ``pymalloc_align`` is None when Python
    allocates with ``malloc`` (``PYTHONMALLOC=malloc``, where the glibc
    measure itself is disturbed by Python's own allocations and the model
    comes out None: overhead is then left out).
    """

    header: int
    align: int
    min_chunk: int
    pymalloc_align: int | None
    page: int = 4096
    mmap_threshold: int = 128 * 1024
    pymalloc_max: int = 512

    def overhead(self, size: float, *, python: bool) -> float:
        """Bytes beyond ``size`` that one block of ``size`` bytes costs (``python``: from Python's allocator)."""
        n = max(0, math.ceil(size))
        if python and self.pymalloc_align is not None and n <= self.pymalloc_max:
            a = self.pymalloc_align
            return (max(n, 1) + a - 1) // a * a - size
        if n >= self.mmap_threshold:
            return (n + 2 * self.header + self.page - 1) // self.page * self.page - size
        a = self.align
        return max(self.min_chunk, (n + self.header + a - 1) // a * a) - size


@dataclass(frozen=True)
class NativeTrace:
    """What the child process saw: the surviving stacks and how the run went."""

    factory: str
    kwargs: dict[str, Any]
    warmup: int
    steps: int
    stacks: tuple[AliveStack, ...]
    paths: dict[str, list[str]]
    """The child's ``stdlib``, ``site`` (site-packages) and ``sys_path`` folders, to tell library frames from the user's."""
    allocators: AllocatorModel | None
    """None when the allocator could not be measured (not glibc): overhead is then left out."""
    python_allocators: bool
    native_traces: bool
    warmup_s: float
    traced_s: float
    """Wall time of the ``steps`` traced steps (memray on)."""
    traced_cpu_s: float
    """CPU time of the child process (all its threads) during those steps."""
    read_s: float
    """Time to read the capture and group its surviving allocations."""
    capture_bytes: int
    allocations: int
    """Allocations (and reallocations) the capture recorded."""
    python_allocator: str
    memray: str
    capture: Path | None = None
    """Where the capture file was kept (``capture=``); None when it was deleted."""
    step_ends_s: tuple[float, ...] = ()
    """Seconds from the first traced step's start to the end of each traced step (memray on)."""
    pid: int = 0
    """The child process's id."""
    heap_growth: int | None = None
    """Growth of glibc's heap in use, every arena and mmapped blocks (:func:`heap_in_use`), from the capture's
    opening to its closing, measured in the child; None if not glibc."""



def _run_child(module: str, payload: str, timeout: float | None) -> tuple[int | None, str]:
    """Run ``python -m module`` with ``payload`` on its stdin; its exit code (None: timed out) and stderr."""
    try:
        proc = subprocess.run([sys.executable, "-m", module], input=payload, text=True,
                              capture_output=True, timeout=timeout, check=False)
        return proc.returncode, proc.stderr
    except subprocess.TimeoutExpired as exc:
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        return None, stderr

def _step_frame(step: Any, i: int) -> object:
    return step(i)


def _marked(i: int) -> Any:
    """``_step_frame`` under the code name ``tokdiag_step_<i>``, so a stack says which step it is in."""
    import types

    return types.FunctionType(_step_frame.__code__.replace(co_name=f"{MARKER}{i}"), globals())


class _Switch:
    """What memray's greenlet hook stores the thread id on (the same object in and out: the id stays)."""


def _stack_resync(memray: Any) -> Any:
    """A function that makes memray rebuild its copy of the Python stack from the real frames.

    memray follows the stack from profile events, one frame pushed per call
    and popped per return. On CPython 3.11.7 a coroutine frame can return
    without a call event for its resumption: measured with anyio's
    ``connect_tcp`` (what httpx's async transport opens connections with),
    whose frame is resumed after its task group exits and then returns
    unmatched. Each such return pops a frame that is still running, so memray's
    copy loses frames from the outside in: after one AWorld task the step
    frame and every frame above the event loop were gone, and later steps
    could not be told apart. memray rebuilds its copy from the real frames
    when it sees a greenlet switch; its hook, called with the same object as
    both ends, does that without changing the thread id. Called before each
    step; a frame lost within a step stays lost until the next one. A no-op
    if memray has no such hook.
    """
    hook = getattr(getattr(memray, "_memray", None), "greenlet_trace_function", None)
    if hook is None:
        return lambda: None
    here = _Switch()
    return lambda: hook("switch", (here, here))


# -- the allocator model, measured in the child ---------------------------------------------------------


def _mode_of_gaps(addresses: list[int]) -> int:
    """The most common distance between neighbouring addresses: the block size, where blocks were carved in a row."""
    ordered = sorted(addresses)
    gaps = Counter(b - a for a, b in itertools.pairwise(ordered) if b > a)
    return gaps.most_common(1)[0][0] if gaps else 0


_MALLINFO_FIELDS = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                    "keepcost")
_MEASURED_SIZES = (*range(1, 65), *range(65, 1100, 37), 4000, 65_536, 100_000)


@dataclass(frozen=True)
class _Glibc:
    """glibc's allocator functions through ctypes, typed."""

    malloc: Any
    free: Any
    usable_size: Any
    mallinfo: Any
    """``mallinfo2`` (glibc >= 2.33), else ``mallinfo`` (int fields: enough for differences below 2 GiB)."""


@functools.cache
def _glibc() -> _Glibc | None:
    """glibc's ``malloc``, ``free``, ``malloc_usable_size`` and ``mallinfo2`` through ctypes; None if not glibc."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        libc.gnu_get_libc_version  # noqa: B018 - glibc only: the chunk layout modelled here is glibc's
        usable = libc.malloc_usable_size
    except (OSError, AttributeError):
        return None
    try:
        info = libc.mallinfo2
        field_type: Any = ctypes.c_size_t
    except AttributeError:
        info = libc.mallinfo
        field_type = ctypes.c_int

    class Mallinfo(ctypes.Structure):
        _fields_ = [(name, field_type) for name in _MALLINFO_FIELDS]

    info.restype, info.argtypes = Mallinfo, []
    usable.restype, usable.argtypes = ctypes.c_size_t, [ctypes.c_void_p]
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    return _Glibc(malloc=libc.malloc, free=libc.free, usable_size=usable, mallinfo=info)


def heap_in_use() -> int | None:
    """Bytes glibc has handed out in every arena (``uordblks``) plus its mmapped blocks (``hblkhd``); None if not glibc.

    ``mallinfo2`` walks the free lists of every arena (a thread's blocks are
    in it: 10,031,824 B more while a thread held 1,000 blocks of 10 KB), so
    it is slower on a fragmented heap.
    """
    from tokdiag.probes.allocator import read_glibc  # the allocator probe's own reading: one binding of mallinfo2

    heap = read_glibc()
    return None if heap is None else heap.in_use


def _glibc_chunks() -> dict[int, int] | None:
    """Bytes of glibc's heap that one ``malloc(n)`` takes, for each n in ``_MEASURED_SIZES``; None if not glibc.

    Two measures, each the smallest of several (something else allocating
    in between, or a free chunk handed out whole, only ever adds bytes):
    ``malloc_usable_size`` of 64 blocks of n bytes (what the block holds),
    and the growth of ``mallinfo2().uordblks`` (bytes in use in the main
    arena, chunk headers included) per block over batches of 16. Their
    difference, the chunk header, is the most common one over all sizes;
    the chunk size is the usable size plus that header.
    """
    libc = _glibc()
    if libc is None:
        return None
    info, usable, malloc, free = libc.mallinfo, libc.usable_size, libc.malloc, libc.free
    batch, batches = 16, 4
    kept = [0] * (batch * batches * len(_MEASURED_SIZES))  # allocated first: no list growth below
    j = 0
    holds: dict[int, int] = {}
    costs: dict[int, float] = {}
    try:
        for n in _MEASURED_SIZES:
            cost = math.inf
            for _ in range(batches):
                before = info().uordblks
                for _ in range(batch):
                    kept[j] = malloc(n)
                    j += 1
                cost = min(cost, (info().uordblks - before) / batch)
            holds[n] = min(usable(p) for p in kept[j - batch * batches:j])
            costs[n] = cost
    finally:
        for ptr in kept[:j]:
            free(ptr)
    diffs = Counter(c - holds[n] for n, c in costs.items() if c == int(c))
    if not diffs:
        return None
    header = int(diffs.most_common(1)[0][0])
    return {n: h + header for n, h in holds.items()}


def measure_allocators() -> AllocatorModel | None:
    """Measure glibc's chunk sizes and pymalloc's block sizes in this process (0.08 s here); None if not glibc.

    Python's allocator is taken to be pymalloc unless ``PYTHONMALLOC`` says
    otherwise (the child corrects it from memray's capture metadata).
    """
    chunks = _glibc_chunks()
    if not chunks:
        return None
    small = {n: c for n, c in chunks.items() if n < 65_536}  # fitted on these; all of them must fit
    min_chunk = small[1]
    align = math.gcd(*small.values())
    header = min((c - n for n, c in small.items() if c > min_chunk), default=0)
    model_ok = align > 1 and header > 0 and all(
        c == max(min_chunk, (n + header + align - 1) // align * align) for n, c in chunks.items())
    if not model_ok:  # not the chunk layout modelled here: leave overhead out rather than guess
        return None
    pymalloc_align = None
    if not os.environ.get("PYTHONMALLOC", "pymalloc").startswith("malloc"):
        gaps = []
        for n in (40, 100, 200, 300, 500):  # object sizes: sys.getsizeof(b"") + len
            objs = [bytes(n - sys.getsizeof(b"")) for _ in range(64)]
            gaps.append(_mode_of_gaps([id(o) for o in objs]))
            del objs
        pymalloc_align = math.gcd(*gaps) or None
    return AllocatorModel(header=header, align=align, min_chunk=min_chunk, pymalloc_align=pymalloc_align,
                          page=os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096)


def _paths() -> dict[str, list[str]]:
    import site
    import sysconfig

    sp = sysconfig.get_paths()
    sites = [*site.getsitepackages(), sp.get("purelib", ""), sp.get("platlib", "")]
    user = site.getusersitepackages()
    if isinstance(user, str):
        sites.append(user)

    def norm(paths: Any) -> list[str]:
        return sorted({os.path.abspath(p) for p in paths if p}, key=len, reverse=True)

    return {"stdlib": norm([sp.get("stdlib", ""), sp.get("platstdlib", "")]), "site": norm(sites),
            "sys_path": norm(p or os.getcwd() for p in sys.path)}


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
        returncode, stderr = _run_child("tokdiag.recording.native_trace", payload, timeout)
        if returncode == _EXIT_BAD_FACTORY:
            raise TargetError(stderr.strip())
        if returncode == _EXIT_NO_MEMRAY:
            raise TokdiagError(stderr.strip())
        if returncode != 0 or not result_path.exists():
            how = (f"timed out after {timeout} s" if returncode is None else
                   "raised" if returncode == _EXIT_WORKLOAD_ERROR else f"ended with exit code {returncode}")
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
                         [Record("native_trace", r.subject, r.metric, float(r.value), r.unit) for r in rows.itertuples()])
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


# -- the child --------------------------------------------------------------------------------------------


def _read_capture(path: Path, native: bool) -> dict[str, Any]:
    """The capture's allocations still alive at its end, as JSON-ready stacks cut at the step frames."""
    import memray

    index: dict[Frame, int] = {}
    frames: list[Frame] = []

    def ids(stack: list[Frame]) -> list[int]:
        out = []
        for f in stack:
            key = (str(f[0]), str(f[1]), int(f[2]))
            k = index.get(key)
            if k is None:
                k = index[key] = len(frames)
                frames.append(key)
            out.append(k)
        return out

    here = os.path.abspath(__file__)
    stacks = []
    with memray.FileReader(path) as reader:
        meta = reader.metadata
        for rec in reader.get_leaked_allocation_records(merge_threads=False):
            stack = rec.stack_trace()
            step, own = None, False
            for depth, (func, filename, _line) in enumerate(stack):
                if filename == here or os.path.abspath(filename) == here:  # a step frame, or tokdiag's own loop
                    if func.startswith(MARKER):
                        step = int(func[len(MARKER):])
                    own = depth == 0 and step is None  # allocated by the loop itself, not by what it called
                    stack = stack[:depth]
                    break
            row: dict[str, Any] = {"frames": ids(stack), "step": step, "own": own, "bytes": rec.size,
                                   "blocks": rec.n_allocations, "allocator": memray.AllocatorType(rec.allocator).name,
                                   "thread": rec.thread_name, "main": rec.tid == meta.main_thread_id}
            if native:
                row["native"] = ids(rec.native_stack_trace(max_stacks=16))
            stacks.append(row)
    return {"frames": frames, "stacks": stacks, "allocations": meta.total_allocations,
            "python_allocator": meta.python_allocator}


def _child() -> int:  # pragma: no cover - runs in the child process (covered by tests through subprocess)
    import gc
    import importlib.metadata

    spec = json.loads(sys.stdin.read())
    try:
        import memray
    except ImportError as exc:
        print(f"memray is not importable in {sys.executable} ({exc}); install it: {INSTALL_HINT}", file=sys.stderr)
        return _EXIT_NO_MEMRAY
    model = measure_allocators()  # before the workload is imported: no other thread allocates yet
    try:
        step = build_step(spec["factory"], spec["kwargs"])
    except TargetError as exc:
        print(exc, file=sys.stderr)
        return _EXIT_BAD_FACTORY
    warmup, steps = spec["warmup"], spec["steps"]
    capture = Path(spec["capture"])
    try:
        t0 = time.perf_counter()
        for i in range(warmup):
            step(i)
        warmup_s = time.perf_counter() - t0
        marked = [_marked(i) for i in range(warmup, warmup + steps)]  # made before the capture opens
        resync = _stack_resync(memray)
        gc.collect()
        if not spec["trace"]:  # the same steps without memray: the baseline of bench/native_trace.py
            t0, c0 = time.perf_counter(), time.process_time()
            for i, run in zip(range(warmup, warmup + steps), marked):
                run(step, i)
            Path(spec["result"]).write_text(json.dumps({"warmup_s": warmup_s, "traced_s": time.perf_counter() - t0,
                                                        "traced_cpu_s": time.process_time() - c0}))
            return 0
        with memray.Tracker(capture, native_traces=spec["native_traces"],
                            trace_python_allocators=spec["python_allocators"],
                            file_format=memray.FileFormat.ALL_ALLOCATIONS):
            heap_before = heap_in_use()  # memray's own buffers are allocated by now (and ctypes' were, by the
            # allocator measure above)
            ends = [0.0] * steps
            t0, c0 = time.perf_counter(), time.process_time()
            for k, (i, run) in enumerate(zip(range(warmup, warmup + steps), marked)):
                resync()
                run(step, i)
                ends[k] = time.perf_counter() - t0
            traced_s, traced_cpu_s = time.perf_counter() - t0, time.process_time() - c0
            gc.collect()  # cyclic garbage of the steps is not left behind by them
            heap_after = heap_in_use()
    except Exception:
        import traceback

        traceback.print_exc()
        return _EXIT_WORKLOAD_ERROR
    t0 = time.perf_counter()
    read = _read_capture(capture, spec["native_traces"])
    read_s = time.perf_counter() - t0
    if model is not None and not read["python_allocator"].startswith("pymalloc"):
        model = replace(model, pymalloc_align=None)  # Python objects come from malloc in this interpreter
    result = {**read, "factory": spec["factory"], "kwargs": spec["kwargs"], "warmup": warmup, "steps": steps,
              "paths": _paths(), "allocators": asdict(model) if model else None,
              "python_allocators": spec["python_allocators"], "native_traces": spec["native_traces"],
              "warmup_s": warmup_s, "traced_s": traced_s, "traced_cpu_s": traced_cpu_s, "read_s": read_s, "step_ends_s": ends, "pid": os.getpid(),
              "capture_bytes": capture.stat().st_size, "memray": importlib.metadata.version("memray"),
              "heap_growth": None if heap_before is None or heap_after is None else heap_after - heap_before}
    Path(spec["result"]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(_child())
