"""The crash-safe journal: JSON lines on disk, each written to the OS as it is taken.

Every line is one JSON object with a ``kind``:

- ``header`` (always the first line): ``format``, ``tokdiag`` version,
  ``python``, ``platform``, ``pid``, ``host`` (the machine's name), ``run`` name, ``started_at``,
  ``memory_limit`` (the process' cgroup memory limit, see
  :mod:`tokdiag.probes.limits`) and the run's ``params``.
- ``snapshot``: ``step`` (steps completed), ``elapsed_s`` and ``records``,
  a list of ``{"probe", "subject", "metric", "value", "unit"}``.
- ``event``: something that happened at a step (``event``, ``message``).
- ``warning``: a warning raised during the run (e.g. a watch name that
  matched nothing).
- ``retention``: why-alive chains for one subject, taken at the end.
- ``end``: why the run stopped (``completed``, ``budget``, ``error``,
  ``interrupted``) with ``step``, ``elapsed_s`` and ``message``.

A run killed by the OOM killer or SIGKILL has no ``end`` line and perhaps a
half-written last line; :func:`read_journal` keeps every complete line and
reports the run as ``killed``. Plain pandas reads the file too:
``pd.read_json(path, lines=True)`` (one row per line).

Writing: :class:`JournalWriter` writes each line with one ``os.write`` (no
buffer to lose), holds an exclusive ``flock`` on the file while it is open
(a second writer, in this process or another, is refused by name instead of
truncating the first one's run), and never writes from a ``fork()`` of the
process that opened it: the child closes its copy of the file at the fork,
so a step that forks cannot add its snapshots to its parent's run.

Reading: :func:`read_journal` streams the file line by line into
:class:`~tokdiag.recording.timeline.TimelineColumns` (compact arrays, never a list of
every record), so loading a journal costs less memory than the file's size
plus the DataFrame. It refuses, by name, a file that is not a journal, a
journal in a newer format than this tokdiag reads, and damaged lines before
the last.
"""

from __future__ import annotations

import json
import math
import os
import platform
import socket
import sys
import weakref
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from tokdiag import _native
from tokdiag.errors import ConfigError, JournalError
from tokdiag.probes.limits import header_entry
from tokdiag.recording.timeline import TimelineColumns
from tokdiag.records import Record

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: journals are not locked
    fcntl = None  # type: ignore[assignment]

FORMAT = 1
"""The journal format this tokdiag writes; it reads this one and older."""


def _clean(value: float) -> float | None:
    return None if (isinstance(value, float) and not math.isfinite(value)) else value


_OPEN_WRITERS: weakref.WeakSet[JournalWriter] = weakref.WeakSet()


def _close_in_forked_child() -> None:
    """At ``fork()``, in the child: let go of every journal the parent is writing (the parent keeps its lock)."""
    for writer in list(_OPEN_WRITERS):
        writer._drop_inherited()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_close_in_forked_child)


