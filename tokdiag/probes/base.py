"""The probe protocol and the per-snapshot context shared by probes."""

from __future__ import annotations

import gc
import warnings
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from tokdiag.errors import TokdiagWarning
from tokdiag.probes.footprint import checkpoint
from tokdiag.probes.seen import Seen
from tokdiag.records import Record


@dataclass
class SnapshotContext:
    """What the probes of one snapshot share. Dropped when the snapshot returns.

    ``heap`` is ``gc.get_objects()`` taken once, lazily, for every probe
    that needs it; ``seen`` splits reachable bytes between owners in the
    order the probes run (caches, then watched classes, then the census'
    ``unowned_bytes``); ``native_seen`` does the same for native memory
    (one tiktoken Encoding in two caches is counted once).
    """

    seen: Seen = field(default_factory=Seen)
    native_seen: set[int] = field(default_factory=set)
    _heap: list[Any] | None = None

    @property
    def heap(self) -> list[Any]:
        if self._heap is None:
            self._heap = gc.get_objects()
            checkpoint()  # 8 bytes per object: part of the snapshot's own peak
        return self._heap

    def own_containers(self) -> tuple[object, ...]:
        """This snapshot's own gc-tracked id sets: in the heap (made before it was listed), never to be counted."""
        return (*self.seen.python_containers(), self.native_seen)

    def release(self) -> None:
        """Forget every object this context listed (called by the tracker)."""
        self._heap = None
        self.seen = Seen()
        self.native_seen.clear()


class OnceWarnings:
    """A probe's warnings, each given once per run (a probe lives for one run), not once per snapshot.

    ``messages`` keeps them in order, for whoever records the run.

    >>> import warnings
    >>> w = OnceWarnings()
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     for _ in range(3):
    ...         w.warn("key", "census: 1 app.Blob object counted 0 bytes")
    >>> len(caught), w.messages
    (1, ['census: 1 app.Blob object counted 0 bytes'])
    """

    def __init__(self) -> None:
        self.messages: list[str] = []
        self._keys: set[str] = set()

    def warn(self, key: str, message: str) -> None:
        """Warn (:class:`~tokdiag.errors.TokdiagWarning`) unless a warning with this ``key`` was given."""
        if key in self._keys:
            return
        self._keys.add(key)
        self.messages.append(message)
        warnings.warn(message, TokdiagWarning, stacklevel=3)


@runtime_checkable
class Probe(Protocol):
    """Something that measures one kind of thing at a snapshot."""

    name: str

    def collect(self, ctx: SnapshotContext) -> list[Record]:
        """Take the measurement; hold no reference to what was measured afterwards."""
        ...
