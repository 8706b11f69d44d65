"""The in-process recorder: snapshots of a running service, taken on a background thread, into a journal.

For a service that opts in (``tokdiag attach PID`` starts the same recorder
in a service that did not)::

    import tokdiag as td

    rec = td.record("service.jsonl", every_s=60, watch=["RewardAgent"], caches=["myapp.llm:_TOKENIZERS"])
    ...                                   # the service runs; a snapshot every minute
    rec.stop()                            # or: with td.record(...): serve()

    run = td.load("service.jsonl")        # later, anywhere
    run.verdicts()

The snapshots are the :class:`~tokdiag.Tracker`'s (same probes, journal,
why-alive chains at the end); the recorder decides when to take them
(:mod:`~tokdiag.recording.recorder_schedule`) and what a step is
(requests: :mod:`~tokdiag.recording.request_count`):

- ``per="second"`` (default): a step is a second since the recorder started;
  verdicts read "per second". A snapshot every ``every_s`` seconds.
- ``per="request"``: a step is a request, counted by
  :meth:`Recorder.count_request`, which the ASGI/WSGI middleware of
  :mod:`tokdiag.recording.middleware` calls when a response is done; verdicts
  read "per request". A snapshot every ``every_s`` seconds and, with
  ``every_requests=N``, after every N requests, whichever comes first.

**The pause.** A snapshot holds the GIL while the census runs, so every
other thread of the service waits. Each snapshot journals its wall time
(``tracker/tokdiag/snapshot_s``) and its CPU time on the recorder's thread
(``snapshot_cpu_s``: the time it held the GIL, the service's pause). When
one pause exceeds ``overhead`` (5%) of the interval, the next snapshot is
put off until the pauses are back under that share, and an ``interval``
event says so. ``bench/recorder.py`` measures the pause and the service's
throughput with and without a recorder.

**The cap.** Before each snapshot the recorder checks the journal's size:
when the next snapshot (as large as the last one) would pass ``max_mb``
(64 MiB), it stops instead: the journal ends with status ``cap`` and every
snapshot before it is kept. The service is never touched; start a new
recorder with a new journal (or a larger ``max_mb``) to go on.

**Stopping.** :meth:`Recorder.stop` (or leaving the ``with`` block) takes a
last snapshot, records why-alive chains for watched classes that grew, ends
the journal and joins the thread. ``for_s`` stops it by itself after that
many seconds, ``budget_mb`` when the process's RSS passes that many MiB
(the service goes on; the journal says why), and an interpreter shutting
down stops it too (``atexit``). A stopped recorder leaves no thread and no
``atexit`` hook behind.

**What it keeps.** Nothing the service made: between snapshots the
recorder holds its options and counters only (the tracker's probes let go
of every object they measured); tokdiag's own retained bytes are journaled
as ``tracker/tokdiag/self_bytes``.

**Disk and limit.** ``disk=["./memory"]`` follows the bytes and files
under directories the service writes (:class:`tokdiag.probes.DiskProbe`);
``limit="4GiB"`` records the memory limit the service is killed at, for
the time to the limit (:func:`tokdiag.analysis.time_to_limit`) when the
cgroup's (recorded in every journal's header) is not the one that counts.

Several worker processes: put ``{pid}`` in the journal name
(``"service-{pid}.jsonl"``) and start the recorder in each worker (after
the fork: a thread does not survive one); :func:`tokdiag.load_service`
reads the journals as one service, and ``tokdiag report`` reports on them
as one. Each journal's header names its service (``params["service"]``:
the journal's name without ``{pid}``, e.g. ``"service"``).
"""

from __future__ import annotations

import atexit
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tokdiag.errors import ConfigError
from tokdiag.recording.options import check_number, check_per
from tokdiag.recording.recorder_schedule import Schedule
from tokdiag.recording.request_count import RequestCount
from tokdiag.recording.service import service_name
from tokdiag.recording.tracker import Tracker

__all__ = ["Recorder", "record"]

_MiB = 1024 * 1024

Wait = Callable[[float], "tuple[str, str] | None"]
"""Blocks up to ``timeout`` seconds; returns ``(reason, message)`` to stop, or None to go on."""


