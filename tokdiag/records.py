"""The record every probe returns, and the vocabulary of the timeline.

A probe returns a list of :class:`Record`. The tracker stamps each batch with
``run``, ``step`` and ``elapsed_s``; the timeline is one row per record with
the columns in :data:`COLUMNS`.

Probes, subjects and metrics written by tokdiag itself (units in brackets):

=========  ================================  ==========================================
probe      subject                           metrics
=========  ================================  ==========================================
process    ``"process"``                     rss [bytes], uss [bytes] (optional),
                                             traced [bytes] (tracemalloc current, when
                                             tracing), gc_objects [objects],
                                             gc_gen0/gc_gen1/gc_gen2 [objects] (gc counts)
census     qualified type name               count [objects], bytes [bytes] (shallow),
           (``"builtins.dict"``)             unowned_bytes [bytes] (not owned by a cache,
                                             watched class or container); untracked
                                             objects the heap reaches included.
                                             count_at_start, bytes_at_start,
                                             unowned_bytes_at_start: written once, when a
                                             type is first written after the first
                                             snapshot: its figures at the first one
                                             (a baseline for the ledger; never judged)
watch      qualified class name              count [objects], bytes [bytes] (reachable,
           (``"app.agents.RewardAgent"``)    partitioned: a byte already owned by a
                                             cache or an earlier class is not counted)
cache      cache label (``"tiktoken.         entries [entries], bytes [bytes] (deep,
           registry:ENCODINGS"``)            partitioned like watch), distinct_payloads
                                             [objects], fingerprint [hash], native_bytes
                                             [bytes] (estimate), hits/misses/maxsize
                                             [calls]/[entries] for lru_cache
alloc      ``"file.py:123"``                 bytes [bytes], count [blocks]
allocator  ``"glibc"``                       free [bytes] (free chunks kept by malloc,
                                             ``mallinfo2``; absent at snapshots where
                                             it was skipped for its cost), in_use
                                             [bytes], free_chunks [blocks]
           ``"pymalloc"``                    free [bytes] (free blocks and pools kept
                                             in Python's arenas), in_use [bytes],
                                             arenas [bytes]
           ``"pages"``                       anon, file, shmem [bytes] (RssAnon,
                                             RssFile, RssShmem)
native     registry type name                count [objects], native_bytes [bytes]
           (``"ssl.SSLContext"``)            (estimated or read; an Encoding a cache
                                             counted adds none), certificates
                                             [entries] (SSL), tokens [entries]
                                             (tiktoken)
disk       directory label or path           bytes [bytes] (sum of file sizes), files [files],
           (``"memory"``, ``"./logs"``)      walk_s [seconds], capped [flag] (bytes and files
                                             are NaN when capped); see
                                             :mod:`tokdiag.probes.disk`
tracker    ``"tokdiag"``                     snapshot_s [seconds], snapshot_cpu_s [seconds]
                                             (CPU time of the snapshotting thread: in a
                                             service, the time it held the GIL),
                                             snapshot_peak_bytes [bytes] (the most the
                                             snapshot raised the RSS above its start:
                                             :mod:`tokdiag.probes.footprint`), self_bytes
                                             [bytes] (tokdiag's own retained memory),
                                             alloc_overhead_s, allocator_s,
                                             mallinfo_s (0 when skipped), native_s
                                             [seconds] (probes' own costs)
native_    ``"<site> <- <owner>"``           survivor_bytes [bytes] (allocator overhead
trace      (``"ssl.create_default_context    included), survivor_blocks [blocks]: made
           <- app.agents.build:42"``),       by the steps up to this one and still
           ``"(other sites)"``,              alive when memray's capture closed
           ``"(all sites)"``                 (:func:`tokdiag.recording.native_trace.
                                             alive_by_site`; a run under memray, in
                                             its own journal: not RSS)
=========  ================================  ==========================================

``fingerprint`` values are integers that change when a cached payload is
mutated; they are identifiers, not quantities (unit ``hash``).
"""

from __future__ import annotations

from dataclasses import dataclass

COLUMNS: tuple[str, ...] = ("run", "step", "elapsed_s", "probe", "subject", "metric", "value", "unit")
"""Columns of :attr:`tokdiag.Run.timeline`, in order."""

BYTES = "bytes"
OBJECTS = "objects"
ENTRIES = "entries"
SECONDS = "seconds"
HASH = "hash"
CALLS = "calls"
BLOCKS = "blocks"
FILES = "files"
FLAG = "flag"
"""A state (0 or 1), not a quantity: never judged by the verdicts."""


@dataclass(frozen=True, slots=True)
class Record:
    """One measurement: ``value`` of ``metric`` for ``subject``, taken by ``probe``."""

    probe: str
    subject: str
    metric: str
    value: float
    unit: str

    def as_dict(self) -> dict[str, object]:
        return {"probe": self.probe, "subject": self.subject, "metric": self.metric,
                "value": self.value, "unit": self.unit}
