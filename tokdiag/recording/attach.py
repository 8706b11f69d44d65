"""``tokdiag attach PID``: record a running Python service without changing its code.

::

    tokdiag attach 12345 --for 10m --every 30s --watch RewardAgent -o service.jsonl
    python -c "import tokdiag as td; print(td.load('service.jsonl').verdicts())"

What happens:

1. The target is checked from outside (``/proc``): it exists, it is a
   CPython 3.11-3.13 of the same minor version as this one, it may be
   traced. With ``--children`` (the default) its Python child processes
   (uvicorn/gunicorn workers, a multiprocessing pool) are attached too, one
   journal each (:func:`tokdiag.recording.service.journal_for`).
2. A few lines of Python are queued in each (:mod:`tokdiag.recording._inject`:
   ptrace, ``Py_AddPendingCall``); the target's main thread runs them at its
   next safe point. They start a daemon thread, ``tokdiag-attach``, and
   return at once; everything else happens on that thread.
3. The thread connects to a Unix socket this command listens on (only the
   target's pid is accepted), imports tokdiag (from the target's own
   environment, or from this one's, appended to the end of ``sys.path``
   while recording, so the service's own packages still win), receives the
   options, and runs a :class:`~tokdiag.recording.recorder.Recorder` writing
   the journal itself: a step is a second since the attach started, on the
   ``--every`` grid shared by all attached processes.
4. It stops by itself: after ``--for``, when this command sends stop
   (Ctrl-C or SIGTERM), or when this command's end of the socket closes for any
   reason (killed, even with SIGKILL; its terminal closed). Then it takes a
   last snapshot, records why-alive chains for watched classes that grew,
   ends the journal, restores ``sys.path``, and its thread returns: no
   tokdiag thread remains in the service.

What stays in the service afterwards: the modules tokdiag imported
(tokdiag, numpy, pandas, psutil: tens of MB the first time, measured in
``bench/recorder.py``) and one 4 KiB page that held the queued code.

Requirements, each checked with an error naming the fix: Linux on x86-64;
the same CPython minor version (3.11, 3.12 or 3.13) on both sides; the
right to ptrace the target (the same user with
``/proc/sys/kernel/yama/ptrace_scope`` 0, or root / ``CAP_SYS_PTRACE``;
in a container ``--cap-add=SYS_PTRACE``); tokdiag and its dependencies
importable in the target or in this environment; a journal path the
target's user can write; a main thread that runs Python code now and then
(an event loop or a server loop does; one blocked for good in a C call
never runs the bootstrap, and attach says so after ``--start-timeout``).
Python 3.14's ``sys.remote_exec`` is not used yet: attach needs 3.11-3.13
for now.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from tokdiag.errors import AttachError, ConfigError, TokdiagError
from tokdiag.recording.attach_targets import check_versions, find_targets, import_paths, peer_pid
from tokdiag.recording.attach_thread import PROTOCOL, Channel, queued_code, serve_attached

__all__ = ["Attached", "attach", "attach_command", "parse_duration", "serve_attached"]

_MiB = 1024 * 1024


def parse_duration(text: str | float | int, what: str = "duration") -> float:
    """Seconds in ``"30s"``, ``"10m"``, ``"1.5h"``, ``"90"`` (seconds) or a number.

    >>> parse_duration("30s"), parse_duration("10m"), parse_duration("1.5h"), parse_duration("90")
    (30.0, 600.0, 5400.0, 90.0)
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        s = str(text).strip().lower()
        scale = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}.get(s[-1:], None)
        try:
            value = float(s[:-1] if scale else s) * (scale or 1.0)
        except ValueError:
            raise ConfigError(f"{what} {text!r}: expected a duration like 30s, 10m, 2h or a number of seconds") \
                from None
    if not value >= 0:
        raise ConfigError(f"{what} {text!r}: must not be negative")
    return value