class Recorder:
    """Snapshots of this process on a background thread; see the module docstring.

    Start it with :func:`record` (or :meth:`start`); the parameters are
    :func:`record`'s, plus ``epoch`` (a ``time.monotonic()`` value: steps
    and ``for_s`` count from it and its first snapshot waits for the next
    ``every_s`` slot; ``tokdiag attach`` gives every process it attaches
    the same one) and ``params`` (added to the journal header's).
    """

    def __init__(
        self,
        journal: str | os.PathLike[str],
        *,
        every_s: float = 60.0,
        every_requests: int | None = None,
        per: str = "second",
        for_s: float | None = None,
        watch: Sequence[str] = (),
        caches: Sequence[Any] = (),
        census: bool = True,
        alloc_sites: int = 0,
        uss: bool = False,
        collect: bool = True,
        why_alive: bool = True,
        budget_mb: float | None = None,
        max_mb: float = 64.0,
        overhead: float = 0.05,
        overwrite: bool = False,
        name: str | None = None,
        epoch: float | None = None,
        params: dict[str, Any] | None = None,
        disk: Any = None,
        limit: int | float | str | None = None,
    ) -> None:
        self.every_s = check_per(per, every_s, every_requests)
        self.for_s = None if for_s is None else float(
            check_number("for_s", for_s, "must be a positive number, e.g. for_s=600 (or None)"))
        self.budget_bytes = None if budget_mb is None else int(
            float(check_number("budget_mb", budget_mb, "must be a positive number, e.g. budget_mb=4096")) * _MiB)
        self.max_mb = float(check_number("max_mb", max_mb, "must be a positive number, e.g. max_mb=64"))
        self.max_bytes = int(self.max_mb * _MiB)
        self.overhead = float(check_number("overhead", overhead, "the largest share of time a snapshot may pause "
                                                                  "the service, between 0 and 1, e.g. 0.05", high=1))
        self.limit_bytes = None
        if limit is not None:
            from tokdiag.analysis.limit import parse_size

            self.limit_bytes = parse_size(limit)
        self.per = per
        self.every_requests = every_requests
        path = Path(str(journal).replace("{pid}", str(os.getpid())))
        self.journal = path if path.is_absolute() else Path.cwd() / path
        self._epoch = epoch
        self._pid = os.getpid()
        self._wake = threading.Event()
        self._requests = RequestCount(every_requests, self._wake.set)
        self._tracker = Tracker(
            watch=watch, caches=caches, census=census, alloc_sites=alloc_sites, uss=uss, journal=self.journal,
            overwrite=overwrite, collect=collect, progress=False, name=name, why_alive=why_alive,
            # a snapshot that would itself take the service past the budget measures less (see Tracker)
            budget_mb=None if self.budget_bytes is None else self.budget_bytes / _MiB,
            probes=[self._requests] if per == "request" else [], disk=disk,
            params={"every": f"{self.every_s:g}s", "every_requests": every_requests, "per": per, "step_unit": per,
                    "for_s": self.for_s, "max_mb": max_mb, "overhead": overhead, "pid": os.getpid(),
                    "service": service_name(journal), "limit": self.limit_bytes, **(params or {})})
        self._stop_request: tuple[str, str] | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        self._done = threading.Event()
        self.snapshots = 0
        self.status: str | None = None
        """None while recording; then the journal's end reason (``completed``, ``stopped``, ``cap``, ...)."""
        self.message = ""
        self.listener: Callable[[dict[str, Any]], None] | None = None
        """Called on the recorder's thread with ``{"event": "snapshot" | "ended", ...}`` (attach reports progress)."""

    # -- the service's side ---------------------------------------------------------------
    @property
    def requests(self) -> int:
        """Requests counted so far."""
        return self._requests.value

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def count_request(self, n: int = 1) -> None:
        """Count ``n`` finished requests (the middleware calls this); wakes the recorder every ``every_requests``."""
        self._requests.add(n)

    def start(self) -> Recorder:
        """Open the journal, start the background thread and return once it took the first snapshot (step 0)."""
        if self._thread is not None:
            raise ConfigError("this recorder was already started; create a new one (td.record(...)) for another")
        self._thread = threading.Thread(target=self._thread_main, name="tokdiag-recorder", daemon=True)
        self._thread.start()
        self._started.wait()
        if self._start_error is not None:
            self._thread.join()
            raise self._start_error
        return self

    def stop(self, timeout: float | None = 120.0) -> None:
        """Take a last snapshot, end the journal and wait for the thread (up to ``timeout`` seconds)."""
        self._request_stop("stopped", "stopped by the service (Recorder.stop)")
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def __enter__(self) -> Recorder:
        if self._thread is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "recording" if self.status is None else self.status
        return f"<Recorder {str(self.journal)!r} {state}: {self.snapshots} snapshots, per {self.per}>"

    def _at_exit(self) -> None:
        if os.getpid() != self._pid:  # a forked child inherited the hook, not the thread
            return
        self._request_stop("stopped", "the service is exiting")
        self._done.wait(60)

    def _request_stop(self, reason: str, message: str) -> None:
        if self._stop_request is None:
            self._stop_request = (reason, message)
        self._wake.set()

    def _wait_event(self, timeout: float) -> tuple[str, str] | None:
        self._wake.wait(timeout)
        self._wake.clear()
        return self._stop_request

    def _thread_main(self) -> None:
        self.run(self._wait_event)

    # -- the loop ------------------------------------------------------------------------------
    def run(self, wait: Wait) -> None:
        """Record on the calling thread until ``wait`` says stop (or ``for_s``, the cap, the budget); never raises
        once the journal is open. :meth:`start` runs this on its own thread; ``tokdiag attach`` on the thread it
        injected, with a ``wait`` that listens to the attaching command."""
        tracker = self._tracker
        try:
            tracker.start()
        except BaseException as exc:
            self._start_error = exc
            self._started.set()
            self._done.set()
            self._tell({"event": "error", "where": "start", "message": f"{type(exc).__name__}: {exc}"})
            return
        self._tell({"event": "started", "journal": str(self.journal), "pid": os.getpid()})
        atexit.register(self._at_exit)
        import psutil

        proc = psutil.Process()
        began = time.monotonic()
        schedule = Schedule(self.every_s, self.overhead, self.for_s, began if self._epoch is None else self._epoch)
        reason, message = "completed", ""
        last_line = 0
        try:
            # the first snapshot now, or (sharing an attach's epoch) at the next slot of the grid, so that every
            # process attached at once has a snapshot at the same steps
            next_due = schedule.first_due(began)
            while True:
                now = time.monotonic()
                ending = schedule.ended(now)
                if ending or now >= next_due or self._requests.due():
                    size = self._journal_size()
                    if size + last_line > self.max_bytes:
                        reason = "cap"
                        message = (f"the journal reached max_mb={self.max_mb:g} MiB after {self.snapshots} "
                                   "snapshots; recording stopped (the service goes on); start a new recorder with a "
                                   "new journal or a larger max_mb to go on")
                        break
                    at = schedule.label(now, next_due, ending)
                    pause = self._snapshot(schedule, at)
                    self._started.set()  # start() returns once the first snapshot (the baseline) is taken
                    last_line = self._journal_size() - size
                    rss = proc.memory_info().rss
                    self._tell({"event": "snapshot", "snapshot": self.snapshots, "step": self._step(schedule, at),
                                "pause_s": pause, "rss": rss})
                    if ending:
                        message = f"{self.snapshots} snapshots over {self.for_s:g} s (for_s)"
                        break
                    if self.budget_bytes is not None and rss > self.budget_bytes:
                        reason = "budget"
                        message = (f"RSS {rss / _MiB:.0f} MiB passed budget_mb={self.budget_bytes / _MiB:.0f} after "
                                   f"{self.snapshots} snapshots; recording stopped (the service goes on)")
                        break
                    next_due, note = schedule.next_due(time.monotonic(), pause)
                    if note is not None:
                        self._tracker.event("interval", note)
                stop = wait(max(0.0, schedule.horizon(next_due) - time.monotonic()))
                if stop is not None:
                    reason, message = stop
                    self._snapshot(schedule, time.monotonic())  # the state when it stopped is evidence too
                    break
        except Exception as exc:  # a probe failed: the journal says so, the service goes on
            reason, message = "error", f"{type(exc).__name__}: {exc} (after {self.snapshots} snapshots)"
        finally:
            try:
                tracker.finish(reason, message, load=False)
            except Exception as exc:  # pragma: no cover - finishing a journal that cannot be written
                message = f"{message}; ending the journal failed: {exc!r}"
            atexit.unregister(self._at_exit)
            self.status, self.message = reason, message
            self._started.set()
            self._done.set()
            self._tell({"event": "ended", "status": reason, "message": message, "snapshots": self.snapshots})

    def _step(self, schedule: Schedule, at: float) -> int:
        """Requests so far, or the seconds since the epoch on the ``every_s`` grid (:meth:`Schedule.seconds`)."""
        return self._requests.value if self.per == "request" else schedule.seconds(at)

    def _snapshot(self, schedule: Schedule, at: float) -> float:
        """One snapshot at the current step; returns its pause (CPU seconds on this thread)."""
        step = self._step(schedule, at)
        self._requests.snapshot_taken()
        cpu = time.thread_time()
        self._tracker.snapshot(step)
        self.snapshots += 1
        return time.thread_time() - cpu

    def _journal_size(self) -> int:
        try:
            return self.journal.stat().st_size
        except OSError:
            return 0

    def _tell(self, event: dict[str, Any]) -> None:
        listener = self.listener
        if listener is not None:
            try:
                listener(event)
            except Exception:  # progress reports never stop the recording
                pass


