"""Timeline: the tidy DataFrame every other part reads.

One row per measurement: ``run, step, elapsed_s, probe, subject, metric,
value, unit`` (:data:`tokdiag.records.COLUMNS`). ``step`` is the number of
workload steps completed when the snapshot was taken (0 = before the
first step). Dtypes: ``step`` int64, ``elapsed_s`` and ``value`` float64
(a missing value is NaN), the text columns pandas' ``string`` dtype.

A journal is read into :class:`TimelineColumns` one snapshot at a time,
never into a list of every record: per row it keeps 8 bytes of value and 4
of series code, the text of each (probe, subject, metric, unit) once.
"""

from __future__ import annotations

import math
from array import array
from typing import Any, Iterable

import numpy as np
import pandas as pd

from tokdiag.errors import ConfigError
from tokdiag.records import COLUMNS

_NAN = math.nan
_TEXT_FIELDS = ("probe", "subject", "metric", "unit")


class TimelineColumns:
    """The columns of one run's timeline, grown one snapshot at a time in compact arrays.

    :meth:`add` appends a snapshot (or raises :class:`ValueError` naming what
    is wrong with it, appending nothing); :meth:`frame` builds the
    DataFrame. Steps and elapsed times are kept once per snapshot, values
    as float64 and series as int32 codes into one table of
    ``(probe, subject, metric, unit)``, so the text of a series is held
    once however many snapshots repeat it.

    >>> cols = TimelineColumns()
    >>> cols.add(0, 0.0, [{"probe": "process", "subject": "process", "metric": "rss", "value": 1.0, "unit": "bytes"}])
    >>> cols.frame("demo")[["step", "metric", "value"]].to_dict("records")
    [{'step': 0, 'metric': 'rss', 'value': 1.0}]
    """

    __slots__ = ("_snap_step", "_snap_elapsed", "_snap_rows", "_value", "_series", "_codes", "_keys")

    def __init__(self) -> None:
        self._snap_step = array("q")
        self._snap_elapsed = array("d")
        self._snap_rows = array("q")
        self._value = array("d")
        self._series = array("i")
        self._codes: dict[tuple[Any, ...], int] = {}
        self._keys: list[tuple[str, str, str, str]] = []

    def __len__(self) -> int:
        return len(self._value)

    @property
    def snapshots(self) -> int:
        """How many snapshots were added."""
        return len(self._snap_step)

    def add(self, step: Any, elapsed_s: Any, records: Any) -> None:
        """Append the snapshot taken at ``step``: ``records`` is a list of ``{probe, subject, metric, value, unit}``."""
        if type(step) is not int or not 0 <= step < 2**63:
            raise ValueError(f"'step' is {step!r}, not a number of steps (a whole number >= 0)")
        if type(elapsed_s) is int:
            elapsed_s = float(elapsed_s)
        elif type(elapsed_s) is not float:
            raise ValueError(f"'elapsed_s' is {elapsed_s!r}, not a number of seconds")
        if type(records) is not list:
            raise ValueError(f"'records' is {type(records).__name__} {records!r:.80}, not a list of records")
        start = len(self._value)
        codes, value, series = self._codes, self._value, self._series
        try:
            for r in records:
                if type(r) is not dict:
                    raise ValueError(f"is {r!r:.80}, not a {{probe, subject, metric, value, unit}} object")
                key = (r.get("probe"), r.get("subject"), r.get("metric"), r.get("unit", ""))
                try:
                    code = codes.get(key)
                except TypeError:  # an unhashable field: _new_series names it
                    code = None
                if code is None:
                    code = self._new_series(key)
                v = r.get("value")
                if type(v) is float:
                    value.append(v)
                elif v is None:
                    value.append(_NAN)
                elif type(v) is int:
                    value.append(float(v))
                else:
                    raise ValueError(f"has value {v!r:.80}, not a number")
                series.append(code)
        except (ValueError, TypeError, OverflowError) as exc:
            bad = len(self._value) - start
            del self._value[start:]
            del self._series[start:]
            raise ValueError(f"record {bad} {exc}") from None
        self._snap_step.append(step)
        self._snap_elapsed.append(elapsed_s)
        self._snap_rows.append(len(records))

    def _new_series(self, key: tuple[Any, ...]) -> int:
        for name, text in zip(_TEXT_FIELDS, key, strict=True):
            if type(text) is not str:
                raise ValueError(f"has no {name!r}" if text is None else f"has {name} {text!r:.80}, not text")
        code = len(self._keys)
        self._codes[key] = code
        self._keys.append(key)
        return code

    def frame(self, run: str) -> pd.DataFrame:
        """The timeline as a DataFrame with :data:`~tokdiag.records.COLUMNS`, every row labelled ``run``."""
        n = len(self._value)
        rows = np.frombuffer(self._snap_rows, dtype=np.int64) if self._snap_rows else np.zeros(0, np.int64)
        codes = np.frombuffer(self._series, dtype=np.int32) if n else np.zeros(0, np.int32)
        columns: dict[str, Any] = {
            "run": _text(np.full(n, run, dtype=object)),
            "step": np.repeat(np.frombuffer(self._snap_step, dtype=np.int64) if self._snap_step else
                              np.zeros(0, np.int64), rows),
            "elapsed_s": np.repeat(np.frombuffer(self._snap_elapsed, dtype=np.float64) if self._snap_elapsed else
                                   np.zeros(0, np.float64), rows),
            "value": np.array(self._value, dtype=np.float64) if n else np.zeros(0, np.float64),
        }
        for i, name in enumerate(_TEXT_FIELDS):
            texts = [k[i] for k in self._keys]
            distinct = {t: j for j, t in enumerate(dict.fromkeys(texts))}
            per_series = np.array([distinct[t] for t in texts], dtype=np.int32)
            table = np.array(list(distinct), dtype=object)
            columns[name] = _text(table[per_series[codes]] if n else np.zeros(0, dtype=object))
        return pd.DataFrame({c: columns[c] for c in COLUMNS}, copy=False)


