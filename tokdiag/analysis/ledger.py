"""The memory ledger: RSS growth since the end of warm-up, split between owners.

For every snapshot step of a run from a baseline on, :func:`ledger` says how
many bytes of the process' RSS growth (``rss(step) - rss(baseline)``) each
owner accounts for. It is what a stacked chart draws, so it adds up: for
every step, ``sum(bytes) == rss(step) - rss(baseline)`` (to floating-point
rounding).

The baseline
------------
By default (``since="warmup"``) the baseline is the end of the run's RSS
warm-up, so that what a service loads once does not bury what keeps
growing; ``since="start"`` is the first snapshot, ``since=<step>`` the first
snapshot at or after that step. How the end of warm-up is found:
:mod:`tokdiag.analysis.baseline`. :func:`startup_costs` is the other half:
what the owners cost from the first snapshot to the baseline.

Owners and kinds
----------------
=============  ===========================================================
kind           owner, and the series its bytes come from
=============  ===========================================================
``cache``      a cache label: ``cache/<label>/bytes`` (deep size)
``native``     ``"<label> (native estimate)"``: ``cache/<label>/native_bytes``,
               the estimated memory of tiktoken's Rust core, which no
               Python-level measure sees; and ``"<type> (native)"``:
               ``native/<type>/native_bytes``, the native footprint of every
               instance of a type known to hold native memory
               (``ssl.SSLContext``: OpenSSL's CA store; tiktoken
               ``Encoding``; ``sqlite3.Connection``: SQLite's own heap), see
               :mod:`tokdiag.probes.native`. An Encoding a cache already
               counted is not counted again under its type.
``watch``      a watched class: ``watch/<class>/bytes`` (reachable bytes)
``container``  a container found from a module without being named
               (``"logging:Logger.manager.loggerDict"``):
               ``containers/<path>/bytes`` (deep size, partitioned like
               watch), written once its length changed by the practical
               minimum (:mod:`tokdiag.probes.containers`)
``census``     a type from the census whose growth matters:
               ``census/<type>/unowned_bytes`` (untracked objects
               included: a ``bytearray`` leak is ``builtins.bytearray``);
               types that grew (or shrank) by less than ``min_bytes`` are
               lumped into ``"other Python objects"``
``tokdiag``    ``"tokdiag"``: ``tracker/tokdiag/self_bytes``, the tracker's own
               buffers
``allocator``  free memory the allocators keep resident (fragmentation, not
               an object holding it): ``"glibc free (kept by malloc)"`` from
               ``allocator/glibc/free`` and ``"pymalloc free (kept by
               Python)"`` from ``allocator/pymalloc/free``
               (:mod:`tokdiag.probes.allocator`). ``glibc/free`` may be read
               only every k-th snapshot when ``mallinfo2`` is slow: the last
               reading is carried forward to the snapshots in between
``file``       ``"file-backed pages (RssFile)"`` and ``"shared memory
               (RssShmem)"``: ``allocator/pages/file`` and
               ``allocator/pages/shmem``, resident pages of mapped files and
               shared memory, which no heap holds
``unexplained``  ``"unexplained (native or untracked)"``: RSS growth minus all
               of the above
=============  ===========================================================

A run without the allocator or native probes (an older journal) has no
owners of those kinds, and its ledger is what it always was.

What "owned" means
------------------
The probes of one snapshot share one "seen" set: caches are sized first,
then watched classes, and a byte reachable from an earlier owner is not
counted again by a later one (a message's agent is counted once). The
census' ``unowned_bytes`` leave out every object already owned by a cache, a
watched class or a found container, so census owners never repeat those
bytes. The census counts gc-tracked objects and the untracked ones they
reach (strings, bytes, numbers); ``unexplained`` holds native memory no
estimate covers (C extensions and Rust cores not in the registry), what
only C state or a running frame holds, and, when the allocator probe did
not run, the free memory the allocators keep and file-backed pages.

``tokdiag`` is the deep size of the tracker's own state (first and last
counts, the census' kept names); those few containers are gc-tracked, so
the census may see them too: at most a few KB, far below ``min_bytes``.

``allocator`` owners hold no object's bytes: free chunks and free pool
blocks are what is *not* allocated, so they never repeat a Python or native
owner. ``native`` figures are heap bytes in use (the SSL model is fitted to
glibc's in-use bytes per context, SQLite's figure is its own count of
allocated bytes; tiktoken's model was fitted to RSS per Encoding, which
is within 1% of its in-use bytes), so they do not include the free memory the
``allocator`` owners count. ``file`` pages are not in any heap.

``unexplained`` can be negative: RSS fell (the allocator returned memory to
the system) while the owned objects did not shrink as much, or an owner's
measure (deep size, native estimate) counts bytes that were never resident.

A series missing at a snapshot (a cache that could not be resolved, a
container or a census type first written late because it was small or had
not moved before, a native type whose module was imported mid-run) counts
as 0 bytes there, so its growth is measured from 0 at the baseline; two
exceptions: ``allocator/glibc/free`` carries its last reading forward (it
is skipped on purpose, see above), and a census type written late with
``unowned_bytes_at_start`` (what it held at the first snapshot, see
:class:`tokdiag.probes.CensusProbe`) counts that figure until it is written,
so what it held from the start is not taken for growth. A container written
late counts from 0: its objects were under census types until then, which
drop by as much when it claims them, so the sum stays exact.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from tokdiag.analysis.baseline import Since, baseline_index, baseline_step, check_since, rss_series
from tokdiag.analysis.thresholds import PRACTICAL_MIN
from tokdiag.errors import ConfigError
from tokdiag.recording.timeline import check_timeline

__all__ = ["ALLOCATOR_OWNERS", "FILE_OWNERS", "KINDS", "LEDGER_COLUMNS", "OTHER_OBJECTS", "UNEXPLAINED", "ledger",
           "owner_shares", "startup_costs"]

LEDGER_COLUMNS: tuple[str, ...] = ("run", "step", "owner", "kind", "bytes")
"""Columns of :func:`ledger`, in order."""

KINDS: tuple[str, ...] = ("cache", "native", "watch", "container", "census", "tokdiag", "allocator", "file",
                          "unexplained")
"""Owner kinds, in the order rows are written (and a chart stacks them)."""

UNEXPLAINED = "unexplained (native or untracked)"
"""Owner of RSS growth that no measured owner accounts for."""

OTHER_OBJECTS = "other Python objects"
"""Census owner lumping the types whose growth is below ``min_bytes``."""

NATIVE_SUFFIX = " (native estimate)"
TYPE_NATIVE_SUFFIX = " (native)"

ALLOCATOR_OWNERS: dict[str, str] = {
    "glibc": "glibc free (kept by malloc)",
    "pymalloc": "pymalloc free (kept by Python)",
}
"""``allocator/<subject>/free`` -> owner name (kind ``allocator``)."""

FILE_OWNERS: dict[str, str] = {
    "file": "file-backed pages (RssFile)",
    "shmem": "shared memory (RssShmem)",
}
"""``allocator/pages/<metric>`` -> owner name (kind ``file``)."""


def _growth(sub: pd.DataFrame, steps: np.ndarray, *, carry: bool = False, start: int = 0,
            before: pd.Series | None = None) -> pd.DataFrame:
    """Wide table step x subject of ``value - value at the baseline``, for ``steps[start:]``.

    A missing value is 0, or with ``carry`` the subject's last value before
    it (0 before its first; carried across the baseline too). ``before``
    (subject -> value) gives the value of a subject before its first one
    instead of 0.
    """
    if sub.empty:
        return pd.DataFrame(index=steps[start:])
    wide = sub.pivot_table(index="step", columns="subject", values="value", aggfunc="last")
    wide = wide.reindex(steps)
    if before is not None and len(before):
        for subject in before.index.intersection(wide.columns):
            unwritten = wide[subject].notna().cumsum() == 0
            wide.loc[unwritten.to_numpy(), subject] = float(before[subject])
    if carry:
        wide = wide.ffill()
    wide = wide.fillna(0.0).iloc[start:]
    return wide - wide.iloc[0]


def _renamed(block: pd.DataFrame, names: dict[str, str]) -> pd.DataFrame:
    """The columns of ``block`` that ``names`` knows, renamed, in the order of ``names``."""
    keep = [c for c in names if c in block.columns]
    return block[keep].rename(columns=names)


def _run_ledger(tl: pd.DataFrame, run: object, min_bytes: float, max_census_owners: int,
                since: Since) -> tuple[pd.DataFrame, int]:
    rss = rss_series(tl)
    if rss.empty:
        raise ConfigError(
            f"run {run!r} has no process rss in its timeline, so there is no RSS growth to split; "
            "track it with the process probe (td.track / td.Tracker always add it) or pass a timeline "
            "with rows probe='process', subject='process', metric='rss'")
    b = baseline_index(rss, since, run)
    all_steps = rss.index.to_numpy()
    steps = all_steps[b:]
    total = rss.to_numpy(dtype=float)[b:] - float(rss.iloc[b])
    tl = tl[tl["step"].isin(all_steps)]

    blocks: list[tuple[str, pd.DataFrame]] = []

    def pick(probe: str, metric: str) -> pd.DataFrame:
        return tl[(tl["probe"] == probe) & (tl["metric"] == metric)]

    def growth(sub: pd.DataFrame, *, carry: bool = False) -> pd.DataFrame:
        return _growth(sub, all_steps, carry=carry, start=b)

    blocks.append(("cache", growth(pick("cache", "bytes"))))
    native = growth(pick("cache", "native_bytes"))
    native.columns = [f"{c}{NATIVE_SUFFIX}" for c in native.columns]
    blocks.append(("native", native))
    typed = growth(pick("native", "native_bytes"))
    typed.columns = [f"{c}{TYPE_NATIVE_SUFFIX}" for c in typed.columns]
    blocks.append(("native", typed))
    blocks.append(("watch", growth(pick("watch", "bytes"))))
    blocks.append(("container", growth(pick("containers", "bytes"))))

    census = pick("census", "unowned_bytes")
    have = set(census["subject"].unique())
    fallback = pick("census", "bytes")  # journals without unowned_bytes: shallow bytes as they are
    fallback = fallback[~fallback["subject"].isin(have)]
    start_bytes = pick("census", "bytes_at_start")
    starts = pd.concat([pick("census", "unowned_bytes_at_start"), start_bytes[~start_bytes["subject"].isin(have)]])
    cg = _growth(pd.concat([census, fallback]) if len(fallback) else census, all_steps, start=b,
                 before=starts.groupby("subject")["value"].first())
    if cg.shape[1]:
        size = cg.abs().max()
        big = size[size >= min_bytes].sort_values(ascending=False)
        keep = list(big.index[:max_census_owners])
        rest = [c for c in cg.columns if c not in keep]
        lumped = cg[keep].copy()
        if rest:
            lumped[OTHER_OBJECTS] = cg[rest].sum(axis=1)
        cg = lumped
    blocks.append(("census", cg))
    tok = pick("tracker", "self_bytes").assign(subject="tokdiag")
    blocks.append(("tokdiag", growth(tok)))
    free = pick("allocator", "free")
    blocks.append(("allocator", _renamed(growth(free, carry=True), ALLOCATOR_OWNERS)))
    pages = tl[(tl["probe"] == "allocator") & (tl["subject"] == "pages")]
    blocks.append(("file", _renamed(growth(pages.assign(subject=pages["metric"])), FILE_OWNERS)))

    owners: list[str] = []
    kinds: list[str] = []
    cols: list[np.ndarray] = []
    for kind, block in blocks:
        for owner in block.columns:
            owners.append(str(owner))
            kinds.append(kind)
            cols.append(block[owner].to_numpy(dtype=float))
    measured = np.vstack(cols) if cols else np.zeros((0, steps.size))
    # fsum per step: the remainder is exact, so owners add up to the RSS growth
    unexplained = np.array([total[j] - math.fsum(measured[:, j]) for j in range(steps.size)])
    owners.append(UNEXPLAINED)
    kinds.append("unexplained")
    values = np.vstack([measured, unexplained[None, :]])
    n_own = len(owners)
    return pd.DataFrame({
        "run": [run] * (n_own * steps.size),
        "step": np.tile(steps, n_own).astype("int64"),
        "owner": np.repeat(np.array(owners, dtype=object), steps.size),
        "kind": np.repeat(np.array(kinds, dtype=object), steps.size),
        "bytes": values.ravel(),
    }), int(steps[0])


def ledger(timeline: pd.DataFrame, *, since: Since = "warmup", min_bytes: float = PRACTICAL_MIN["bytes"],
           max_census_owners: int = 10) -> pd.DataFrame:
    """RSS growth since the baseline, split between owners; columns :data:`LEDGER_COLUMNS`.

    One row per (run, snapshot step from the baseline on, owner), sorted by
    run, step and kind (:data:`KINDS`); for every step the ``bytes`` add up
    to ``rss(step) - rss(baseline)``, and every owner is 0 at the baseline.
    ``since``: ``"warmup"`` (the end of the RSS warm-up, the default),
    ``"start"`` (the first snapshot) or a step number; the baseline step of
    each run is in ``df.attrs["baseline"]`` (``{run: step}``). See the module
    docstring for the owners and what "owned" means, :mod:`tokdiag.analysis.baseline` for the baseline.

    ``min_bytes``: a census type gets its own owner only when its unowned
    bytes moved by at least this much at some snapshot (default: the
    practical minimum of :data:`tokdiag.analysis.PRACTICAL_MIN`, 64 KiB);
    at most ``max_census_owners`` types (the largest), the rest are lumped
    into ``"other Python objects"``.

    Several runs in one timeline get a ledger each. Raises
    :class:`ConfigError` when a run has no ``process/rss`` series.

    >>> rows = [("r", s, 0.0, "process", "process", "rss", 100.0 + 10 * s, "bytes") for s in range(3)]
    >>> rows += [("r", s, 0.0, "cache", "c", "bytes", 4.0 * s, "bytes") for s in range(3)]
    >>> tl = pd.DataFrame(rows, columns=["run", "step", "elapsed_s", "probe", "subject", "metric", "value", "unit"])
    >>> ledger(tl).query("step == 2")[["owner", "kind", "bytes"]].to_dict("records")  # doctest: +NORMALIZE_WHITESPACE
    [{'owner': 'c', 'kind': 'cache', 'bytes': 8.0},
     {'owner': 'unexplained (native or untracked)', 'kind': 'unexplained', 'bytes': 12.0}]
    """
    timeline = check_timeline(timeline)
    since = check_since(since)
    if isinstance(max_census_owners, bool) or not isinstance(max_census_owners, int) or max_census_owners < 0:
        raise ConfigError(f"max_census_owners={max_census_owners!r}: pass a number of types >= 0, e.g. 10")
    if not (isinstance(min_bytes, (int, float)) and min_bytes >= 0):
        raise ConfigError(f"min_bytes={min_bytes!r}: pass a number of bytes >= 0, e.g. 65536")
    parts: list[pd.DataFrame] = []
    baseline: dict[object, int] = {}
    for run, tl in timeline.groupby("run", sort=False, dropna=False):
        part, baseline[run] = _run_ledger(tl, run, float(min_bytes), max_census_owners, since)
        parts.append(part)
    if not parts:
        raise ConfigError(
            "the timeline is empty, so there is no RSS growth to split; pass the timeline of a tracked run "
            "(run.timeline or td.load(journal).timeline)")
    out = pd.concat(parts, ignore_index=True)
    order = {k: i for i, k in enumerate(KINDS)}
    out["_k"] = out["kind"].map(order)
    out = out.sort_values(["run", "step", "_k"], kind="stable").drop(columns="_k").reset_index(drop=True)
    out["owner"] = out["owner"].astype(str)
    out["kind"] = out["kind"].astype(str)
    out = out[list(LEDGER_COLUMNS)]
    out.attrs["baseline"] = baseline
    out.attrs["since"] = since
    return out


def startup_costs(timeline: pd.DataFrame, *, min_bytes: float = PRACTICAL_MIN["bytes"],
                  max_census_owners: int = 10) -> pd.DataFrame:
    """What warm-up cost: each owner's growth from the first snapshot to the end of warm-up.

    One row per (run, owner), columns ``run, owner, kind, bytes, step``
    (``step`` is the end of warm-up, the baseline of :func:`ledger`'s default
    ``since="warmup"``); the ``bytes`` of a run add up exactly to
    ``rss(end of warm-up) - rss(first snapshot)``: the ledger from the start,
    read at that step. A run without a warm-up has all zeros at its first step.

    >>> loaded = lambda s: s >= 50  # a vocabulary loaded at step 50, then a slow leak
    >>> rows = [("r", s, 0.0, "process", "process", "rss", 1e8 + 4e7 * loaded(s) + 1e5 * s, "bytes")
    ...         for s in range(0, 200, 10)]
    >>> rows += [("r", s, 0.0, "cache", "vocab", "bytes", 3e7 * loaded(s), "bytes") for s in range(0, 200, 10)]
    >>> tl = pd.DataFrame(rows, columns=["run", "step", "elapsed_s", "probe", "subject", "metric", "value", "unit"])
    >>> startup_costs(tl)[["owner", "bytes", "step"]].to_dict("records")  # doctest: +NORMALIZE_WHITESPACE
    [{'owner': 'vocab', 'bytes': 30000000.0, 'step': 50},
     {'owner': 'unexplained (native or untracked)', 'bytes': 15000000.0, 'step': 50}]
    """
    whole = ledger(timeline, since="start", min_bytes=min_bytes, max_census_owners=max_census_owners)
    ends = baseline_step(timeline, since="warmup")
    parts = [whole[(whole["run"] == run) & (whole["step"] == step)] for run, step in ends.items()]
    out = pd.concat(parts, ignore_index=True) if parts else whole.iloc[:0]
    return out[["run", "owner", "kind", "bytes", "step"]].reset_index(drop=True)


def owner_shares(run_or_timeline: Any, *, since: Since = "warmup", top: int = 8) -> pd.DataFrame:
    """Each owner's share of the RSS growth at the last snapshot of each run, largest first.

    Columns ``run``, ``owner``, ``kind``, ``bytes``, ``share`` (of the run's
    growth since the baseline, see :func:`ledger`); at most ``top`` owners
    per run, plus :data:`UNEXPLAINED` always. A run whose RSS did not grow
    has shares of ``nan``.

    >>> rows = [("a", s, float(s), "process", "process", "rss", 100.0 + 10 * s, "bytes") for s in range(5)]
    >>> rows += [("a", s, float(s), "cache", "c", "bytes", 8.0 * s, "bytes") for s in range(5)]
    >>> tl = pd.DataFrame(rows, columns=["run", "step", "elapsed_s", "probe", "subject", "metric", "value", "unit"])
    >>> owner_shares(tl, since="start")[["owner", "share"]].to_dict("records")
    [{'owner': 'c', 'share': 0.8}, {'owner': 'unexplained (native or untracked)', 'share': 0.2}]
    """
    timeline = run_or_timeline if type(run_or_timeline) is pd.DataFrame else run_or_timeline.timeline
    led = ledger(timeline, since=since)
    out = []
    for _run, g in led.groupby("run", sort=False):
        last = g[g["step"] == g["step"].max()]
        total = float(last["bytes"].sum())
        last = last.assign(share=last["bytes"] / total if total > 0 else math.nan)
        ranked = last.reindex(last["bytes"].abs().sort_values(ascending=False).index)
        keep = ranked[ranked["owner"] != UNEXPLAINED].head(int(top))
        out.append(pd.concat([keep, ranked[ranked["owner"] == UNEXPLAINED]]))
    cols = ["run", "owner", "kind", "bytes", "share"]
    return (pd.concat(out)[cols] if out else pd.DataFrame(columns=cols)).reset_index(drop=True)