class JournalWriter:
    """Append JSON lines to ``path``, each one handed to the OS as it is written.

    With a ``header``, start a new journal: refused if ``path`` exists (unless
    ``overwrite=True``), is a folder, or is being written by another writer.
    With ``header=None``, append to the journal already there (refused if it
    is not one, or is in a newer format).
    """

    def __init__(self, path: str | os.PathLike[str], header: dict[str, Any] | None, *, overwrite: bool = False) -> None:
        self.path = Path(path)
        self._pid = os.getpid()
        self._fd = -1
        if self.path.is_dir():
            raise ConfigError(f"journal {str(self.path)!r} is a folder; pass the path of a file in it, "
                              f"e.g. {str(self.path / 'run.jsonl')!r}")
        if header is None:
            read_header(self.path)  # a journal, in a format this tokdiag writes: refuses anything else by name
            self._fd = self._open(os.O_WRONLY | os.O_APPEND)
            _OPEN_WRITERS.add(self)
            return
        if not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | (0 if overwrite else os.O_EXCL)
        self._fd = self._open(flags)
        os.ftruncate(self._fd, 0)  # only now that the lock is ours
        _OPEN_WRITERS.add(self)
        self.write({"kind": "header", "format": FORMAT, **header})

    def _open(self, flags: int) -> int:
        try:
            fd = os.open(self.path, flags, 0o644)
        except FileExistsError:
            raise ConfigError(
                f"journal {str(self.path)!r} already exists; will not overwrite it without overwrite=True "
                "(or pass a new journal path)") from None
        except IsADirectoryError:
            raise ConfigError(f"journal {str(self.path)!r} is a folder; pass the path of a file in it") from None
        except OSError as exc:
            raise ConfigError(f"journal {str(self.path)!r} cannot be written ({exc.strerror or exc}); "
                              "pass a path in a folder you can write to") from None
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)
                raise ConfigError(f"journal {str(self.path)!r} is being written by {self._holder()}; two runs "
                                  "cannot share one journal: pass another journal path, or wait until that run "
                                  "has ended") from None
        return fd

    def _holder(self) -> str:
        try:
            header = read_header(self.path)
        except (JournalError, OSError):
            return "another run"
        pid = header.get("pid")
        who = f"run {header.get('run')!r}" if header.get("run") else "another run"
        return f"{who} (pid {pid}{', this process' if pid == os.getpid() else ''})" if pid else who

    def _drop_inherited(self) -> None:
        """In a forked child: close this process's copy of the file, so nothing here can write to it."""
        if self._fd >= 0 and os.getpid() != self._pid:
            try:
                os.close(self._fd)  # the lock stays with the parent's copy
            except OSError:
                pass
            self._fd = -1

    def __enter__(self) -> JournalWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def write(self, line: dict[str, Any]) -> None:
        if os.getpid() != self._pid:
            self._drop_inherited()
            raise JournalError(f"journal {str(self.path)!r} belongs to process {self._pid}; this is a fork() of it "
                               f"(pid {os.getpid()}), and a forked child never writes to its parent's journal")
        if self._fd < 0:
            raise JournalError(f"journal {str(self.path)!r} is closed; start a new run to write more")
        data = memoryview((json.dumps(line, default=str, allow_nan=False) + "\n").encode("utf-8"))
        while data:
            data = data[os.write(self._fd, data):]

    def event(self, name: str, **fields: Any) -> None:
        """An ``event`` line: ``{"kind": "event", "event": name, **fields}``.

        A budget stop, a workload's own figures.
        """
        self.write({"kind": "event", "event": name, **fields})

    def snapshot(self, step: int, elapsed_s: float, records: Iterable[Record]) -> None:
        self.write({
            "kind": "snapshot", "step": int(step), "elapsed_s": round(float(elapsed_s), 6),
            "records": [{"probe": r.probe, "subject": r.subject, "metric": r.metric,
                         "value": _clean(r.value), "unit": r.unit} for r in records],
        })

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            _OPEN_WRITERS.discard(self)
            if os.getpid() == self._pid:
                os.close(fd)  # releases the lock

    @property
    def closed(self) -> bool:
        return self._fd < 0


def make_header(run: str, params: dict[str, Any]) -> dict[str, Any]:
    from tokdiag import __version__

    return {
        "tokdiag": __version__,
        "python": platform.python_version(),
        "implementation": sys.implementation.name,
        "platform": platform.platform(terse=True),
        # whether tokdiag/_speedups.c was built: census and sizing give the same numbers either way, faster with it
        "speedups": _native.speedups is not None,
        "pid": os.getpid(),
        "host": socket.gethostname(),  # RSS from different machines is not comparable: td.compare warns
        "run": run,
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        # the cgroup memory limit this process runs under ({"bytes": None} = max; None = unknown):
        # time_to_limit reads it
        "memory_limit": header_entry(),
        "params": params,
    }


@dataclass
class JournalContents:
    """Everything a journal file holds, parsed; the snapshots as timeline columns."""

    path: Path
    header: dict[str, Any]
    columns: TimelineColumns = field(default_factory=TimelineColumns)
    events: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    retention: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    end: dict[str, Any] | None = None
    truncated: bool = False

    def timeline(self, run: str) -> Any:
        """The snapshots as a timeline DataFrame labelled ``run`` (see :mod:`tokdiag.recording.timeline`)."""
        return self.columns.frame(run)


def _open_for_reading(p: Path) -> Any:
    try:
        return open(p, "rb")
    except FileNotFoundError:
        raise JournalError(f"journal {str(p)!r} does not exist; pass the path a Tracker wrote (journal=...)") from None
    except IsADirectoryError:
        raise JournalError(f"journal {str(p)!r} is a folder, not a journal file; pass the .jsonl file a Tracker "
                           "wrote (journal=...)") from None
    except OSError as exc:
        raise JournalError(f"journal {str(p)!r} cannot be read ({exc.strerror or exc}); check its permissions") \
            from None