def _text(values: np.ndarray) -> pd.arrays.StringArray:
    """An object array of str as pandas' ``string`` dtype, without a copy."""
    return pd.arrays.StringArray(values)


def timeline_from_snapshots(run: str, snapshots: Iterable[dict[str, Any]]) -> pd.DataFrame:
    """Build the timeline of one run from journal snapshot lines (dicts with ``step``, ``elapsed_s``, ``records``)."""
    cols = TimelineColumns()
    for snap in snapshots:
        cols.add(snap.get("step"), snap.get("elapsed_s", 0.0), snap.get("records", []))
    return cols.frame(run)


def series(timeline: pd.DataFrame, probe: str, subject: str, metric: str) -> pd.Series:
    """One series indexed by step (``value`` of ``probe/subject/metric``)."""
    sel = timeline[(timeline["probe"] == probe) & (timeline["subject"] == subject) & (timeline["metric"] == metric)]
    return sel.set_index("step")["value"].sort_index()


def wide(timeline: pd.DataFrame, probe: str, metric: str) -> pd.DataFrame:
    """A step x subject table of one probe's metric (e.g. census counts per type)."""
    sel = timeline[(timeline["probe"] == probe) & (timeline["metric"] == metric)]
    return sel.pivot_table(index="step", columns="subject", values="value", aggfunc="last").sort_index()


_REQUIRED = ("run", "step", "probe", "subject", "metric", "value", "unit")


def check_timeline(timeline: object, what: str = "timeline") -> pd.DataFrame:
    """``timeline`` (or a Run's ``.timeline``) when it has the timeline's columns; else a ConfigError naming them."""
    if hasattr(timeline, "timeline") and not isinstance(timeline, pd.DataFrame):
        timeline = timeline.timeline
    if not isinstance(timeline, pd.DataFrame):
        raise ConfigError(
            f"{what} is a {type(timeline).__name__}; pass a timeline DataFrame (run.timeline) "
            f"with columns {', '.join(COLUMNS)}")
    missing = [c for c in _REQUIRED if c not in timeline.columns]
    if missing:
        raise ConfigError(
            f"{what} lacks column(s) {missing}; a tokdiag timeline has columns {', '.join(COLUMNS)} "
            "(load one with td.load(journal).timeline)")
    return timeline
