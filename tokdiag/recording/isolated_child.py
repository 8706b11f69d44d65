"""The child process of :func:`tokdiag.recording.isolated.track_isolated`: one tracked run, reported to the parent.

It reads the spec as JSON on stdin, dies with its parent (``prctl`` and a
watchdog thread that also enforces the timeout), builds the step function
from the factory, runs ``td.track`` writing the journal, and reports how it
ended in the status file. Started as ``python -m tokdiag.recording.isolated_child``.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from typing import Any

from tokdiag.errors import TargetError
from tokdiag.recording.factories import build_step, json_safe
from tokdiag.recording.journal import JournalWriter

__all__ = ["CHILD_TIMEOUT_MARGIN_S", "child_main"]

CHILD_TIMEOUT_MARGIN_S = 3.0
"""The child ends itself this long after ``timeout`` (the parent normally kills it at ``timeout``)."""
_WATCHDOG_POLL_S = 0.5
_PR_SET_PDEATHSIG = 1


class _Status:
    """The child's report to the parent: one JSON object in the status file, replaced atomically."""

    def __init__(self, path: str) -> None:
        self.path = path

    def write(self, outcome: str, **fields: Any) -> None:
        tmp = f"{self.path}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump({"outcome": outcome, **fields}, fh, default=str)
        os.replace(tmp, self.path)


def _die_with_parent(parent: int) -> int:
    """Ask Linux to SIGKILL this process when its parent dies; the parent pid to watch from here on."""
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - no prctl: the watchdog alone
            pass
    watched = os.getppid()
    if watched != parent:  # started through a wrapper, or the parent is already gone
        try:
            os.kill(parent, 0)
        except ProcessLookupError:
            os._exit(1)
        except PermissionError:  # pragma: no cover - alive, owned by someone else
            pass
    return watched


def _start_watchdog(watched: int, deadline: float | None, status: _Status) -> None:
    """A daemon thread that ends this process when the parent is gone or the deadline has passed."""
    import threading

    def watch() -> None:
        while True:
            time.sleep(_WATCHDOG_POLL_S)
            if os.getppid() != watched:  # reparented: the parent died (no one is left to report to)
                os._exit(1)
            if deadline is not None and time.monotonic() > deadline:
                try:
                    status.write("timeout")
                finally:
                    os._exit(1)

    threading.Thread(target=watch, name="tokdiag-isolated-watchdog", daemon=True).start()


def _first_sigint_only(signum: int, frame: Any) -> None:
    """SIGINT handler: the first one interrupts the workload; repeats are ignored so the last lines get written."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def _report_failure(status: _Status, exc: BaseException) -> int:
    """Write how the child's work ended with ``exc`` to its status file; the child's exit code."""
    import traceback

    if isinstance(exc, KeyboardInterrupt):
        status.write("interrupted")
        return 130
    text = "".join(traceback.format_exception(exc))
    if isinstance(exc, SystemExit):
        status.write("exit", code=exc.code, traceback=text)
        return 1
    sys.stderr.write(text)
    status.write("error", traceback=text)
    return 1


def child_main() -> int:  # pragma: no cover - runs in the child process (covered by tests through subprocess)
    spec = json.loads(sys.stdin.read())
    status = _Status(spec["status"])
    watched = _die_with_parent(int(spec["parent"]))
    timeout = spec.get("timeout")
    _start_watchdog(watched, None if timeout is None else time.monotonic() + timeout + CHILD_TIMEOUT_MARGIN_S,
                    status)
    signal.signal(signal.SIGINT, _first_sigint_only)

    import tokdiag as td

    try:
        step = build_step(spec["factory"], spec["kwargs"])
    except TargetError as exc:  # a bad target: the message says it all, no traceback needed
        status.write("bad_factory", message=str(exc))
        return 1
    except BaseException as exc:  # the factory itself raised (or exited, or Ctrl-C)
        return _report_failure(status, exc)
    try:
        td.track(step, steps=spec["steps"], journal=spec["journal"], overwrite=True, progress=False,
                 **spec["options"])
    except BaseException as exc:
        return _report_failure(status, exc)
    values = {name: json_safe(getattr(step, name, None)) for name in spec["report"]}
    with JournalWriter(spec["journal"], None) as journal:  # appended after the run's end line
        journal.event("workload", values=values)
    status.write("ok")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(child_main())
