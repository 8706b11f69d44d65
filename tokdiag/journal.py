"""The crash-safe journal: JSON lines on disk, appended and flushed as they are taken.

Every line is one JSON object with a ``kind``:

- ``header`` (always the first line): ``format``, ``tokdiag`` version,
  ``python``, ``platform``, ``host`` (hostname), ``pid``, ``run`` name, ``started_at`` and the
  run's ``params``.
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
"""

from __future__ import annotations

import json
import math
import os
import platform
import socket
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable

from tokdiag import _native
from tokdiag.errors import ConfigError, JournalError
from tokdiag.records import Record

FORMAT = 1


def _clean(value: float) -> float | None:
    return None if (isinstance(value, float) and not math.isfinite(value)) else value


class JournalWriter:
    """Append JSON lines to ``path``, flushing each one to the OS as it is written."""

    def __init__(self, path: str | os.PathLike[str], header: dict[str, Any] | None, *, overwrite: bool = False) -> None:
        """Start a journal at ``path`` with ``header``; with ``header=None``, append to the journal already there."""
        self.path = Path(path)
        if header is None:
            read_journal(self.path)  # a journal, with its header: refuses anything else by name
            self._fh = open(self.path, "a", encoding="utf-8")
            return
        if self.path.exists() and not overwrite:
            raise ConfigError(
                f"journal {str(self.path)!r} already exists; will not overwrite it without overwrite=True "
                "(or pass a new journal path)")
        if self.path.parent and not self.path.parent.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "w", encoding="utf-8")
        self.write({"kind": "header", "format": FORMAT, **header})

    def __enter__(self) -> JournalWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def write(self, line: dict[str, Any]) -> None:
        if self._fh.closed:
            raise JournalError(f"journal {str(self.path)!r} is closed; start a new run to write more")
        self._fh.write(json.dumps(line, default=str, allow_nan=False) + "\n")
        self._fh.flush()

    def event(self, name: str, **fields: Any) -> None:
        """An ``event`` line: ``{"kind": "event", "event": name, **fields}`` (a budget stop, a workload's own figures)."""
        self.write({"kind": "event", "event": name, **fields})

    def snapshot(self, step: int, elapsed_s: float, records: Iterable[Record]) -> None:
        self.write({
            "kind": "snapshot", "step": int(step), "elapsed_s": round(float(elapsed_s), 6),
            "records": [{"probe": r.probe, "subject": r.subject, "metric": r.metric,
                         "value": _clean(r.value), "unit": r.unit} for r in records],
        })

    def close(self) -> None:
        if not self._fh.closed:
            self._fh.close()

    @property
    def closed(self) -> bool:
        return self._fh.closed


def make_header(run: str, params: dict[str, Any]) -> dict[str, Any]:
    from tokdiag import __version__

    return {
        "tokdiag": __version__,
        "python": platform.python_version(),
        "implementation": sys.implementation.name,
        "platform": platform.platform(terse=True),
        # whether tokdiag/_speedups.c was built: census and sizing give the same numbers either way, faster with it
        "speedups": _native.speedups is not None,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "run": run,
        "started_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "params": params,
    }


@dataclass
class JournalContents:
    """Everything a journal file holds, parsed."""

    path: Path
    header: dict[str, Any]
    snapshots: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    retention: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    end: dict[str, Any] | None = None
    truncated: bool = False


def read_journal(path: str | os.PathLike[str]) -> JournalContents:
    """Parse a journal, keeping every complete line of a run that was killed mid-write."""
    p = Path(path)
    if not p.exists():
        raise JournalError(f"journal {str(p)!r} does not exist; pass the path a Tracker wrote (journal=...)")
    raw = p.read_bytes()
    if not raw.strip():
        raise JournalError(f"journal {str(p)!r} is empty: the run wrote nothing (was it killed before its first snapshot?)")
    lines = [(i, line) for i, line in enumerate(raw.split(b"\n")) if line.strip()]
    parsed: list[dict[str, Any]] = []
    truncated = False
    for n, (i, line) in enumerate(lines):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            if n == len(lines) - 1:  # the line being written when the process died
                truncated = True
                break
            raise JournalError(
                f"journal {str(p)!r}, line {i + 1}: not JSON ({exc}); the file is damaged before its end") from None
        if not isinstance(obj, dict) or "kind" not in obj:
            raise JournalError(f"journal {str(p)!r}, line {i + 1}: not a tokdiag journal line (no 'kind')")
        parsed.append(obj)
    if not parsed or parsed[0].get("kind") != "header":
        raise JournalError(f"{str(p)!r} is not a tokdiag journal: its first line is not a header")
    out = JournalContents(path=p, header=parsed[0], truncated=truncated)
    for obj in parsed[1:]:
        kind = obj["kind"]
        if kind == "snapshot":
            out.snapshots.append(obj)
        elif kind == "event":
            out.events.append(obj)
        elif kind == "warning":
            out.warnings.append(str(obj.get("message", "")))
        elif kind == "retention":
            out.retention[str(obj.get("subject"))] = list(obj.get("chains", []))
        elif kind == "end":
            out.end = obj
    return out