@dataclass
class Attached:
    """One process ``tokdiag attach`` recorded (or tried to)."""

    pid: int
    journal: Path
    cmdline: str = ""
    uid: int = 0
    status: str | None = None
    """The journal's end reason (``completed``, ``interrupted``, ``detached``, ``cap``, ...); None if it never began."""
    message: str = ""
    snapshots: int = 0
    error: str | None = None
    started: bool = False
    _chan: Channel | None = field(default=None, repr=False)

    @property
    def chan(self) -> Channel:
        assert self._chan is not None, "not connected"
        return self._chan


def _say(out: TextIO | None, text: str) -> None:
    if out is not None:
        print(f"tokdiag attach: {text}", file=out, flush=True)


def _import_error(a: Attached, m: dict[str, Any]) -> str:
    where = m.get("tokdiag_file")
    ours = Path(__file__).resolve().parents[1] / "__init__.py"
    install = ("install tokdiag and its dependencies in the service's environment "
               f"({m.get('executable') or 'its python'} -m pip install tokdiag)")
    if where and Path(where).resolve() != ours:
        fix = (f"the service finds tokdiag at {where}, not this tokdiag ({ours}): {install} at this version, or "
               "take the other one off its path")
    else:
        looked = f" (it also looked in {', '.join(m['added'])})" if m.get("added") else ""
        fix = f"{install}{looked}"
    return f"pid {a.pid} could not import tokdiag's recorder: {m.get('message')}; {fix}"


def attach(pids: Sequence[int], journal: str | os.PathLike[str], *, for_s: float | None = 600.0,
           every_s: float = 30.0, watch: Sequence[str] = (), caches: Sequence[str] = (), census: bool = True,
           budget_mb: float | None = None, max_mb: float = 64.0, overhead: float = 0.05, overwrite: bool = False,
           children: bool = True, start_timeout: float = 10.0, disk: Sequence[str] = (),
           limit: int | float | str | None = None, out: TextIO | None = sys.stderr) -> list[Attached]:
    """Record ``pids`` (and their Python children) into journals until ``for_s`` passes or Ctrl-C; see the module.

    ``disk``: directories the service writes, whose bytes and files each
    recorder follows (relative paths are taken from this command's folder).
    ``limit``: the memory limit the service is killed at (``"4GiB"``),
    recorded for the time to the limit; default: the cgroup's.
    Returns one :class:`Attached` per process. Raises :class:`AttachError`
    when nothing could be started; a process that fails while others record
    has its ``error`` set. ``for_s=None`` records until Ctrl-C.
    """
    if isinstance(every_s, bool) or not isinstance(every_s, (int, float)) or every_s < 1:
        raise ConfigError(f"--every {every_s!r}: snapshots are at least 1 s apart (a step is a second), e.g. 30s")
    if for_s is not None and for_s < every_s:
        raise ConfigError(f"--for {for_s:g}s is shorter than --every {every_s:g}s: record for at least one interval "
                          "(and for 4 or more to get verdicts)")
    from tokdiag.analysis.limit import parse_size
    from tokdiag.recording._inject import queue_code
    from tokdiag.recording.service import journal_for, service_name

    limit_bytes = None if limit is None else parse_size(limit)
    disk_paths = [os.path.abspath(os.path.expanduser(d)) for d in disk]  # the service's folder is not ours

    targets = find_targets(list(pids), children=children)
    for t in targets:
        check_versions(t)
    several = len(targets) > 1
    runs = [Attached(t.pid, Path(os.path.abspath(journal_for(journal, t.pid, several))), t.cmdline, t.uid)
            for t in targets]
    for a in runs:
        if a.journal.exists() and not overwrite:
            raise AttachError(f"journal {str(a.journal)!r} already exists; will not overwrite it without --overwrite "
                              "(or pass a new -o)")
        a.journal.parent.mkdir(parents=True, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="tokdiag-attach-")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    interrupted = False
    try:
        os.chmod(tmp, 0o711)  # a service running as another user must reach the socket (the name is random)
        sock_path = os.path.join(tmp, "ctl")
        server.bind(sock_path)
        os.chmod(sock_path, 0o666)
        server.listen(len(runs))
        epoch = time.monotonic()
        code = queued_code(sock_path, import_paths())
        by_pid = {a.pid: a for a in runs}
        for t, a in zip(targets, runs, strict=False):
            try:
                queue_code(t, code)
            except AttachError as exc:
                a.error = str(exc)
        if all(a.error for a in runs):
            raise AttachError("; ".join(a.error or "" for a in runs))
        config = {"protocol": PROTOCOL, "every_s": float(every_s), "for_s": for_s, "watch": list(watch),
                  "caches": list(caches), "census": census, "budget_mb": budget_mb, "max_mb": max_mb,
                  "overhead": overhead, "overwrite": overwrite, "epoch": epoch, "attacher": os.getpid(),
                  "disk": disk_paths, "limit": limit_bytes, "service": service_name(journal)}
        _connect(server, runs, by_pid, config, start_timeout)
        interrupted = _follow(runs, epoch, for_s, every_s, out)
    finally:
        for a in runs:
            if a._chan is not None:
                a._chan.sock.close()  # a recorder still running sees the socket close and stops by itself
        server.close()
        shutil.rmtree(tmp, ignore_errors=True)
    for a in runs:
        if interrupted and a.status is None and not a.error:
            a.error = "interrupted before it reported its end"
    if all(a.error for a in runs):
        raise AttachError("; ".join(a.error or "" for a in runs))
    return runs


