"""Group what a workload left alive under memray by the library frame that allocated it.

Input: a :class:`~tokdiag.recording.native_trace.NativeTrace`, the allocations
made during ``steps`` traced steps and still alive when the capture closed,
each with its Python stack (see :mod:`tokdiag.recording.native_trace`).
Output: one row per *site*, largest first.

Sites and owners
----------------
Each stack frame is put in one of three kinds by where its file is, in the
process that ran the workload: ``stdlib`` (Python's own library, frozen
modules included), ``library`` (site-packages) or ``user`` (anything else:
the project, scripts, notebooks). Reading a stack from the allocation
outwards:

- the **site** is the innermost frame, named ``module.function``
  (``ssl.create_default_context``). When it is a library or stdlib frame,
  the allocation was made inside a library and the site says where;
  when it is a user frame, the user's code allocated directly (a
  ``bytearray``, a ctypes ``malloc``) and the site is that function;
- the **owner** is the innermost *user* frame, ``module.function:line``:
  the line of the user's code that called into the libraries. If the stack
  has no user frame (every frame in libraries), its outermost frame stands
  in; if it has no Python frame at all (a thread started before the capture
  opened), the owner is ``thread <name>`` and the site ``<no Python stack>``,
  and what the call of ``step(i)`` itself allocated is ``<the call of step(i)>``;
- the **stack** is a summary from the site outwards: one
  ``module.function`` per run of frames in the same top-level package, up
  to the owner (``ssl.create_default_context < httpx._config.create_ssl_context
  < aworld.models.openai_provider._build_httpx_client < ... <
  tokdiag.workloads.aworld.__call__``), with the middle elided past 8 entries.

Rows group stacks by (site, owner). ``bytes`` is what the allocations asked
for; ``overhead_bytes`` what the allocator spends on them beyond that
(estimated per record from its mean block size with the
:class:`~tokdiag.recording.native_trace.AllocatorModel` measured in the child:
~16 B per glibc block, ~8 B per pymalloc block); ``bytes_per_step`` is
``(bytes + overhead_bytes) / steps``: what the site adds per step. ``steps``
counts the traced steps whose own allocations at this site survived (of
``steps`` in all): every step for a leak, one for a one-off, the last few
for a bounded cache that evicts; 0 for allocations made outside any step.

These are bytes still allocated, not resident pages: compare
``bytes_per_step`` with the RSS growth per step of a run without memray.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

if TYPE_CHECKING:
    from tokdiag.recording.native_trace import AliveStack, AllocatorModel, NativeTrace

__all__ = ["SITE_COLUMNS", "UNSEEN", "FrameClassifier", "by_site", "survivors_by_step", "unseen_bytes"]

SITE_COLUMNS: tuple[str, ...] = ("site", "kind", "library_frame", "owner", "stack_summary", "bytes", "overhead_bytes",
                                 "allocations", "steps", "bytes_per_step", "share", "subject")
"""Columns of :func:`by_site`, in order (plus ``native`` with ``native_traces=True``)."""

NO_STACK = "<no Python stack>"
STEP_CALL = "<the call of step(i)>"
UNSEEN = "(not seen by memray)"
_NOT_MALLOC = frozenset({"MMAP", "MUNMAP", "FREE", "PYMALLOC_FREE"})
OTHER_SITES = "(other sites)"
ALL_SITES = "(all sites)"
_MAX_STACK_ENTRIES = 8
_UNSEEN_STACK = "glibc heap growth during the capture minus the blocks memray saw there (see unseen_bytes)"


def _module_of(relative: str) -> str:
    """``"httpx/_config.py"`` -> ``"httpx._config"``; ``"pkg/__init__.py"`` -> ``"pkg"``."""
    parts = relative.replace(os.sep, "/").split("/")
    last = parts[-1]
    if last == "__init__.py":
        parts = parts[:-1]
    elif "." in last:
        parts[-1] = last.split(".", 1)[0]
    return ".".join(p for p in parts if p)


@dataclass
class FrameClassifier:
    """Tell stdlib, library and user frames apart by the folders of the process that ran them.

    >>> c = FrameClassifier(stdlib=["/py/lib/python3.11"], site=["/py/lib/python3.11/site-packages"],
    ...                     sys_path=["/home/me/app"])
    >>> c.classify("/py/lib/python3.11/site-packages/httpx/_config.py")
    ('httpx._config', 'library')
    >>> c.classify("/py/lib/python3.11/ssl.py"), c.classify("<frozen importlib._bootstrap>")
    (('ssl', 'stdlib'), ('importlib._bootstrap', 'stdlib'))
    >>> c.classify("/home/me/app/jobs/run.py")
    ('jobs.run', 'user')
    """

    stdlib: Sequence[str]
    site: Sequence[str]
    sys_path: Sequence[str] = ()
    _cache: dict[str, tuple[str, str]] = field(default_factory=dict, repr=False)

    def classify(self, filename: str) -> tuple[str, str]:
        """``(module, kind)`` of a frame's file, kind one of ``stdlib``, ``library``, ``user``."""
        hit = self._cache.get(filename)
        if hit is None:
            hit = self._cache[filename] = self._classify(filename)
        return hit

    def _classify(self, filename: str) -> tuple[str, str]:
        if filename.startswith("<frozen ") and filename.endswith(">"):
            return filename[len("<frozen "):-1], "stdlib"
        if filename.startswith("<"):
            return filename, "user"
        path = os.path.abspath(filename)
        for kind, roots in (("library", self.site), ("stdlib", self.stdlib), ("user", self.sys_path)):
            # site-packages first: it often sits inside the stdlib folder; the longest root wins
            for root in sorted(roots, key=len, reverse=True):
                if path.startswith(root.rstrip(os.sep) + os.sep):
                    return _module_of(path[len(root.rstrip(os.sep)) + 1:]), kind
        return _module_of(os.path.basename(path)), "user"


