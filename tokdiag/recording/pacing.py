"""What a snapshot may cost the measured process: when the next one is taken, which probes fit the budget.

:class:`Pacing` is a part of :class:`~tokdiag.recording.tracker.Tracker`:
with ``every="auto"`` the next snapshot is placed so that snapshots take
about ``overhead`` of the run's time (at least ``min_snapshots`` of them);
with ``budget_mb`` a snapshot whose own peak (:data:`PRIOR_PEAK` before one
was measured) would pass the budget measures only the light probes, and the
why-alive chains at the end of a run are skipped when their index of the
heap (:data:`RETENTION_BYTES_PER_OBJECT`) would not fit.
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any

from tokdiag.errors import TokdiagWarning

if TYPE_CHECKING:
    from tokdiag.recording.journal import JournalWriter
    from tokdiag.recording.probe_set import ProbeSet

__all__ = ["PRIOR_PEAK", "RETENTION_BYTES_PER_OBJECT", "Pacing"]

_MiB = 1024 * 1024

PRIOR_PEAK = 0.10
"""What a snapshot is expected to add to the RSS, as a share of it, before one was measured
(``bench/footprint.py`` measures 5-8% on heaps of 1.5M-5M objects)."""

RETENTION_BYTES_PER_OBJECT = 160
"""What ``why_alive`` adds to the RSS per gc-tracked object while it indexes the heap's references
(145-160 bytes measured on heaps of 1.5M-2M objects): with ``budget_mb``, the end of a run skips it,
with a warning, when that would pass the budget."""


class Pacing:
    """The tracker's methods that keep its own cost within ``overhead`` and ``budget_mb``."""

    if TYPE_CHECKING:  # set by Tracker
        every: int | str
        overhead: float
        min_snapshots: int
        budget_bytes: int | None
        _probes: ProbeSet
        _writer: JournalWriter | None
        _peak: tuple[int, int] | None
        _light_warned: bool
        _gc_objects: int
        _total: int | None
        _next: int
        _work_s: float
        _steps_since: int
        _first_counts: dict[str, float]
        _last_counts: dict[str, float]
        _baseline_mark: list[Any] | None

        def _forked(self) -> bool: ...

    def _reserve(self, rss: int) -> int:
        """Bytes a full snapshot is expected to add to the RSS now (``rss``): its own peak.

        The peak the last full snapshot measured, scaled by how much the RSS
        grew since (the walks' memory follows the heap's size); before any
        snapshot, :data:`PRIOR_PEAK` of the RSS.
        """
        if self._peak is None:
            return int(PRIOR_PEAK * rss)
        peak, at = self._peak
        return int(peak * max(1.0, rss / at)) if at > 0 else peak

    def _probes_within_budget(self, step: int) -> list[Any]:
        """The probes of the snapshot at ``step``: all of them, or the light ones when a full
        snapshot's own peak would take the process past ``budget_mb`` (a warning event says so)."""
        if self.budget_bytes is None:
            return self._probes.all
        rss = self._probes.process.rss()
        reserve = self._reserve(rss)
        if rss + reserve <= self.budget_bytes:
            return self._probes.all
        heavy = self._probes.heavy
        if not heavy:
            return self._probes.all
        skipped = ", ".join(p.name for p in heavy)
        msg = (f"budget: the snapshot at step {step} measured only the process and the census ({skipped} skipped): "
               f"RSS {rss / _MiB:.0f} MiB plus the {reserve / _MiB:.0f} MiB a full snapshot adds (its own peak, "
               f"tracker/tokdiag/snapshot_peak_bytes) would pass budget_mb={self.budget_bytes / _MiB:.0f}")
        if not self._forked():
            assert self._writer is not None
            self._writer.write({"kind": "warning", "message": msg})
            if not self._light_warned:
                self._light_warned = True
                warnings.warn(msg, TokdiagWarning, stacklevel=4)
        return [p for p in self._probes.all if not any(p is h for h in heavy)]

    def _schedule(self, step: int, cost: float) -> None:
        if self.every != "auto":
            self._next = step + int(self.every)
            return
        per_step = self._work_s / self._steps_since if self._steps_since else 0.0
        k = 1
        if per_step > 0:
            k = max(1, math.ceil(cost / (self.overhead * per_step)))
        if self._total:
            k = min(k, max(1, self._total // self.min_snapshots))
        elif per_step == 0:
            k = 1
        self._next = step + k
        self._work_s = 0.0
        self._steps_since = 0

    def _record_retention(self, writer: JournalWriter) -> None:
        grown = [s for s, last in self._last_counts.items() if last > self._first_counts.get(s, 0) and last > 0]
        if not grown:
            return
        if self.budget_bytes is not None:  # why_alive indexes every reference of the heap at once
            rss = self._probes.process.rss()
            need = RETENTION_BYTES_PER_OBJECT * self._gc_objects
            if rss + need > self.budget_bytes:
                msg = (f"budget: why_alive was not run for {', '.join(grown)}: its index of the heap's references "
                       f"(~{need / _MiB:.0f} MiB for {self._gc_objects:,} objects) on top of RSS {rss / _MiB:.0f} MiB "
                       f"would pass budget_mb={self.budget_bytes / _MiB:.0f}; call td.why_alive(name) yourself "
                       "where the process has room")
                warnings.warn(msg, TokdiagWarning, stacklevel=5)
                writer.write({"kind": "warning", "message": msg})
                return
        try:
            from tokdiag.analysis.retention import why_alive
        except ImportError:  # pragma: no cover - retention is part of the package
            return
        for subject in grown:
            try:
                chains = why_alive(subject, max_chains=3, newer_than=self._baseline_mark)
            except Exception as exc:  # evidence gathering must not lose the run
                writer.write({"kind": "warning", "message": f"why_alive({subject!r}) failed: {exc!r}"})
                continue
            writer.write({"kind": "retention", "subject": subject, "chains": [c.as_dict() for c in chains]})
            del chains
