"""The step loop: when to snapshot, what to measure, and writing it all down.

Two forms, one engine::

    run = td.track(step, steps=500, watch=["RewardAgent"])      # a callable per step

    with td.Tracker(watch=["RewardAgent"]) as tr:                # the loop form
        for i in tr.steps(500):
            do_work(i)
    run = tr.run

Snapshots are labelled by the number of steps completed: step 0 is taken
before the first step, then every ``every`` steps, and always after the
last. ``every="auto"`` (the default) keeps the snapshots' own cost under
``overhead`` (5%) of the run's time, but takes at least ``min_snapshots``
over a run of known length so verdicts have enough points; the cost of
every snapshot is recorded (``tracker/tokdiag/snapshot_s``), and so is
the most it raised the process's RSS above where the snapshot started
(``tracker/tokdiag/snapshot_peak_bytes``, read at checkpoints of the walks:
:mod:`tokdiag.probes.footprint`).

Before each snapshot the tracker runs ``gc.collect()`` (``collect=False``
to measure garbage too). Between snapshots it holds nothing the workload
made: records are written to the journal and dropped, the heap list is
released, classes are remembered by weak reference.

A step is never recorded twice: when a step raises, the state it left is
snapshotted unless that step count was snapshotted already. When the run
ends with an exception (the step raised, or Ctrl-C), the journal is kept,
even the default temporary one, the Run is in ``tracker.run``, and a note
on the exception (``exc.__notes__``, shown under its traceback) names the
journal and how to load it: no snapshot is lost with the exception.

A step that calls ``os.fork()`` gets a child that shares the tracker: the
child takes no snapshot and writes nothing to the journal (the run belongs
to the parent); a child that returns into ``td.track``'s loop instead of
ending with ``os._exit()`` gets a :class:`~tokdiag.errors.TokdiagError`
at the end saying so.

``td.track`` and ``td.atrack`` (a step function called under a
Tracker, ``async def`` steps included) are in :mod:`tokdiag.recording.steps`;
the probes a snapshot runs, and their order, in :mod:`tokdiag.recording.probe_set`.
"""

from __future__ import annotations

import gc
import os
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from tokdiag.errors import ConfigError, TokdiagWarning
from tokdiag.probes import Probe
from tokdiag.probes.sizing import deep_sizes
from tokdiag.recording.journal import JournalWriter, make_header, read_journal
from tokdiag.recording.options import check_caches, check_every, check_number, check_params, check_steps, check_whole
from tokdiag.recording.pacing import Pacing
from tokdiag.recording.probe_set import ProbeSet
from tokdiag.recording.progress import ProgressBar, progress_bar
from tokdiag.recording.run import Run
from tokdiag.records import BYTES, SECONDS, Record

_MiB = 1024 * 1024


