"""Recording: the step loop and everything that writes or reads a journal.

- :mod:`~tokdiag.recording.tracker`: :class:`Tracker`, the step
  loop (schedule, gc, progress, budget, journal); the probes it runs, in
  their order, in :mod:`~tokdiag.recording.probe_set`;
- :mod:`~tokdiag.recording.steps`: :func:`track` and :func:`atrack`, a step function
  (plain or ``async def``) called under a Tracker;
- :mod:`~tokdiag.recording.isolated`: :func:`track_isolated`, the same in a fresh process;
- :mod:`~tokdiag.recording.journal`: the crash-safe JSON-lines journal;
- :mod:`~tokdiag.recording.timeline`: the tidy DataFrame every analysis reads;
- :mod:`~tokdiag.recording.run`: :class:`Run`, one run from a tracker or a journal.

Record sits above the probes and below analysis: it imports probes, never
analysis (a :class:`Run` reaches analysis lazily, on a method call).
"""
