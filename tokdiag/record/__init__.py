"""Record: the step loop and everything that writes or reads a journal.

- :mod:`~tokdiag.record.tracker`: :class:`Tracker` and :func:`track`, the step
  loop (schedule, gc, progress, budget, journal);
- :mod:`~tokdiag.record.isolated`: :func:`track_isolated`, the same in a fresh process;
- :mod:`~tokdiag.record.native_trace`: :func:`alive_by_site`, a workload in a fresh process under
  memray, and what its steps left alive by allocation site (not an RSS measurement);
- :mod:`~tokdiag.record.journal`: the crash-safe JSON-lines journal;
- :mod:`~tokdiag.record.timeline`: the tidy DataFrame every analysis reads;
- :mod:`~tokdiag.record.run`: :class:`Run`, one run from a tracker or a journal.

Record sits above the probes and below analysis: it imports probes, never
analysis (a :class:`Run` reaches analysis lazily, on a method call).
"""
