"""When a service recorder snapshots: on a grid of ``every_s`` seconds, put off while snapshots pause the service.

The grid starts at an *epoch* (a ``time.monotonic()`` value): the
recorder's own start, or the one ``tokdiag attach`` gives every process it
attaches at once, so that their snapshots fall on the same slots. A
snapshot is labelled with its slot even when the machine took it late, and
with ``per="second"`` its step is the seconds since the epoch on the grid
(the same in every process that shares the epoch, so their series line up).
``for_s`` ends the recording at ``epoch + for_s``, itself a label.

When a snapshot paused the service (its CPU time on the recorder's thread,
see :mod:`tokdiag.recording.recorder`) longer than ``overhead`` of the
interval, :meth:`Schedule.next_due` puts the next slot off until that pause
is ``overhead`` of the time, with a note the recorder journals as an
``interval`` event.

>>> s = Schedule(every_s=60.0, overhead=0.05, for_s=None, epoch=1000.0)
>>> s.first_due(1030.0), s.seconds(1061.5)
(1060.0, 60)
>>> s.next_due(1061.0, pause=0.5)
(1120.0, None)
>>> s.next_due(1061.0, pause=6.0)[0]  # 6 s is 10% of 60 s: wait until 6 s is 5% of the time
1175.0
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["Schedule"]


@dataclass(frozen=True)
class Schedule:
    """The ``every_s`` grid from ``epoch``, the ``for_s`` end and the ``overhead`` share of the recorder."""

    every_s: float
    overhead: float
    for_s: float | None
    epoch: float

    def first_due(self, began: float) -> float:
        """The first slot at or after ``began`` (``began`` itself when the recorder started the grid there)."""
        return self.epoch + math.ceil((began - self.epoch) / self.every_s) * self.every_s

    def ended(self, now: float) -> bool:
        """Whether ``for_s`` has passed at ``now``."""
        return self.for_s is not None and now - self.epoch >= self.for_s

    def label(self, now: float, due: float, ending: bool) -> float:
        """The time a snapshot taken at ``now`` is labelled with: its slot (``due``, or the ``for_s`` end), even
        when the machine made it late; ``now`` when it was taken early (woken by requests)."""
        if ending and self.for_s is not None:
            return self.epoch + self.for_s
        return due if now >= due else now

    def seconds(self, at: float) -> int:
        """The step of a snapshot labelled ``at`` with ``per="second"``: the seconds since the epoch on the grid."""
        return int(round(round((at - self.epoch) / self.every_s) * self.every_s))

    def horizon(self, due: float) -> float:
        """How long the recorder may wait: until ``due``, or the ``for_s`` end if that comes first."""
        return due if self.for_s is None else min(due, self.epoch + self.for_s)

    def next_due(self, now: float, pause: float) -> tuple[float, str | None]:
        """The next slot after ``now``, put off while ``pause`` (the last snapshot's) is over ``overhead`` of the
        interval; with a note for the journal when it was put off, else None."""
        k = math.floor((now - self.epoch) / self.every_s) + 1
        due = self.epoch + k * self.every_s
        if pause <= self.overhead * self.every_s:
            return due, None
        least = pause / self.overhead  # the interval at which this pause is `overhead` of the time
        return max(due, now - pause + least), (
            f"a snapshot paused the service {pause * 1000:.0f} ms, more than overhead={self.overhead:g} of "
            f"every_s={self.every_s:g}; the next one waits {least:.1f} s")