def _connect(server: socket.socket, runs: list[Attached], by_pid: dict[int, Attached], config: dict[str, Any],
             start_timeout: float) -> None:
    """Accept each target's connection and send it its options; mark the ones that never came."""
    waiting = {a.pid for a in runs if not a.error}
    deadline = time.monotonic() + start_timeout
    while waiting and time.monotonic() < deadline:
        server.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            conn, _ = server.accept()
        except TimeoutError:
            break
        pid = peer_pid(conn)
        a = by_pid.get(pid)
        if a is None or pid not in waiting:
            conn.close()  # not one of ours
            continue
        waiting.discard(pid)
        conn.settimeout(None)
        a._chan = Channel(conn)
        a._chan.send({**config, "journal": str(a.journal), "name": a.journal.stem})
    for pid in waiting:
        by_pid[pid].error = (
            f"pid {pid} did not run the queued bootstrap within {start_timeout:g} s: its main thread has not run "
            "Python code since (blocked in a long C call, e.g. time.sleep or a join without timeout, or stopped); "
            "nothing was started, and nothing will be (the bootstrap finds no attacher and returns); try again "
            "when the service is busy, raise --start-timeout, or use td.record(...) in the service")


def _follow(runs: list[Attached], epoch: float, for_s: float | None, every_s: float, out: TextIO | None) -> bool:
    """Relay progress until every recorder has ended; Ctrl-C sends stop. Returns whether it was interrupted."""
    live = [a for a in runs if a._chan is not None]
    interrupted = False
    stop_sent = False
    started_by = time.monotonic() + 120  # importing tokdiag (pandas, numpy) in a busy service can take a while
    grace = 120.0  # the last snapshot and the why-alive walk, after --for
    while live:
        try:
            now = time.monotonic()
            if not stop_sent and for_s is not None and now > epoch + for_s + grace:
                for a in live:
                    a.chan.send({"stop": "completed", "message": f"stopped by tokdiag attach after --for {for_s:g}s"})
                stop_sent, grace = True, grace + 60
            elif stop_sent and for_s is not None and now > epoch + for_s + grace:
                for a in live:
                    a.error = "did not report its end in time; its socket was closed, which stops it"
                break
            for a in list(live):
                if not a.started and now > started_by:
                    a.error = "accepted the bootstrap but did not start recording within 120 s"
                    live.remove(a)
                    continue
                messages = a.chan.read(0.2 / max(1, len(live)))
                if messages is None:
                    if a.status is None and not a.error:
                        a.error = "its recorder thread went away without ending the journal (did the service exit?)"
                    live.remove(a)
                    continue
                for m in messages:
                    _handle(a, m, for_s, every_s, out)
                if a.status is not None or a.error:
                    live.remove(a)
        except KeyboardInterrupt:
            if interrupted:
                raise
            interrupted = True
            _say(out, "Ctrl-C: stopping the recorders (Ctrl-C again to leave now; they stop by themselves)")
            for a in live:
                a.chan.send({"stop": "interrupted", "message": "stopped by Ctrl-C in tokdiag attach"})
            stop_sent = True
    return interrupted


