"""What a run under memray returns: the stacks still alive, the allocator model, the trace as a whole.

Plain frozen dataclasses, filled by :func:`tokdiag.recording.native_trace.trace_native`
and read by :mod:`tokdiag.analysis.attribution`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    pass

__all__ = ["AliveStack", "AllocatorModel", "Frame", "NativeTrace"]


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
    workload (:func:`~tokdiag.recording.glibc.measure_allocators`: 95 sizes from 1 B to 100 KB, each
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
    """The child's ``stdlib``, ``site`` (site-packages) and ``sys_path`` folders, to tell library frames from the
    user's."""
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
    """Growth of glibc's heap in use, every arena and mmapped blocks
    (:func:`~tokdiag.recording.glibc.heap_in_use`), from the capture's opening
    to its closing, measured in the child; None if not glibc."""
