"""Disk probe: bytes and files under the directories a service writes.

Memory is not the only thing a long-running service accumulates. AWorld's
file memory store appends every task to ``sessions/default.jsonl`` and
never prunes it; logs that never rotate, upload folders, on-disk caches
grow the same way. Such a directory is a leak of a different kind: it does
not kill the process, it fills the disk. :class:`DiskProbe` measures it at
every snapshot so the verdicts judge it like any other series::

    run = td.track(step, steps=300, probes=[DiskProbe({"memory": "~/.aworld/memory"})])
    run.verdicts().query("probe == 'disk'")

Records, per directory (``subject`` is the label, or the path as given):

=========  =========  ==================================================
metric     unit       what
=========  =========  ==================================================
bytes      bytes      sum of ``st_size`` of the regular files in the tree
files      files      how many regular files
walk_s     seconds    how long the walk took (tokdiag's own cost)
capped     flag       1 when the walk stopped at ``max_entries``: then
                      ``bytes`` and ``files`` are not known (NaN)
=========  =========  ==================================================

Why ``st_size`` and not ``st_blocks * 512``
-------------------------------------------
A verdict judges growth per step, so the figure must move with what the
service writes and with nothing else. ``st_size`` (what ``ls -l`` and
``du --apparent-size`` show) is exact to the byte and the same on every
filesystem: a task that appends 3.3 KB to a JSON-lines file reads as
+3.3 KB per step. Allocated blocks move in 4 KiB jumps, lag behind delayed
allocation, jump by speculative preallocation on XFS and shrink under
btrfs/ZFS compression: the same service would get a different, noisier
slope on each filesystem. The space actually taken on disk can differ
both ways (a 100-byte file takes a whole block; a sparse file takes less
than its size); the ``files`` series shows the many-small-files case.

How the walk is bounded
-----------------------
- at most ``max_entries`` directory entries (files, directories, links)
  per directory and snapshot (default 20,000: 165 ms, about 8 us an
  entry, almost all of it the ``lstat`` of each file, on the shared 2-core
  development machine at a load average of 7; ``bench/disk.py``); past
  that the walk stops, ``capped``
  is 1, ``bytes`` and ``files`` are NaN (a partial count would look flat
  and hide the growth) and a :class:`~tokdiag.errors.TokdiagWarning` says
  so once. Point the probe at the subdirectory the service writes, or
  raise ``max_entries``;
- symbolic links are never followed (neither to files nor to
  directories): only what lies in the tree is counted, and a link cannot
  lead the walk out of it or round in a loop;
- a hard-linked file is counted once per walk;
- a file or directory that vanishes mid-walk (rotation, pruning) is
  skipped; one that cannot be read (permission denied) is skipped and a
  warning says how many were, once per directory;
- a directory that does not exist (yet) holds 0 bytes and 0 files;
- ``os.scandir`` and ``lstat`` release the GIL, so a recorder thread walking
  a tree does not stop the service's other threads; in a ``td.track`` loop
  the walk is part of the snapshot's cost, which the schedule accounts for.

The probe never opens a file, holds nothing between snapshots but the
paths and its warning flags, and is never counted as memory: the ledger
splits RSS growth, and bytes on disk are not RSS.
"""

from __future__ import annotations

import math
import os
import stat
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from tokdiag.errors import ConfigError
from tokdiag.probes.base import OnceWarnings, SnapshotContext
from tokdiag.records import BYTES, FILES, FLAG, SECONDS, Record

__all__ = ["DEFAULT_MAX_ENTRIES", "DiskProbe", "DiskUsage", "disk_usage"]

DEFAULT_MAX_ENTRIES = 20_000
"""Entries walked per directory and snapshot before the walk stops (see the module docstring)."""


@dataclass(frozen=True, slots=True)
class DiskUsage:
    """What one walk of a tree found.

    ``bytes`` and ``files`` count regular files (hard links once);
    ``entries`` is every directory entry visited; ``capped`` says the walk
    stopped at its limit (then ``bytes`` and ``files`` are partial);
    ``unreadable`` counts entries skipped for permission or other OS
    errors; ``exists`` is False when the root did not exist.
    """

    bytes: int
    files: int
    entries: int
    capped: bool
    unreadable: int
    exists: bool
    seconds: float


def disk_usage(path: str | os.PathLike[str], *, max_entries: int = DEFAULT_MAX_ENTRIES) -> DiskUsage:
    """Walk ``path`` once, bounded, without following symbolic links; see the module docstring.

    ``path`` may be a directory or a single file (a log file). The root
    itself is taken as given (a root that is a link is followed once, to the
    directory the user named); nothing below it is followed.
    """
    max_entries = _check_max_entries(max_entries)
    t0 = time.perf_counter()
    root = os.fspath(path)
    size = files = entries = unreadable = 0
    capped = False
    try:
        st = os.stat(root)
    except FileNotFoundError:
        return DiskUsage(0, 0, 0, False, 0, False, time.perf_counter() - t0)
    except OSError:
        return DiskUsage(0, 0, 0, False, 1, True, time.perf_counter() - t0)
    if stat.S_ISREG(st.st_mode):
        return DiskUsage(int(st.st_size), 1, 1, False, 0, True, time.perf_counter() - t0)
    if not stat.S_ISDIR(st.st_mode):
        return DiskUsage(0, 0, 0, False, 0, True, time.perf_counter() - t0)
    linked: set[tuple[int, int]] = set()  # (device, inode) of files with several links, counted once
    stack = [root]
    while stack and not capped:
        top = stack.pop()
        try:
            it = os.scandir(top)
        except FileNotFoundError:  # removed since its parent was listed
            continue
        except OSError:
            unreadable += 1
            continue
        with it:
            while True:
                try:
                    entry = next(it)
                except StopIteration:
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    unreadable += 1
                    break
                entries += 1
                if entries > max_entries:
                    capped = True
                    entries = max_entries
                    break
                try:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(entry.path)
                    elif entry.is_file(follow_symlinks=False):
                        est = entry.stat(follow_symlinks=False)
                        if est.st_nlink > 1:
                            key = (est.st_dev, est.st_ino)
                            if key in linked:
                                continue
                            linked.add(key)
                        files += 1
                        size += est.st_size
                except FileNotFoundError:  # vanished between listing and stat (rotated, pruned)
                    continue
                except OSError:
                    unreadable += 1
    return DiskUsage(size, files, entries, capped, unreadable, True, time.perf_counter() - t0)


