"""``Run``: one tracked run, from a live tracker or from its journal alone.

The facade users hold: the timeline, how the run ended, and the analyses
(verdicts, ledger, why-alive chains) computed from it. It sits above the
analysis layer and below charts, so ``run.verdicts()`` is a call into
:mod:`tokdiag.analysis`, never the other way round.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from tokdiag.errors import ConfigError, did_you_mean
from tokdiag.recording.journal import JournalContents, read_journal
from tokdiag.recording.timeline import series


@dataclass
class Run:
    """The measurements of one run and how it ended.

    ``status`` is ``completed``, ``budget`` (stopped by the memory budget),
    ``error``, ``interrupted``, or ``killed`` (the journal has no end line:
    the process died, e.g. OOM-killed; every finished snapshot is kept).
    """

    name: str
    timeline: pd.DataFrame
    header: dict[str, Any] = field(default_factory=dict)
    status: str = "completed"
    message: str = ""
    events: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    retention: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    journal: Path | None = None
    live: bool = False

    @classmethod
    def from_journal(cls, contents: JournalContents, *, live: bool = False) -> Run:
        name = str(contents.header.get("run") or contents.path.stem)
        end = contents.end
        status = str(end.get("reason", "completed")) if end else "killed"
        message = str(end.get("message", "")) if end else (
            "the journal has no end line: the process died before the run finished"
            + (" (its last line was cut mid-write)" if contents.truncated else ""))
        return cls(
            name=name,
            timeline=contents.timeline(name),
            header=contents.header,
            status=status,
            message=message,
            events=contents.events,
            warnings=contents.warnings,
            retention=contents.retention,
            journal=contents.path,
            live=live,
        )

    # -- views -------------------------------------------------------------
    @property
    def params(self) -> dict[str, Any]:
        return dict(self.header.get("params", {}))

    @property
    def steps(self) -> list[int]:
        """Snapshot steps, in order."""
        return sorted(self.timeline["step"].unique().tolist())

    def series(self, probe: str, subject: str, metric: str) -> pd.Series:
        """One series by step, e.g. ``run.series("process", "process", "rss")``."""
        return series(self.timeline, probe, subject, metric)

    # -- analysis ------------------------------------------------------------
    def verdicts(self, *, project_to: int = 10_000) -> pd.DataFrame:
        """A verdict per series (leak / bounded / step / flat / inconclusive); see :mod:`tokdiag.analysis`."""
        from tokdiag.analysis import verdicts

        return verdicts(self.timeline, project_to=project_to)

    def ledger(self, *, since: str | int = "warmup") -> pd.DataFrame:
        """RSS growth split into owners, from the end of warm-up by default (``since="start"``: from the first
        snapshot; or a step); see :func:`tokdiag.analysis.ledger`."""
        from tokdiag.analysis import ledger

        return ledger(self.timeline, since=since)

    def time_to_limit(self, limit: int | str | None = None, *, per: str | None = None) -> Any:
        """When RSS reaches ``limit`` (default: the cgroup limit in the header).

        See :func:`tokdiag.analysis.limit.time_to_limit`.
        """
        from tokdiag.analysis.limit import time_to_limit

        return time_to_limit(self, limit, per=per)

    def why_alive(self, target: Any, **kwargs: Any) -> list[Any]:
        """Reference chains that keep instances of ``target`` alive.

        In the process that ran the workload (a live run) the heap is walked
        now; for a run loaded from its journal the chains recorded at the
        end of the run are returned (as :class:`tokdiag.analysis.retention.Chain`).
        """
        from tokdiag.analysis.retention import Chain, why_alive

        if self.live:
            return why_alive(target, **kwargs)
        key = str(target if isinstance(target, str) else getattr(target, "__qualname__", target))
        hits = [s for s in self.retention if s == key or s.rsplit(".", 1)[-1] == key.rsplit(".", 1)[-1]]
        if not hits:
            if not self.retention:
                raise ConfigError(
                    f"why_alive({key!r}): run {self.name!r} ({self.status}) recorded no why-alive chains; they are "
                    "recorded when a run ends, for its watched classes (watch=[...], why_alive=True); a killed "
                    "run has none")
            names = sorted(self.retention)
            hint = did_you_mean(key, names + [n.rsplit(".", 1)[-1] for n in names], start="; ")
            raise ConfigError(
                f"why_alive({key!r}): run {self.name!r} recorded chains for {names}, not for {key!r}{hint}"
            )
        return [Chain.from_dict(c) for s in hits for c in self.retention[s]]

    def summary(self) -> dict[str, Any]:
        """Headline numbers: status, steps, RSS at start and end, growth per step."""
        rss = self.series("process", "process", "rss")
        out: dict[str, Any] = {"run": self.name, "status": self.status, "snapshots": int(len(rss))}
        if len(rss):
            out.update(first_step=int(rss.index[0]), last_step=int(rss.index[-1]),
                       rss_start=float(rss.iloc[0]), rss_end=float(rss.iloc[-1]))
        return out

    def __repr__(self) -> str:
        s = self.summary()
        rss = ""
        if "rss_end" in s:
            rss = f", rss {s['rss_start'] / 2**20:.1f} -> {s['rss_end'] / 2**20:.1f} MiB"
        return f"<Run {self.name!r} {self.status}: {s['snapshots']} snapshots{rss}>"


def load(path: str | os.PathLike[str]) -> Run:
    """The :class:`Run` written to a journal, from the journal alone.

    Tolerates a truncated last line (a run killed mid-write keeps every
    finished snapshot).
    """
    return Run.from_journal(read_journal(path))