def _handle(a: Attached, m: dict[str, Any], for_s: float | None, every_s: float, out: TextIO | None) -> None:
    event = m.get("event")
    if event == "started":
        a.started = True
        span = f"for {for_s:g} s" if for_s is not None else "until Ctrl-C"
        _say(out, f"pid {a.pid} ({a.cmdline[:60]}): recording every {every_s:g} s {span} into {a.journal}")
    elif event == "snapshot":
        a.snapshots = int(m.get("snapshot", a.snapshots))
        _say(out, f"pid {a.pid}: snapshot {a.snapshots} at {m.get('step')} s, RSS {m.get('rss', 0) / _MiB:.1f} MiB, "
                  f"paused the service {float(m.get('pause_s', 0)) * 1000:.0f} ms")
    elif event == "ended":
        a.status, a.message = str(m.get("status")), str(m.get("message", ""))
        a.snapshots = int(m.get("snapshots", a.snapshots))
        _say(out, f"pid {a.pid}: {a.status}: {a.message}")
    elif event == "error":
        if m.get("where") == "import":
            a.error = _import_error(a, m)
        else:
            a.error = f"pid {a.pid} could not start recording: {m.get('message')}"
            if "Permission denied" in str(m.get("message")):
                a.error += (f"; the service writes the journal itself, as uid {a.uid}: pass -o a path that user "
                            "can write")


def attach_command(args: Any) -> int:
    """``tokdiag attach``: the command line's handler (see :func:`tokdiag.cli.build_parser`)."""
    for_s = parse_duration(args.for_, "--for")
    every_s = parse_duration(args.every, "--every")
    watch = [w for item in args.watch for w in item.split(",") if w.strip()]
    pids: list[int] = []
    for p in args.pids:
        try:
            pids.append(int(p))
        except ValueError:
            raise ConfigError(f"PID {p!r}: pass process ids (numbers), e.g. tokdiag attach 12345") from None
    output = args.output or f"tokdiag-{pids[0]}.jsonl"
    # Ctrl-C and SIGTERM stop the recorders cleanly, even when this command was started with SIGINT ignored
    # (in the background of a non-interactive shell)
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, signal.default_int_handler)
    try:
        runs = attach(pids, output, for_s=for_s or None, every_s=every_s, watch=watch, caches=args.cache,
                      census=not args.no_census, budget_mb=args.budget_mb, max_mb=args.max_mb,
                      overwrite=args.overwrite, children=not args.no_children, start_timeout=args.start_timeout,
                      disk=args.disk, limit=args.limit)
    except KeyboardInterrupt:
        return 130
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    failed = [a for a in runs if a.error]
    for a in failed:
        print(f"tokdiag attach: error: {a.error}", file=sys.stderr)
    done = [a for a in runs if a.status is not None]
    from tokdiag.recording.journal import read_journal

    for a in done:  # what the recorder warned about in the service (e.g. a --watch name that matched no class)
        try:
            for warning in read_journal(a.journal).warnings:
                print(f"tokdiag attach: pid {a.pid}: warning: {warning}", file=sys.stderr)
        except TokdiagError:
            pass
    if len(done) == 1:
        print(f"tokdiag attach: read it with td.load({str(done[0].journal)!r})", file=sys.stderr)
    elif done:
        print(f"tokdiag attach: read them with td.load_service({output!r}), or: tokdiag report {output}",
              file=sys.stderr)
    if any(a.status == "interrupted" for a in runs):
        return 130
    return 1 if failed else 0