def _check_max_entries(max_entries: object) -> int:
    if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
        raise ConfigError(f"max_entries={max_entries!r}: pass a positive number of directory entries per walk, "
                          f"e.g. max_entries={DEFAULT_MAX_ENTRIES}")
    return max_entries


def _targets(paths: object) -> dict[str, str]:
    """``{subject: absolute path}`` from one path, a list of paths, or a ``{label: path}`` mapping."""
    if isinstance(paths, (str, os.PathLike)):
        items: list[tuple[str, object]] = [(os.fspath(paths), paths)]
    elif isinstance(paths, Mapping):
        items = [(str(label), p) for label, p in paths.items()]
    elif isinstance(paths, Sequence):
        items = [(os.fspath(p) if isinstance(p, (str, os.PathLike)) else repr(p), p) for p in paths]
    else:
        raise ConfigError(f"paths={paths!r}: pass a directory, a list of directories, or a {{label: directory}} "
                          "mapping, e.g. DiskProbe({'memory': '~/.aworld/memory'})")
    if not items:
        raise ConfigError("paths is empty: pass at least one directory a service writes, e.g. DiskProbe(['./data'])")
    out: dict[str, str] = {}
    for subject, p in items:
        if not isinstance(p, (str, os.PathLike)) or not os.fspath(p):
            raise ConfigError(f"disk path {p!r} (for {subject!r}) is not a path; pass a directory as a str or Path")
        if subject in out:
            raise ConfigError(f"disk path {subject!r} is given twice; give each directory once (or label them "
                              "with a {label: directory} mapping)")
        out[subject] = os.path.abspath(os.path.expanduser(os.fspath(p)))
    return out


class DiskProbe:
    """Bytes and files under directories a service writes; see the module docstring.

    Parameters
    ----------
    paths:
        A directory (or a single file), a list of them, or a ``{label: path}``
        mapping; the label (or the path as given) is the records' subject.
        ``~`` is expanded and a relative path is made absolute now, so a
        workload that changes its working directory is still measured in
        the same place.
    max_entries:
        Directory entries walked per directory and snapshot before the walk
        stops (``capped``).

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> _ = (d / "a.jsonl").write_text("x" * 2700)
    >>> [(r.metric, r.value) for r in DiskProbe({"store": d}).collect(SnapshotContext())][:2]
    [('bytes', 2700.0), ('files', 1.0)]
    """

    name = "disk"

    def __init__(self, paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]]
                 | Mapping[str, str | os.PathLike[str]], *, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        self.max_entries = _check_max_entries(max_entries)
        self.paths = _targets(paths)
        self.warned = OnceWarnings()
        for subject, path in self.paths.items():
            if not os.path.lexists(path):
                self._warn(subject, "missing", f"disk: {subject!r} ({path}) does not exist (yet); it is measured as "
                                               "0 bytes and 0 files until it does")

    def _warn(self, subject: str, kind: str, message: str) -> None:
        self.warned.warn(f"{subject}\0{kind}", message)

    def collect(self, ctx: SnapshotContext) -> list[Record]:
        records: list[Record] = []
        for subject, path in self.paths.items():
            use = disk_usage(path, max_entries=self.max_entries)
            if use.capped:
                self._warn(
                    subject,
                    "capped",
                    f"disk: {subject!r} has more than {self.max_entries:,} entries; the walk stops there, so its "
                    "bytes and files are not recorded (NaN); point the probe at the subdirectory the service "
                    "writes, or raise max_entries",
                )
            if use.unreadable:
                self._warn(
                    subject,
                    "unreadable",
                    f"disk: {use.unreadable} entr{'y' if use.unreadable == 1 else 'ies'} under {subject!r} could "
                    "not be read (permission denied or an OS error) and are not counted; run as a user that "
                    "can read the tree to count them",
                )
            known = not use.capped
            records += [
                Record("disk", subject, "bytes", float(use.bytes) if known else math.nan, BYTES),
                Record("disk", subject, "files", float(use.files) if known else math.nan, FILES),
                Record("disk", subject, "walk_s", use.seconds, SECONDS),
                Record("disk", subject, "capped", 1.0 if use.capped else 0.0, FLAG),
            ]
        return records

    def __repr__(self) -> str:
        return f"DiskProbe({sorted(self.paths)!r}, max_entries={self.max_entries})"
