"""Track a workload in a fresh Python process, so runs do not disturb each other.

RSS is a property of a process, and a process remembers: memory freed by one
workload stays in the allocator's free lists and is handed to the next, so a
second workload run in the same process can look flat when on its own it
would grow by tens of MB (a tiktoken vocabulary loaded for the second time
reuses the pages of the first). A notebook that compares scenarios side by
side should run each in a fresh interpreter, e.g. the built-in tokenizer
scenarios::

    from tokdiag.recording.isolated import track_isolated
    run = track_isolated("tokdiag_workloads.tokenizers:per_instance_load",
                         {"vocab": "cl100k_base", "keep": True},
                         steps=12, every=1, journal="runs/per_instance.jsonl",
                         caches=["tokdiag_workloads.tokenizers.caches:_KEPT_TOKENIZERS"],
                         report=["steps_run"])
    run.verdicts()
    run.events[-1]["values"]          # {"steps_run": 12}

``factory`` names a callable (``"package.module:function"``) that is called
once in the child with ``kwargs`` and returns the step function; the child
runs :func:`tokdiag.track` on it with the given tracker options, writing the
journal, and the parent loads the :class:`~tokdiag.Run` back from the journal
alone (:func:`tokdiag.load`). The child's progress bar is off; its stderr is
kept and shown when it fails. ``report`` names attributes of the step object
to read after the run; their values (made JSON-safe) are appended to the
journal as an ``event`` line ``{"kind": "event", "event": "workload",
"values": {...}}``.

Everything passed must be JSON: factory kwargs and tracker options travel to
the child on its standard input. Caches and watch patterns are given as
strings (``"module:attr"``, class names), as the child resolves them itself.

How the child's run ends is reported on a channel of its own, a small
status file, never through its exit code (a workload may call
``sys.exit(3)`` or ``os._exit(2)`` itself):

- the workload raised, or called ``sys.exit()``: :class:`TokdiagError` with
  the child's traceback, naming the journal that keeps the snapshots;
- the factory does not resolve or returns no step function:
  :class:`~tokdiag.errors.TargetError`;
- the child died without reporting (the OOM killer, a segfault in a C
  extension, ``os._exit()`` in the workload, ``timeout``): the run is
  returned with status ``"killed"`` and the message says how the child
  ended; the journal keeps every finished snapshot;
- Ctrl-C: the child gets one SIGINT (the parent forwards it; repeats are
  ignored while the child writes its last lines), records ``interrupted``,
  and the parent waits up to ``_INTERRUPT_GRACE_S`` seconds for it, then
  raises :class:`KeyboardInterrupt` with a note naming the journal.

The child never outlives the parent: on Linux it asks the kernel for
SIGKILL when its parent dies (``prctl(PR_SET_PDEATHSIG)``), and everywhere
a watchdog thread ends it when its parent is gone or when ``timeout`` (plus
``_CHILD_TIMEOUT_MARGIN_S``) has passed, in case the parent cannot kill it.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tokdiag.errors import ConfigError, JournalError, TargetError, TokdiagError
from tokdiag.recording.factories import build_step, check_factory, spec_json
from tokdiag.recording.journal import read_header
from tokdiag.recording.run import Run, load

__all__ = ["STDERR_TAIL", "build_step", "check_factory", "spec_json", "track_isolated"]

STDERR_TAIL = 2000
_INTERRUPT_GRACE_S = 15.0
"""After Ctrl-C, how long the parent waits for the child to record ``interrupted`` before killing it."""


def _check_journal_path(journal: Path) -> None:
    """The journal may be replaced only if it is a tokdiag journal (or absent)."""
    if journal.is_dir():
        raise ConfigError(f"journal {str(journal)!r} is a folder; pass the path of a file in it, "
                          f"e.g. {str(journal / 'run.jsonl')!r}")
    if journal.exists() and journal.stat().st_size:
        try:
            read_header(journal)
        except JournalError:
            raise ConfigError(f"journal {str(journal)!r} exists and is not a tokdiag journal; track_isolated "
                              "replaces only its own journals: pass another path") from None


def _how_it_ended(returncode: int | None, timeout: float | None) -> str:
    if returncode is None:
        return f"timed out after {timeout} s and was killed"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        hint = " (the OOM killer?)" if -returncode == signal.SIGKILL else ""
        return f"was killed by {name}{hint}"
    return f"ended with exit code {returncode} before reporting (os._exit() in the workload, or a crash)"


def _wind_down(proc: subprocess.Popen[str]) -> str:
    """After Ctrl-C in the parent: let the child record ``interrupted`` (up to the grace period); its stderr."""
    deadline = time.monotonic() + _INTERRUPT_GRACE_S
    try:
        proc.send_signal(signal.SIGINT)  # the child may not have had one (e.g. a notebook kernel interrupt)
    except ProcessLookupError:
        pass
    while True:
        try:
            return proc.communicate(timeout=max(0.0, deadline - time.monotonic()))[1] or ""
        except KeyboardInterrupt:
            continue  # the child is already winding down and ignores repeats
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.communicate()[1] or ""


def track_isolated(
    factory: str,
    kwargs: Mapping[str, Any] | None = None,
    *,
    steps: int,
    journal: str | os.PathLike[str],
    report: Sequence[str] = (),
    timeout: float | None = None,
    progress: bool = True,
    **options: Any,
) -> Run:
    """Run ``factory(**kwargs)`` as a tracked workload in a child process and return its Run.

    ``options`` are :class:`tokdiag.Tracker` options (``every``, ``watch``,
    ``caches`` as strings, ``census``, ``budget_mb``, ``name``, ...), passed
    through JSON. The journal is replaced if it is one already (another
    file at that path is refused). ``timeout`` (seconds) kills the child when
    it runs too long; the run then has status ``"killed"``. How each other
    ending is reported: see the module docstring. ``progress``: the parent
    follows the journal the child writes and shows a progress line
    (:func:`tokdiag.recording.progress.progress_bar`: in a notebook an output
    updated in place, gone when the run completes), from the child's start
    (``starting``) through each snapshot.
    """
    check_factory(factory)
    if type(progress) is not bool:
        raise ConfigError(f"progress={progress!r}: pass True (show a progress line) or False")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                or not 0 < timeout < float("inf")):
        raise ConfigError(f"timeout={timeout!r}: must be a positive number of seconds, or None for no limit")
    journal_path = Path(journal)
    _check_journal_path(journal_path)
    fd, status_file = tempfile.mkstemp(prefix="tokdiag-isolated-", suffix=".json")
    os.close(fd)
    spec = {"factory": factory, "kwargs": dict(kwargs or {}), "steps": steps, "journal": str(journal),
            "report": list(report), "options": options, "status": status_file, "parent": os.getpid(),
            "timeout": timeout}
    try:
        payload = spec_json(spec, "track_isolated: kwargs and options must be JSON values (strings for caches and "
                                  "watch patterns, no NaN)")
    except ConfigError:
        os.unlink(status_file)
        raise
    journal_path.parent.mkdir(parents=True, exist_ok=True)
    interrupted = False
    restore_sigint: Callable[[], object] = lambda: None  # noqa: E731  (replaced once Ctrl-C is ignored)
    try:
        proc = subprocess.Popen([sys.executable, "-m", "tokdiag.recording.isolated_child"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            stderr = _communicate(proc, payload, timeout, journal_path, progress, steps, options.get("name"))
            returncode: int | None = proc.returncode
        except subprocess.TimeoutExpired:
            proc.kill()
            stderr = proc.communicate()[1] or ""
            returncode = None
        except KeyboardInterrupt:
            interrupted = True
            restore_sigint = _ignore_sigint()  # more Ctrl-C must not cut short what follows
            stderr = _wind_down(proc)
            returncode = proc.returncode
        finally:
            if proc.poll() is None:  # an unexpected error here: never leave the child behind
                proc.kill()
                proc.wait()
        status = _read_status(status_file)
    finally:
        Path(status_file).unlink(missing_ok=True)
    try:
        return _outcome(factory, journal_path, proc.pid, status, returncode, stderr, timeout, interrupted)
    finally:
        restore_sigint()


def _communicate(proc: subprocess.Popen[str], payload: str, timeout: float | None, journal: Path, progress: bool,
                 steps: int, name: object) -> str:
    """Send ``payload``, wait for the child (up to ``timeout``), drawing its progress; its stderr.

    Raises :class:`subprocess.TimeoutExpired` as ``communicate`` does. With
    ``progress`` the child's journal is read every
    :data:`~tokdiag.recording.progress.REFRESH_S` seconds (only lines under
    a header with the child's pid) and the bar follows its snapshots.
    """
    if not progress:
        return proc.communicate(payload, timeout=timeout)[1] or ""
    from tokdiag.recording.progress import REFRESH_S, JournalFollower, progress_bar

    bar = progress_bar(steps, str(name or journal.stem), enabled=True)
    assert bar is not None
    follower = JournalFollower(journal, proc.pid)
    bar.set_note("starting")
    deadline = None if timeout is None else time.monotonic() + timeout
    sent: str | None = payload
    completed = False
    try:
        while True:
            wait = REFRESH_S if deadline is None else min(REFRESH_S, max(0.0, deadline - time.monotonic()))
            try:
                stderr = proc.communicate(sent, timeout=wait)[1] or ""
                completed = True
            except subprocess.TimeoutExpired:
                if deadline is not None and time.monotonic() >= deadline:
                    raise subprocess.TimeoutExpired(proc.args, timeout or 0.0) from None
                stderr = ""
            sent = None  # the input goes once; later calls only wait (output is kept between them)
            if follower.poll() and follower.step is not None:
                bar.set_steps(follower.step)
                rss = f"RSS {follower.rss / 2**20:.0f} MiB · " if follower.rss is not None else ""
                bar.set_note(f"{rss}{follower.snapshots} snapshots")
            if completed:
                return stderr
    finally:
        follower.poll()
        done = completed and follower.step == steps
        bar.close(keep=not done)


def _ignore_sigint() -> Callable[[], object]:
    """Ignore SIGINT from now on; returns what puts the handler back."""
    try:
        previous = signal.getsignal(signal.SIGINT)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    except ValueError:  # not the main thread: repeated Ctrl-C are absorbed in _wind_down instead
        return lambda: None
    return lambda: signal.signal(signal.SIGINT, signal.default_int_handler if previous is None else previous)


def _read_status(path: str) -> dict[str, Any]:
    try:
        status = json.loads(Path(path).read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return status if isinstance(status, dict) else {}


def _outcome(factory: str, journal: Path, child_pid: int, status: dict[str, Any], returncode: int | None,
             stderr: str, timeout: float | None, interrupted: bool) -> Run:
    """The Run, or the error, for how the child ended (its status report first, then its exit)."""
    outcome = status.get("outcome")
    tail = stderr[-STDERR_TAIL:].strip()
    if outcome == "bad_factory":
        raise TargetError(str(status.get("message") or tail or f"factory {factory!r} could not be used"))
    try:
        wrote = journal.is_file() and read_header(journal).get("pid") == child_pid
    except JournalError:
        wrote = False
    if not wrote:  # nothing of this run on disk (the file there, if any, is an earlier run's)
        if interrupted:
            raise KeyboardInterrupt
        detail = str(status.get("traceback") or tail or "(empty)")
        raise TokdiagError(f"track_isolated({factory!r}): the child process wrote no journal (it "
                           f"{_how_it_ended(returncode, timeout) if outcome is None else 'failed first'}); "
                           f"its report ends with:\n{detail[-STDERR_TAIL:]}")
    run = load(journal)
    where = f"the journal {str(journal)!r} keeps the snapshots taken before: td.load({str(journal)!r})"
    if interrupted:
        exc = KeyboardInterrupt()
        exc.add_note(f"tokdiag: the child's run ({run.status} after {run.steps[-1] if run.steps else 0} steps) "
                     f"is kept in the journal {str(journal)}; load it with td.load({str(journal)!r})")
        raise exc
    if outcome == "error":
        raise TokdiagError(f"track_isolated({factory!r}) failed in the child process ({where}):\n"
                           f"{str(status.get('traceback', ''))[-STDERR_TAIL:]}")
    if outcome == "exit":
        raise TokdiagError(f"track_isolated({factory!r}): the workload called sys.exit({status.get('code')!r}) "
                           f"in the child process, after {run.steps[-1] if run.steps else 0} steps ({where}):\n"
                           f"{str(status.get('traceback', ''))[-STDERR_TAIL:]}")
    if outcome in ("ok", "interrupted"):  # interrupted on its own (a SIGINT sent to the child alone)
        return run
    how = "ended itself at its own timeout" if outcome == "timeout" else _how_it_ended(returncode, timeout)
    run.status = "killed"
    run.message = f"child process {how}; stderr: {tail or '(empty)'}"
    return run