@dataclass
class _Group:
    site: str
    kind: str
    owner: str
    bytes: float = 0.0
    overhead: float = 0.0
    blocks: int = 0
    steps: set[int] = field(default_factory=set)
    stacks: dict[tuple[str, str, str], float] = field(default_factory=lambda: defaultdict(float))
    """(library frame, stack summary, native summary) -> bytes, to show the heaviest."""


def _stack_summary(labels: list[tuple[str, str]]) -> str:
    """One ``module.function`` per run of frames in one top-level package, innermost first."""
    entries: list[str] = []
    last_top = None
    for module, label in labels:
        top = module.split(".", 1)[0]
        if top != last_top:
            entries.append(label)
            last_top = top
    if len(entries) > _MAX_STACK_ENTRIES:
        half = _MAX_STACK_ENTRIES // 2
        entries = entries[:half] + ["..."] + entries[-half:]
    return " < ".join(entries)


def _native_summary(native: Sequence[tuple[str, str, int]]) -> str:
    shown = [f"{func} ({os.path.basename(filename)})" for func, filename, _line in native
             if func and not func.startswith(("malloc", "calloc", "realloc", "memray::", "_PyMem", "PyMem_",
                                              "_PyObject_Malloc", "PyObject_Malloc"))]
    return " < ".join(shown[:4])