class Tracker(Pacing):
    """Snapshot memory over the steps of a workload; see the module docstring.

    Parameters
    ----------
    watch:
        Class names to count and size: qualified (``"app.agents.RewardAgent"``),
        bare (``"RewardAgent"``) or glob (``"*.MemoryEventMessage"``). A name
        that matches no class in the process is a :class:`TokdiagWarning`
        at the end, with close matches.
    caches:
        ``"module:attr"`` strings, callables or objects (see :func:`tokdiag.cache`),
        e.g. ``["myapp.llm:_TOKENIZERS", *td.presets.tiktoken()]``; one
        ``"module:attr"`` string alone is taken as a list of one.
    every:
        Snapshot every k steps, or ``"auto"``.
    census:
        Count and size every type on the heap at each snapshot (untracked
        objects included: strings, bytes, numbers).
    containers:
        Find growing containers from the modules without hints
        (:mod:`tokdiag.probes.containers`): ``logging:Logger.manager.loggerDict``.
    alloc_sites:
        Top N tracemalloc allocation sites per snapshot (0 = off; tracing
        slows allocation-heavy code several times).
    journal:
        Where to append the journal (JSON lines). Default: a temporary file
        that is removed once the run is loaded back, unless the run ends
        with an exception (then it is kept and named in a note on it).
        One journal has one writer at a time: a path another run is
        writing is refused.
    budget_mb:
        Stop the workload cleanly when RSS passes this many MiB; the journal
        records why. tokdiag's own memory counts against it: a snapshot that
        would take the process past the budget (its RSS plus the peak the
        last full snapshot added, scaled to the RSS now; 10% of RSS before
        any was measured) measures only the process and the census, and
        a warning (``budget: ...``, in the journal and once as a
        :class:`TokdiagWarning`) names the probes it skipped; ``why_alive``
        at the end is skipped the same way when its index of the heap
        (:data:`RETENTION_BYTES_PER_OBJECT`) would pass the budget.
    collect:
        ``gc.collect()`` before each snapshot.
    why_alive:
        At the end, record reference chains for watched classes that grew.
    disk:
        Directories (or files) whose bytes and files to follow, as
        :class:`tokdiag.probes.DiskProbe` takes them: a path, a list, or a
        ``{label: path}`` mapping (a store that is never pruned is a leak
        of its own, on disk).
    probes:
        More probes (:class:`tokdiag.probes.Probe`), run at each snapshot
        after tokdiag's own. One of a kind tokdiag adds by default
        (``AllocatorProbe()``, ``NativeProbe()`` with the census) takes that
        one's place, so passing it with options never measures twice.
    progress:
        Show a progress line (:func:`tokdiag.recording.progress.progress_bar`:
        in a notebook an output updated in place, removed when the run
        completes; in a terminal tqdm on stderr).
    """

    def __init__(
        self,
        *,
        watch: Sequence[str] = (),
        caches: Sequence[Any] = (),
        every: int | str = "auto",
        census: bool = True,
        containers: bool = True,
        alloc_sites: int = 0,
        uss: bool = False,
        journal: str | os.PathLike[str] | None = None,
        overwrite: bool = False,
        budget_mb: float | None = None,
        collect: bool = True,
        progress: bool = True,
        name: str | None = None,
        why_alive: bool = True,
        overhead: float = 0.05,
        min_snapshots: int = 20,
        params: dict[str, Any] | None = None,
        probes: Sequence[Probe] = (),
        disk: Any = None,
    ) -> None:
        self.every = check_every(every)
        if budget_mb is not None:
            check_number("budget_mb", budget_mb, "must be a positive, finite number of MiB (e.g. 4096), "
                                                 "or None for no budget")
        check_number("overhead", overhead, "must be a fraction of run time between 0 and 1, e.g. 0.05", high=1)
        check_whole("alloc_sites", alloc_sites, 0, "must be 0 (off) or a positive number of sites")
        if isinstance(watch, str):
            watch = [watch]
        caches = check_caches(caches)
        self.budget_bytes = None if budget_mb is None else int(budget_mb * _MiB)
        self.collect = collect
        self.progress = progress
        self.why_alive = why_alive
        self.overhead = overhead
        self.min_snapshots = check_whole("min_snapshots", min_snapshots, 1, "must be a whole number >= 1, e.g. 20")
        self.name = name or (Path(journal).stem if journal else "run")
        self._journal_path = Path(journal) if journal else None
        self._overwrite = overwrite
        self._temp_journal = journal is None

        self._probes = ProbeSet(watch=watch, caches=caches, census=census, containers=containers,
                                alloc_sites=alloc_sites, uss=uss, probes=probes, disk=disk)
        self._params = {
            "watch": list(watch), "caches": [s.label for s in self._probes.specs], "every": self.every,
            "census": census, "containers": containers, "alloc_sites": alloc_sites, "budget_mb": budget_mb,
            "collect": collect,
            **({"disk": sorted(self._probes.disk.paths)} if self._probes.disk is not None else {}),
            **check_params(params),
        }
        self.run: Run | None = None
        self._writer: JournalWriter | None = None
        self._bar: ProgressBar | None = None
        self._ended = False
        self._started = False
        self._pid = os.getpid()
        self._last_step: int | None = None
        self._peak: tuple[int, int] | None = None  # (own peak, RSS at its start) of the last full snapshot
        self._gc_objects = 0  # gc-tracked objects at the last snapshot
        self._light_warned = False

    # -- lifecycle -----------------------------------------------------------
    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if not self._started or self._ended:
            return
        if exc_type is None:
            self._finish("completed", f"stopped by the caller after {self._done} steps")
            return
        if issubclass(exc_type, KeyboardInterrupt):
            self._finish("interrupted", f"interrupted after {self._done} steps")
        else:
            self._finish("error", f"{exc_type.__name__}: {exc} (after {self._done} steps)")
        if self.run is not None and isinstance(exc, BaseException):
            path = str(self._journal_path)
            exc.add_note(f"tokdiag: the run {self.run.name!r} ({self.run.status} after {self._done} steps, "
                         f"{len(self.run.steps)} snapshots) is kept in the journal {path}; "
                         f"load it with td.load({path!r})")

    def _forked(self) -> bool:
        """True in a fork() of the process that started this run: it must not snapshot or write."""
        return os.getpid() != self._pid

    def start(self, total: int | None = None) -> None:
        """Begin a run whose steps the caller counts (a service recorder): then :meth:`snapshot` and :meth:`finish`."""
        self._start(total)

    def _start(self, total: int | None) -> None:
        if self._started:
            raise ConfigError("this Tracker has already run; create a new Tracker (or call td.track) for another run")
        if self._journal_path is None:
            fd, tmp = tempfile.mkstemp(prefix=f"tokdiag-{self.name}-", suffix=".jsonl")
            os.close(fd)
            self._journal_path = Path(tmp)
            self._overwrite = True
        params = {"steps": total, **self._params}
        try:
            self._writer = JournalWriter(self._journal_path, make_header(self.name, params), overwrite=self._overwrite)
        except BaseException:
            if self._temp_journal:  # nothing was recorded: leave no empty temporary file behind
                self._journal_path.unlink(missing_ok=True)
                self._journal_path = None
            raise
        self._started = True
        if self._probes.alloc is not None:
            self._probes.alloc.start()
        self._t0 = time.perf_counter()
        self._done = 0
        self._total = total
        self._work_s = 0.0
        self._steps_since = 0
        self._next = 0
        self._snapshots = 0
        self._first_counts: dict[str, float] = {}
        self._last_counts: dict[str, float] = {}
        self._baseline_mark: list[Any] | None = None  # tracked after the first snapshot: why_alive's newer_than
        self._bar = progress_bar(total, self.name, enabled=self.progress)

    # -- the loop ------------------------------------------------------------
    def steps(self, n: int) -> Iterator[int]:
        """Yield ``0 .. n-1``, snapshotting as it goes; stops early when the budget is passed."""
        n = check_steps(n)
        self._start(n)
        self._snapshot(0)
        rss_now = self._probes.process.rss
        for i in range(n):
            t = time.perf_counter()
            yield i
            self._work_s += time.perf_counter() - t
            self._done = i + 1
            self._steps_since += 1
            if self._bar is not None and not self._forked():
                self._bar.update(1)
            if self.budget_bytes is not None:
                rss = rss_now()
                if rss > self.budget_bytes:
                    self._snapshot(self._done)  # a light one: a full one would add its own peak past the budget
                    self._event("budget", f"RSS {rss / _MiB:.0f} MiB passed budget_mb={self.budget_bytes / _MiB:.0f} "
                                          f"after {self._done} steps; the workload was stopped")
                    self._finish("budget", f"stopped after {self._done} of {n} steps: RSS {rss / _MiB:.0f} MiB "
                                           f"> budget {self.budget_bytes / _MiB:.0f} MiB")
                    return
            if self._done == n or self._done >= self._next:
                self._snapshot(self._done)
        self._finish("completed", f"{n} steps")

    def snapshot(self, step: int | None = None) -> None:
        """Take a snapshot now, labelled ``step`` (default: the steps completed; e.g. from inside a long step).

        Does nothing when this step count has a snapshot already (a step is
        never recorded twice) or in a fork() of the tracking process.
        """
        if not self._started:
            raise ConfigError("snapshot() before the run started: iterate tracker.steps(n) first")
        if step is not None:
            self._done = int(step)
        self._snapshot(self._done)

    def finish(self, reason: str = "completed", message: str = "", *, load: bool = True) -> None:
        """End the run with ``reason`` (its ``status``); ``load=False`` leaves :attr:`run` None (a service's
        recorder)."""
        self._finish(reason, message, load=load)

    def _snapshot(self, step: int) -> None:
        if step == self._last_step or self._forked():
            return
        t = time.perf_counter()
        cpu = time.thread_time()
        if self.collect:
            gc.collect()
        probes = self._probes_within_budget(step)
        records, meter = self._probes.measure(probes)
        if probes is self._probes.all:  # a full snapshot: the estimate for the next one
            self._peak = (meter.peak, meter.start)
        cost = time.perf_counter() - t
        records.append(Record("tracker", "tokdiag", "snapshot_s", cost, SECONDS))
        records.append(Record("tracker", "tokdiag", "snapshot_cpu_s", time.thread_time() - cpu, SECONDS))
        records.append(Record("tracker", "tokdiag", "snapshot_peak_bytes", float(meter.peak), BYTES))
        records.append(Record("tracker", "tokdiag", "self_bytes", float(self._self_bytes()), BYTES))
        assert self._writer is not None
        self._writer.snapshot(step, time.perf_counter() - self._t0, records)
        for message in self._probes.new_warnings():  # each probe's warnings, once
            self._writer.write({"kind": "warning", "message": message})
        self._last_step = step
        self._snapshots += 1
        if self._snapshots == 1:
            self._baseline_mark = []  # what the collector tracks after this appeared during the run
        for r in records:
            if r.probe == "process" and r.metric == "gc_objects":
                self._gc_objects = int(r.value)
            if r.probe == "watch" and r.metric == "count":
                self._first_counts.setdefault(r.subject, r.value)
                self._last_counts[r.subject] = r.value
            elif r.probe == "process" and r.metric == "rss" and self._bar is not None:
                self._bar.set_note(f"RSS {r.value / _MiB:.0f} MiB · {self._snapshots} snapshots")
        del records
        self._schedule(step, cost)

    def _self_bytes(self) -> int:
        return deep_sizes([self._first_counts, self._last_counts, self._params, *self._probes.kept()])

    def event(self, event: str, message: str) -> None:
        """Journal an ``event`` line at the current step (e.g. a recorder putting off its next snapshot)."""
        self._event(event, message)

    def _event(self, event: str, message: str) -> None:
        assert self._writer is not None
        if self._forked():
            return
        self._writer.event(event, step=self._done, elapsed_s=time.perf_counter() - self._t0, message=message)

    def _finish(self, reason: str, message: str, *, load: bool = True) -> None:
        if self._ended:
            return
        self._ended = True
        writer = self._writer
        assert writer is not None
        if self._forked():  # the run, its journal and its progress bar belong to the parent
            return
        try:
            if reason in ("error", "interrupted") and self._done and self._snapshots:
                try:  # the state when it broke is evidence too (skipped if this step count has one)
                    self._snapshot(self._done)
                except (Exception, KeyboardInterrupt):  # a second Ctrl-C must not cost the end line
                    pass
            for msg in self._probes.unmatched_watch():
                warnings.warn(msg, TokdiagWarning, stacklevel=4)
                writer.write({"kind": "warning", "message": msg})
            if self._probes.watch is not None and self.why_alive and reason != "interrupted":
                self._record_retention(writer)
            writer.write({"kind": "end", "reason": reason, "step": self._done,
                          "elapsed_s": time.perf_counter() - self._t0, "message": message})
        finally:
            writer.close()
            if self._probes.alloc is not None:
                self._probes.alloc.stop()
            if self._bar is not None:  # a completed run's bar goes in a notebook; one that stopped shows where
                self._bar.close(keep=reason != "completed")
            self._bar = None
        assert self._journal_path is not None
        if not load:
            return
        self.run = Run.from_journal(read_journal(self._journal_path), live=True)
        if self._temp_journal and reason not in ("error", "interrupted"):
            self._journal_path.unlink(missing_ok=True)
            self.run.journal = None
