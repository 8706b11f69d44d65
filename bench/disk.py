"""Cost of the disk probe's walk, side by side with the floor: listing the same tree with ``os.walk``.

Builds a tree of ``n_files`` empty files in folders of 1,000 under a
temporary folder, then times, interleaved ``rounds`` times:

- floor: ``os.walk`` (lists names, no ``stat`` per file, so no sizes);
- ``du``-like: ``os.walk`` plus ``os.lstat`` of every file (what any walk
  that reads sizes must do);
- ``tokdiag.probes.disk.disk_usage(tree, max_entries=n_files + folders)``
  (the whole tree) and with the default ``max_entries`` (capped when the
  tree is larger).

Prints medians of wall time, microseconds per entry, and the ratio of
tokdiag's full walk to the ``du``-like walk. No goal is asserted; the
figure sets the default ``max_entries`` (see :mod:`tokdiag.probes.disk`).

Run: ``.venv/bin/python bench/disk.py [n_files=100000] [rounds=3]``
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time

from tokdiag.probes.disk import DEFAULT_MAX_ENTRIES, disk_usage


def _tree(root: str, n_files: int) -> int:
    folders = 0
    for i in range(n_files):
        if i % 1000 == 0:
            folders += 1
            os.mkdir(os.path.join(root, f"d{folders}"))
        open(os.path.join(root, f"d{folders}", f"f{i}"), "wb").close()
    return folders


def _walk(root: str) -> None:
    for _ in os.walk(root):
        pass


def _du(root: str) -> None:
    for top, _, files in os.walk(root):
        for f in files:
            os.lstat(os.path.join(top, f))


def main() -> None:
    n_files = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    print(f"load average before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory(prefix="tokdiag-bench-disk-") as root:
        folders = _tree(root, n_files)
        entries = n_files + folders
        arms = {
            "os.walk (names only)": lambda: _walk(root),
            "os.walk + lstat": lambda: _du(root),
            "disk_usage, whole tree": lambda: disk_usage(root, max_entries=entries),
            f"disk_usage, max_entries={DEFAULT_MAX_ENTRIES:,}": lambda: disk_usage(root),
        }
        times: dict[str, list[float]] = {k: [] for k in arms}
        for _ in range(rounds):
            for name, fn in arms.items():
                t = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t)
        capped = disk_usage(root)
        print(f"{entries:,} entries ({n_files:,} files in {folders} folders), {rounds} rounds, medians:")
        for name, ts in times.items():
            walked = capped.entries if "max_entries" in name else entries
            med = statistics.median(ts)
            print(f"  {name:36s} {med * 1e3:8.1f} ms  {med / walked * 1e6:6.2f} us/entry ({walked:,} entries)")
        ratio = statistics.median(times["disk_usage, whole tree"]) / statistics.median(times["os.walk + lstat"])
        print(f"disk_usage / (os.walk + lstat): {ratio:.2f}x")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