def _overhead(stack: AliveStack, model: AllocatorModel | None) -> float:
    if model is None or stack.blocks <= 0:
        return 0.0
    if stack.allocator == "MMAP":  # mapped by the caller itself (pymalloc's arenas): whole pages, no header
        mean = math.ceil(stack.bytes / stack.blocks)
        return stack.blocks * ((mean + model.page - 1) // model.page * model.page) - stack.bytes
    python = stack.allocator.startswith("PYMALLOC")
    return stack.blocks * model.overhead(stack.bytes / stack.blocks, python=python)


def _in_glibc_heap(stack: AliveStack, model: AllocatorModel | None) -> bool:
    """Whether ``heap_in_use`` counts these blocks: glibc's, of any thread (not pymalloc's, not mapped directly)."""
    if model is None or stack.allocator in _NOT_MALLOC or stack.blocks <= 0:
        return False
    mean = stack.bytes / stack.blocks
    if stack.allocator.startswith("PYMALLOC") and model.pymalloc_align is not None and mean <= model.pymalloc_max:
        return False  # in pymalloc's arenas, which it maps itself
    return True


def unseen_bytes(trace: NativeTrace) -> float | None:
    """glibc heap growth during the capture that memray's surviving blocks do not account for; None if not measured.

    ``trace.heap_growth`` (glibc's heap in use, every arena and mmapped
    blocks, from the capture's opening to its closing) minus the surviving
    blocks that live there, overhead included. What memray cannot see
    ends up here: a ``malloc`` called through a function pointer taken
    with ``dlsym`` (ctypes' ``libc.malloc``) bypasses the hooks memray
    patches into each library's symbol table. It is an estimate: blocks
    allocated before the capture and freed during it lower it; blocks in
    glibc's per-thread caches and memray's own bookkeeping raise it.
    """
    if trace.heap_growth is None or trace.allocators is None:
        return None
    seen = sum(s.bytes + _overhead(s, trace.allocators) for s in trace.stacks if _in_glibc_heap(s, trace.allocators))
    return trace.heap_growth - seen


def _site_and_owner(stack: AliveStack, classifier: FrameClassifier) -> tuple[str, str, str, str, str]:
    """``(site, kind, library_frame, owner, stack summary)`` of one stack."""
    if not stack.frames:
        if stack.step is not None:  # allocated by the call into the step function itself (its frame, its arguments)
            return STEP_CALL, "unknown", "", STEP_CALL, ""
        thread = "main thread" if stack.main_thread else f"thread {stack.thread or '?'}"
        return NO_STACK, "unknown", "", thread, ""
    labels = []
    owner = None
    for func, filename, line in stack.frames:
        module, kind = classifier.classify(filename)
        labels.append((module, f"{module}.{func}"))
        if kind == "user" and owner is None:
            owner = f"{module}.{func}:{line}"
            break
    if owner is None:  # all in libraries: the outermost frame the stack has stands in for the user's
        func, _filename, line = stack.frames[-1]
        owner = f"{labels[-1][1]}:{line}"
    func, filename, line = stack.frames[0]
    module, kind = classifier.classify(filename)
    library_frame = f"{os.path.basename(filename)}:{line}" if kind != "user" else ""
    return f"{module}.{func}", kind, library_frame, owner, _stack_summary(labels)


def _groups(trace: NativeTrace) -> tuple[dict[tuple[str, str], _Group], dict[tuple[str, str], dict[int, list[float]]]]:
    classifier = FrameClassifier(trace.paths.get("stdlib", ()), trace.paths.get("site", ()),
                                 trace.paths.get("sys_path", ()))
    groups: dict[tuple[str, str], _Group] = {}
    per_step: dict[tuple[str, str], dict[int, list[float]]] = defaultdict(lambda: defaultdict(lambda: [0.0, 0.0]))
    for stack in trace.stacks:
        if stack.own:
            continue
        site, kind, library_frame, owner, summary = _site_and_owner(stack, classifier)
        g = groups.get((site, owner))
        if g is None:
            g = groups[(site, owner)] = _Group(site, kind, owner)
        overhead = _overhead(stack, trace.allocators)
        g.bytes += stack.bytes
        g.overhead += overhead
        g.blocks += stack.blocks
        g.stacks[(library_frame, summary, _native_summary(stack.native))] += stack.bytes
        if stack.step is not None:
            g.steps.add(stack.step)
            cell = per_step[(site, owner)][stack.step]
            cell[0] += stack.bytes + overhead
            cell[1] += stack.blocks
    return groups, per_step


def _subject(site: str, owner: str) -> str:
    return owner if owner.rsplit(":", 1)[0] == site else f"{site} <- {owner}"


def by_site(trace: NativeTrace) -> pd.DataFrame:
    """What the traced steps left alive, one row per (site, owner), largest ``bytes_per_step`` first.

    Columns (:data:`SITE_COLUMNS`): ``site``, ``kind`` of the site's frame
    (``stdlib``, ``library``, ``user``, ``unknown``), ``library_frame``
    (``file:line`` of the site when it is in a library, else empty),
    ``owner``, ``stack`` (summary of the stack with the most bytes),
    ``bytes``, ``overhead_bytes``, ``allocations`` (blocks still alive),
    ``steps`` (traced steps with survivors here), ``bytes_per_step``,
    ``share`` (of all surviving bytes, overhead included) and ``subject``
    (the name of the site in a journal). ``native`` (the heaviest C stack,
    allocator frames left out) is added when the trace has native frames.
    ``table.attrs["overhead_per_block"]`` is the mean allocator overhead
    per surviving block. See the module docstring.
    """
    groups, _ = _groups(trace)
    total = sum(g.bytes + g.overhead for g in groups.values()) or 1.0
    rows: list[dict[str, Any]] = []
    for g in groups.values():
        (library_frame, summary, native), _ = max(g.stacks.items(), key=lambda kv: kv[1])
        row = {
            "site": g.site,
            "kind": g.kind,
            "library_frame": library_frame,
            "owner": g.owner,
            "stack_summary": summary,
            "bytes": int(g.bytes),
            "overhead_bytes": round(g.overhead),
            "allocations": g.blocks,
            "steps": len(g.steps),
            "bytes_per_step": (g.bytes + g.overhead) / trace.steps,
            "share": (g.bytes + g.overhead) / total,
            "subject": _subject(g.site, g.owner),
        }
        if trace.native_traces:
            row["native"] = native
        rows.append(row)
    unseen = unseen_bytes(trace)
    if unseen is not None and unseen > 0:
        row = {"site": UNSEEN, "kind": "unseen", "library_frame": "", "owner": "", "stack_summary": _UNSEEN_STACK,
               "bytes": int(unseen), "overhead_bytes": 0, "allocations": 0, "steps": 0,
               "bytes_per_step": unseen / trace.steps, "share": unseen / (total + unseen), "subject": UNSEEN}
        for r in rows:
            r["share"] = r["share"] * total / (total + unseen)
        rows.append(row)
    columns = list(SITE_COLUMNS) + (["native"] if trace.native_traces else [])
    table = pd.DataFrame(rows, columns=columns)
    table = table.sort_values(["bytes_per_step", "site"], ascending=[False, True], ignore_index=True)
    table.attrs["unseen_bytes"] = unseen  # before clipping at 0: negative when older blocks were freed meanwhile
    table.attrs["overhead_per_block"] = (sum(g.overhead for g in groups.values()) /
                                         max(1, sum(g.blocks for g in groups.values())))
    return table


def survivors_by_step(trace: NativeTrace, *, top: int = 20) -> pd.DataFrame:
    """Survivors by the step that allocated them, cumulated: the series a journal holds.

    One row per (step, subject, metric): ``step`` counts steps completed
    (``warmup`` before the first traced step: all zeros; ``warmup + k``
    after the k-th), ``value`` the bytes (``survivor_bytes``, overhead
    included) and blocks (``survivor_blocks``) allocated by steps up to
    that one and still alive when the capture closed. Subjects: the ``top``
    sites by bytes, ``"(other sites)"`` for the rest, ``"(all sites)"``.
    Allocations made outside any step are not in these series (they are in
    :func:`by_site`).
    """
    groups, per_step = _groups(trace)
    ranked = sorted(groups, key=lambda k: -(groups[k].bytes + groups[k].overhead))
    keep = {k: _subject(*k) for k in ranked[:top]}
    series: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(lambda: [0.0, 0.0]))
    for key, steps in per_step.items():
        subject = keep.get(key, OTHER_SITES)
        for step, (b, n) in steps.items():
            for name in (subject, ALL_SITES):
                series[name][step][0] += b
                series[name][step][1] += n
    rows = []
    subjects = [*keep.values(), OTHER_SITES, ALL_SITES]
    for subject in subjects:
        cum_b = cum_n = 0.0
        rows += [(trace.warmup, subject, "survivor_bytes", 0.0, "bytes"),
                 (trace.warmup, subject, "survivor_blocks", 0.0, "blocks")]
        for i in range(trace.warmup, trace.warmup + trace.steps):
            b, n = series[subject].get(i, (0.0, 0.0))
            cum_b += b
            cum_n += n
            rows += [(i + 1, subject, "survivor_bytes", cum_b, "bytes"),
                     (i + 1, subject, "survivor_blocks", cum_n, "blocks")]
    return pd.DataFrame(rows, columns=["step", "subject", "metric", "value", "unit"])
