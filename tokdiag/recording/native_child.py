"""The child process of :func:`tokdiag.recording.native_trace.trace_native`: the steps under memray.

It reads the spec as JSON on stdin, measures the allocator
(:func:`tokdiag.recording.glibc.measure_allocators`), runs the warm-up steps
untraced and the traced steps each in a frame named ``tokdiag_step_<i>``
(:data:`MARKER`), reads the capture and writes the result file. Started as
``python -m tokdiag.recording.native_trace``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tokdiag.errors import TargetError
from tokdiag.recording.factories import build_step

if TYPE_CHECKING:
    pass
from tokdiag.recording.glibc import heap_in_use, measure_allocators
from tokdiag.recording.native_records import Frame

__all__ = ["EXIT_BAD_FACTORY", "EXIT_NO_MEMRAY", "EXIT_WORKLOAD_ERROR", "INSTALL_HINT", "MARKER", "child_main"]

INSTALL_HINT = "pip install 'tokdiag[native]'  (memray 1.20; Linux or macOS)"
MARKER = "tokdiag_step_"
"""Prefix of the code object name of the frame each traced step runs in: ``tokdiag_step_<i>``."""

EXIT_WORKLOAD_ERROR = 2
EXIT_BAD_FACTORY = 3
EXIT_NO_MEMRAY = 4


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


def child_main() -> int:  # pragma: no cover - runs in the child process (covered by tests through subprocess)
    import gc
    import importlib.metadata

    spec = json.loads(sys.stdin.read())
    try:
        import memray
    except ImportError as exc:
        print(f"memray is not importable in {sys.executable} ({exc}); install it: {INSTALL_HINT}", file=sys.stderr)
        return EXIT_NO_MEMRAY
    model = measure_allocators()  # before the workload is imported: no other thread allocates yet
    try:
        step = build_step(spec["factory"], spec["kwargs"])
    except TargetError as exc:
        print(exc, file=sys.stderr)
        return EXIT_BAD_FACTORY
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
            for i, run in zip(range(warmup, warmup + steps), marked, strict=False):
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
            for k, (i, run) in enumerate(zip(range(warmup, warmup + steps), marked, strict=False)):
                resync()
                run(step, i)
                ends[k] = time.perf_counter() - t0
            traced_s, traced_cpu_s = time.perf_counter() - t0, time.process_time() - c0
            gc.collect()  # cyclic garbage of the steps is not left behind by them
            heap_after = heap_in_use()
    except Exception:
        import traceback

        traceback.print_exc()
        return EXIT_WORKLOAD_ERROR
    t0 = time.perf_counter()
    read = _read_capture(capture, spec["native_traces"])
    read_s = time.perf_counter() - t0
    if model is not None and not read["python_allocator"].startswith("pymalloc"):
        model = replace(model, pymalloc_align=None)  # Python objects come from malloc in this interpreter
    result = {**read, "factory": spec["factory"], "kwargs": spec["kwargs"], "warmup": warmup, "steps": steps,
              "paths": _paths(), "allocators": asdict(model) if model else None,
              "python_allocators": spec["python_allocators"], "native_traces": spec["native_traces"],
              "warmup_s": warmup_s, "traced_s": traced_s, "traced_cpu_s": traced_cpu_s, "read_s": read_s,
              "step_ends_s": ends, "pid": os.getpid(),
              "capture_bytes": capture.stat().st_size, "memray": importlib.metadata.version("memray"),
              "heap_growth": None if heap_before is None or heap_after is None else heap_after - heap_before}
    Path(spec["result"]).write_text(json.dumps(result))
    return 0
