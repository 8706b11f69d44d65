"""The memory ledger: RSS growth since the first snapshot, split between owners.

For every snapshot step of a run, :func:`ledger` says how many bytes of the
process' RSS growth (``rss(step) - rss(first snapshot)``) each owner
accounts for. It is what a stacked chart draws, so it adds up: for every
step, ``sum(bytes) == rss(step) - rss(first)`` (to floating-point rounding).

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
as 0 bytes there, so its growth is measured from 0 at the first snapshot;
two exceptions: ``allocator/glibc/free`` carries its last reading forward
(it is skipped on purpose, see above), and a census type written late with
``unowned_bytes_at_start`` (what it held at the first snapshot, see
:class:`tokdiag.probes.CensusProbe`) counts that figure until it is written,
so what it held from the start is not taken for growth. A container written
late counts from 0: its objects were under census types until then, which
drop by as much when it claims them, so the sum stays exact.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from tokdiag.analysis.verdicts import PRACTICAL_MIN, _check_timeline
from tokdiag.errors import ConfigError

__all__ = ["ALLOCATOR_OWNERS", "FILE_OWNERS", "KINDS", "LEDGER_COLUMNS", "OTHER_OBJECTS", "UNEXPLAINED", "ledger"]

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


def _growth(sub: pd.DataFrame, steps: np.ndarray, *, carry: bool = False,
            start: pd.Series | None = None) -> pd.DataFrame:
    """Wide table step x subject of ``value - value at the first step``.

    A missing value is 0, or with ``carry`` the subject's last value before
    it (0 before its first). ``start`` (subject -> value) gives the value of
    a subject before its first one instead of 0.
    """
    if sub.empty:
        return pd.DataFrame(index=steps)
    wide = sub.pivot_table(index="step", columns="subject", values="value", aggfunc="last")
    wide = wide.reindex(steps)
    if start is not None and len(start):
        for subject in start.index.intersection(wide.columns):
            col = wide[subject]
            before = col.notna().cumsum() == 0
            wide.loc[before.to_numpy(), subject] = float(start[subject])
    if carry:
        wide = wide.ffill()
    wide = wide.fillna(0.0)
    return wide - wide.iloc[0]


def _renamed(block: pd.DataFrame, names: dict[str, str]) -> pd.DataFrame:
    """The columns of ``block`` that ``names`` knows, renamed, in the order of ``names``."""
    keep = [c for c in names if c in block.columns]
    return block[keep].rename(columns=names)


def _run_ledger(tl: pd.DataFrame, run: object, min_bytes: float, max_census_owners: int) -> pd.DataFrame:
    rss = tl[(tl["probe"] == "process") & (tl["subject"] == "process") & (tl["metric"] == "rss")]
    rss = rss.groupby("step")["value"].last().dropna().sort_index()
    if rss.empty:
        raise ConfigError(
            f"run {run!r} has no process rss in its timeline, so there is no RSS growth to split; "
            "track it with the process probe (td.track / td.Tracker always add it) or pass a timeline "
            "with rows probe='process', subject='process', metric='rss'")
    steps = rss.index.to_numpy()
    total = rss.to_numpy(dtype=float) - float(rss.iloc[0])
    tl = tl[tl["step"].isin(steps)]

    blocks: list[tuple[str, pd.DataFrame]] = []

    def pick(probe: str, metric: str) -> pd.DataFrame:
        return tl[(tl["probe"] == probe) & (tl["metric"] == metric)]

    blocks.append(("cache", _growth(pick("cache", "bytes"), steps)))
    native = _growth(pick("cache", "native_bytes"), steps)
    native.columns = [f"{c}{NATIVE_SUFFIX}" for c in native.columns]
    blocks.append(("native", native))
    typed = _growth(pick("native", "native_bytes"), steps)
    typed.columns = [f"{c}{TYPE_NATIVE_SUFFIX}" for c in typed.columns]
    blocks.append(("native", typed))
    blocks.append(("watch", _growth(pick("watch", "bytes"), steps)))
    blocks.append(("container", _growth(pick("containers", "bytes"), steps)))

    census = pick("census", "unowned_bytes")
    have = set(census["subject"].unique())
    fallback = pick("census", "bytes")  # journals without unowned_bytes: shallow bytes as they are
    fallback = fallback[~fallback["subject"].isin(have)]
    start_bytes = pick("census", "bytes_at_start")
    starts = pd.concat([pick("census", "unowned_bytes_at_start"), start_bytes[~start_bytes["subject"].isin(have)]])
    start = starts.groupby("subject")["value"].first()
    cg = _growth(pd.concat([census, fallback]) if len(fallback) else census, steps, start=start)
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
    blocks.append(("tokdiag", _growth(tok, steps)))
    free = pick("allocator", "free")
    blocks.append(("allocator", _renamed(_growth(free, steps, carry=True), ALLOCATOR_OWNERS)))
    pages = tl[(tl["probe"] == "allocator") & (tl["subject"] == "pages")]
    blocks.append(("file", _renamed(_growth(pages.assign(subject=pages["metric"]), steps), FILE_OWNERS)))

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
    })


def ledger(timeline: pd.DataFrame, *, min_bytes: float = PRACTICAL_MIN["bytes"],
           max_census_owners: int = 10) -> pd.DataFrame:
    """RSS growth since the first snapshot, split between owners; columns :data:`LEDGER_COLUMNS`.

    One row per (run, snapshot step, owner), sorted by run, step and kind
    (:data:`KINDS`); for every step the ``bytes`` add up to
    ``rss(step) - rss(first snapshot)``. See the module docstring for the
    owners and what "owned" means.

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
    >>> ledger(tl).query("step == 2")[["owner", "kind", "bytes"]].to_dict("records")
    [{'owner': 'c', 'kind': 'cache', 'bytes': 8.0}, {'owner': 'unexplained (native or untracked)', 'kind': 'unexplained', 'bytes': 12.0}]
    """
    timeline = _check_timeline(timeline)
    if isinstance(max_census_owners, bool) or not isinstance(max_census_owners, int) or max_census_owners < 0:
        raise ConfigError(f"max_census_owners={max_census_owners!r}: pass a number of types >= 0, e.g. 10")
    if not (isinstance(min_bytes, (int, float)) and min_bytes >= 0):
        raise ConfigError(f"min_bytes={min_bytes!r}: pass a number of bytes >= 0, e.g. 65536")
    parts = [_run_ledger(tl, run, float(min_bytes), max_census_owners)
             for run, tl in timeline.groupby("run", sort=False, dropna=False)]
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
    return out[list(LEDGER_COLUMNS)]