def _parse(raw: bytes) -> Any:
    """One line as JSON; ValueError (with the reason) when it is not JSON text."""
    try:
        return json.loads(raw)
    except UnicodeDecodeError:
        raise ValueError("not UTF-8 text (binary data?)") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"not JSON ({exc})") from None
    except RecursionError:
        raise ValueError("not JSON (nested too deeply)") from None


def _check_header(p: Path, obj: Any) -> dict[str, Any]:
    if type(obj) is not dict or obj.get("kind") != "header":
        raise JournalError(f"{str(p)!r} is not a tokdiag journal: its first line is not a header; pass a .jsonl "
                           "file written by td.track(..., journal=...)")
    fmt = obj.get("format")
    if type(fmt) is not int:
        raise JournalError(f"journal {str(p)!r}: its header has format {fmt!r}, not a format number; the file was "
                           "not written by tokdiag or its first line was edited")
    if fmt > FORMAT:
        from tokdiag import __version__

        writer = obj.get("tokdiag")
        by = f"by tokdiag {writer}" if isinstance(writer, str) else "by a newer tokdiag"
        raise JournalError(f"journal {str(p)!r} is in format {fmt}, written {by}, which reads it; this tokdiag "
                           f"({__version__}) reads format {FORMAT} and older: upgrade tokdiag "
                           f"(pip install -U tokdiag) to load it")
    return obj


def read_header(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The header of the journal at ``path``, reading only its first line (JournalError if it is not a journal)."""
    p = Path(path)
    with _open_for_reading(p) as fh:
        for raw in fh:
            if raw.strip():
                try:
                    return _check_header(p, _parse(raw))
                except ValueError as exc:
                    raise JournalError(f"{str(p)!r} is not a tokdiag journal: its first line is {exc}") from None
    raise JournalError(f"journal {str(p)!r} is empty: the run wrote nothing (was it killed before its first snapshot?)")


def read_journal(path: str | os.PathLike[str]) -> JournalContents:
    """Parse a journal, keeping every complete line of a run that was killed mid-write.

    Streams the file: each snapshot line is parsed and appended to the
    timeline columns, then dropped. A line that is not JSON is tolerated
    only as the last line (the one being written when the process died:
    ``truncated``); anywhere else it is a :class:`JournalError` naming the
    line, as is a snapshot line without a ``step`` or with a malformed record.
    """
    p = Path(path)
    out: JournalContents | None = None
    bad: tuple[int, str] | None = None  # a line that did not parse: fatal unless it turns out to be the last
    with _open_for_reading(p) as fh:
        for lineno, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            if bad is not None:
                where = "the file is damaged before its end" if out is not None else "it is not a tokdiag journal"
                raise JournalError(f"journal {str(p)!r}, line {bad[0]}: {bad[1]}; {where}")
            try:
                obj = _parse(raw)
            except ValueError as exc:
                bad = (lineno, str(exc))
                continue
            if out is None:
                out = JournalContents(path=p, header=_check_header(p, obj))
                continue
            if type(obj) is not dict or "kind" not in obj:
                raise JournalError(f"journal {str(p)!r}, line {lineno}: not a tokdiag journal line (no 'kind')")
            kind = obj["kind"]
            if kind == "snapshot":
                try:
                    if "step" not in obj:
                        raise ValueError("no 'step'")
                    out.columns.add(obj["step"], obj.get("elapsed_s", 0.0), obj.get("records", []))
                except ValueError as exc:
                    raise JournalError(f"journal {str(p)!r}, line {lineno}: bad snapshot: {exc}; the line was not "
                                       "written by tokdiag (remove or repair it to load the rest)") from None
            elif kind == "event":
                out.events.append(obj)
            elif kind == "warning":
                out.warnings.append(str(obj.get("message", "")))
            elif kind == "retention":
                chains = obj.get("chains", [])
                if type(chains) is not list:
                    raise JournalError(f"journal {str(p)!r}, line {lineno}: bad retention line: 'chains' is "
                                       f"{chains!r:.80}, not a list; remove or repair the line to load the rest")
                out.retention[str(obj.get("subject"))] = chains
            elif kind == "end":
                out.end = obj
    if out is None:
        if bad is not None:
            raise JournalError(f"{str(p)!r} is not a tokdiag journal: its first line is {bad[1]}; pass a .jsonl "
                               "file written by td.track(..., journal=...)")
        raise JournalError(f"journal {str(p)!r} is empty: the run wrote nothing "
                           "(was it killed before its first snapshot?)")
    out.truncated = bad is not None
    return out
