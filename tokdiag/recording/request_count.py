"""Requests counted as the steps of a service recorder (``per="request"``).

The service's threads count finished requests (the ASGI/WSGI middleware of
:mod:`tokdiag.recording.middleware` calls
:meth:`~tokdiag.recording.recorder.Recorder.count_request`, which adds to a
:class:`RequestCount`); the recorder's thread reads the count as the step of
each snapshot, and journals it as ``recorder/service/requests`` (unit
calls: never judged as a leak). With ``every_requests=N`` the count wakes
the recorder after every N requests.

>>> woken = []
>>> count = RequestCount(every=2, wake=lambda: woken.append(True))
>>> count.add(); count.due(), woken
(False, [])
>>> count.add(); count.due(), woken
(True, [True])
>>> count.snapshot_taken(); count.due(), count.collect(None)[0].value
(False, 2.0)
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from tokdiag.probes.base import SnapshotContext
from tokdiag.records import CALLS, Record

__all__ = ["RequestCount"]


class RequestCount:
    """Finished requests, counted under a lock; also the probe that journals the count at each snapshot.

    ``every``: wake the recorder (``wake()``) each time the count reaches the
    next multiple of it since the last snapshot; None never wakes it.
    """

    name = "recorder"

    def __init__(self, every: int | None, wake: Callable[[], None]) -> None:
        self.every = every
        self.value = 0
        self._wake = wake
        self._lock = threading.Lock()
        self._next = every or 0

    def add(self, n: int = 1) -> None:
        """Count ``n`` finished requests (on any thread of the service)."""
        with self._lock:
            self.value += n
            due = self.every is not None and self.value >= self._next
        if due:
            self._wake()

    def due(self) -> bool:
        """Whether ``every`` requests were counted since the last snapshot."""
        return self.every is not None and self.value >= self._next

    def snapshot_taken(self) -> None:
        """A snapshot is being taken now: the next is due ``every`` requests on, at the next multiple."""
        if self.every is not None:
            with self._lock:
                self._next = (self.value // self.every + 1) * self.every

    def collect(self, ctx: SnapshotContext | None) -> list[Record]:
        """The count so far, as the probe ``recorder`` (subject ``service``, metric ``requests``)."""
        return [Record("recorder", "service", "requests", float(self.value), CALLS)]