def record(journal: str | os.PathLike[str], *, every_s: float = 60.0, every_requests: int | None = None,
           per: str = "second", for_s: float | None = None, watch: Sequence[str] = (), caches: Sequence[Any] = (),
           census: bool = True, alloc_sites: int = 0, uss: bool = False, collect: bool = True,
           why_alive: bool = True, budget_mb: float | None = None, max_mb: float = 64.0, overhead: float = 0.05,
           overwrite: bool = False, name: str | None = None, disk: Any = None,
           limit: int | float | str | None = None) -> Recorder:
    """Start recording this process into ``journal`` on a background thread; returns the :class:`Recorder`.

    ``every_s``: seconds between snapshots. ``per``: what a step is,
    ``"second"`` or ``"request"`` (counted by the middleware of
    :mod:`tokdiag.recording.middleware` or :meth:`Recorder.count_request`).
    ``every_requests``: with ``per="request"``, also a snapshot after every N
    requests. ``for_s``: stop by itself after that many seconds.
    ``watch``, ``caches``, ``census``, ``alloc_sites``, ``uss``,
    ``collect``, ``why_alive``: as :class:`tokdiag.Tracker`.
    ``budget_mb``: stop recording (not the service) when RSS passes it;
    a snapshot whose own peak would take the service past it measures only
    the process and the census (as :class:`tokdiag.Tracker` does).
    ``max_mb``: the journal's cap. ``overhead``: the largest share of the
    time one snapshot may pause the service before the next is put off.
    ``{pid}`` in ``journal`` is replaced by the process id. ``disk``:
    directories the service writes, to follow (:class:`tokdiag.probes.DiskProbe`).
    ``limit``: the memory limit the service is killed at (``"4GiB"``), for
    the time to the limit; default: the cgroup's, recorded anyway.

    >>> import tokdiag as td, tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "service.jsonl")
    >>> with td.record(path, every_s=60, census=False) as rec:
    ...     pass
    >>> rec.status, td.load(path).status
    ('stopped', 'stopped')
    """
    rec = Recorder(journal, every_s=every_s, every_requests=every_requests, per=per, for_s=for_s, watch=watch,
                   caches=caches, census=census, alloc_sites=alloc_sites, uss=uss, collect=collect,
                   why_alive=why_alive, budget_mb=budget_mb, max_mb=max_mb, overhead=overhead, overwrite=overwrite,
                   name=name, disk=disk, limit=limit)
    return rec.start()

