"""The disk probe: bounded walks, and verdicts that read a growing directory as a leak of its own kind."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import tokdiag as td
from tokdiag.analysis import classify, ledger, verdicts
from tokdiag.errors import ConfigError, TokdiagWarning
from tokdiag.probes import SnapshotContext
from tokdiag.probes import disk as disk_mod
from tokdiag.probes.disk import DiskProbe, disk_usage
from tokdiag.records import COLUMNS

RECORD = 2700  # bytes a task appends to AWorld's memory store, about


def _records(probe: DiskProbe) -> dict[tuple[str, str], float]:
    return {(r.subject, r.metric): r.value for r in probe.collect(SnapshotContext())}


# --------------------------------------------------------------------------- the walk

def test_counts_file_sizes_and_files_in_nested_directories(tmp_path: Path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "x.jsonl").write_bytes(b"x" * 1000)
    (tmp_path / "a" / "y").write_bytes(b"y" * 234)
    (tmp_path / "a" / "b" / "z").write_bytes(b"")
    use = disk_usage(tmp_path)
    assert (use.bytes, use.files, use.capped, use.unreadable, use.exists) == (1234, 3, False, 0, True)
    assert use.entries == 5  # three files, two directories


def test_size_is_the_files_length_not_its_blocks(tmp_path: Path):
    # a sparse file: 10 MB long, a few blocks on disk; a one-byte file: one block on disk
    with open(tmp_path / "sparse", "wb") as fh:
        fh.seek(10_000_000 - 1)
        fh.write(b"\0")
    (tmp_path / "small").write_bytes(b"1")
    assert disk_usage(tmp_path).bytes == 10_000_001


def test_hard_links_count_once(tmp_path: Path):
    (tmp_path / "f").write_bytes(b"x" * 500)
    os.link(tmp_path / "f", tmp_path / "g")
    use = disk_usage(tmp_path)
    assert (use.bytes, use.files) == (500, 1)


def test_symbolic_links_are_never_followed(tmp_path: Path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "big").write_bytes(b"x" * 100_000)
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "mine").write_bytes(b"m" * 10)
    (tree / "to_dir").symlink_to(outside, target_is_directory=True)
    (tree / "to_file").symlink_to(outside / "big")
    (tree / "loop").symlink_to(tree, target_is_directory=True)
    (tree / "dangling").symlink_to(tmp_path / "nowhere")
    use = disk_usage(tree)
    assert (use.bytes, use.files, use.capped) == (10, 1, False)


def test_a_root_that_is_a_file_or_missing(tmp_path: Path):
    (tmp_path / "app.log").write_bytes(b"l" * 77)
    assert (disk_usage(tmp_path / "app.log").bytes, disk_usage(tmp_path / "app.log").files) == (77, 1)
    gone = disk_usage(tmp_path / "not-yet")
    assert (gone.bytes, gone.files, gone.exists) == (0, 0, False)


def test_the_walk_stops_at_max_entries(tmp_path: Path):
    for i in range(30):
        (tmp_path / f"f{i}").write_bytes(b"x")
    use = disk_usage(tmp_path, max_entries=10)
    assert use.capped and use.entries == 10 and use.files <= 10
    assert not disk_usage(tmp_path, max_entries=30).capped


def _listing_then(action):
    """os.scandir that lists a directory completely, then runs ``action(path)``, then yields the entries."""
    real = os.scandir

    class Listing:
        def __init__(self, path):
            with real(path) as it:
                self.entries = list(it)
            action(path)
            self._it = iter(self.entries)

        def __iter__(self):
            return self

        def __next__(self):
            return next(self._it)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return None

    return Listing


def test_files_and_directories_vanishing_mid_walk_are_skipped(tmp_path: Path, monkeypatch):
    (tmp_path / "keep").write_bytes(b"k" * 100)
    (tmp_path / "rotated").write_bytes(b"r" * 1000)
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "x").write_bytes(b"x" * 5000)

    def prune(path):
        if Path(path) == tmp_path:  # listed; now the rotation removes a file and a folder
            (tmp_path / "rotated").unlink()
            (tmp_path / "old" / "x").unlink()
            (tmp_path / "old").rmdir()

    monkeypatch.setattr(disk_mod.os, "scandir", _listing_then(prune))
    use = disk_usage(tmp_path)
    assert (use.bytes, use.files, use.unreadable) == (100, 1, 0)


def test_unreadable_directories_are_skipped_and_warned_once(tmp_path: Path, monkeypatch):
    (tmp_path / "ok").write_bytes(b"o" * 10)
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "s").write_bytes(b"s" * 999)
    real = os.scandir

    def scandir(path):  # the tests run as root, where chmod 000 does not stop a read
        if Path(path).name == "secret":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(disk_mod.os, "scandir", scandir)
    probe = DiskProbe({"store": tmp_path})
    with pytest.warns(TokdiagWarning, match=r"1 entry under 'store' could not be read"):
        recs = _records(probe)
    assert recs[("store", "bytes")] == 10 and recs[("store", "files")] == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _records(probe)  # once per directory, not once per snapshot


# --------------------------------------------------------------------------- the probe

def test_records_per_directory(tmp_path: Path):
    (tmp_path / "mem").mkdir()
    (tmp_path / "mem" / "s.jsonl").write_bytes(b"m" * RECORD)
    (tmp_path / "app.log").write_bytes(b"l" * 10)
    probe = DiskProbe({"memory": tmp_path / "mem", "log": tmp_path / "app.log"})
    recs = probe.collect(SnapshotContext())
    got = {(r.subject, r.metric): (r.value, r.unit, r.probe) for r in recs}
    assert got[("memory", "bytes")] == (RECORD, "bytes", "disk")
    assert got[("memory", "files")] == (1.0, "files", "disk")
    assert got[("memory", "capped")] == (0.0, "flag", "disk")
    assert got[("memory", "walk_s")][1] == "seconds" and got[("memory", "walk_s")][0] >= 0
    assert got[("log", "bytes")][0] == 10
    assert {s for s, _ in got} == {"memory", "log"}


def test_subjects_are_the_paths_as_given_and_relative_paths_are_fixed_at_start(tmp_path: Path, monkeypatch):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "f").write_bytes(b"f" * 42)
    monkeypatch.chdir(tmp_path)
    probe = DiskProbe(["data"])
    monkeypatch.chdir("/")  # a workload that changes directory (AWorld's steps do)
    assert _records(probe)[("data", "bytes")] == 42


def test_a_capped_walk_records_nan_not_a_partial_count(tmp_path: Path):
    for i in range(20):
        (tmp_path / f"f{i}").write_bytes(b"x" * 10)
    probe = DiskProbe({"big": tmp_path}, max_entries=5)
    with pytest.warns(TokdiagWarning, match=r"'big' has more than 5 entries"):
        recs = _records(probe)
    assert math.isnan(recs[("big", "bytes")]) and math.isnan(recs[("big", "files")])
    assert recs[("big", "capped")] == 1.0


def test_a_missing_directory_warns_and_reads_zero(tmp_path: Path):
    with pytest.warns(TokdiagWarning, match="does not exist"):
        probe = DiskProbe({"later": tmp_path / "later"})
    assert _records(probe)[("later", "bytes")] == 0
    (tmp_path / "later").mkdir()
    (tmp_path / "later" / "x").write_bytes(b"x" * 5)
    assert _records(probe)[("later", "bytes")] == 5


@pytest.mark.parametrize("bad, match", [
    ([], "paths is empty"),
    (42, "pass a directory"),
    ([1], "is not a path"),
    (["a", "a"], "given twice"),
])
def test_bad_paths_are_config_errors(bad, match):
    with pytest.raises(ConfigError, match=match):
        DiskProbe(bad)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "10"])
def test_bad_max_entries(tmp_path: Path, bad):
    with pytest.raises(ConfigError, match="max_entries"):
        DiskProbe([tmp_path], max_entries=bad)


# --------------------------------------------------------------------------- verdicts and the ledger

def _append_a_file_per_step(folder: Path):
    def step(i: int) -> None:
        (folder / f"task-{i:05d}.json").write_bytes(b"t" * RECORD)
    return step


def _keep_the_last(folder: Path, keep: int):
    def step(i: int) -> None:
        (folder / f"task-{i:05d}.json").write_bytes(b"t" * RECORD)
        old = folder / f"task-{i - keep:05d}.json"
        if old.exists():
            old.unlink()
    return step


def _append_and_rotate(folder: Path, max_bytes: int, backups: int):
    """One log file, appended every step; rotated at ``max_bytes`` like logging.handlers.RotatingFileHandler."""
    log = folder / "app.log"

    def step(i: int) -> None:
        if log.exists() and log.stat().st_size + RECORD > max_bytes:
            for k in range(backups, 0, -1):
                src = folder / (f"app.log.{k - 1}" if k > 1 else "app.log")
                if src.exists():
                    src.replace(folder / f"app.log.{k}")
        with open(log, "ab") as fh:
            fh.write(b"r" * RECORD)
    return step


def _disk_verdicts(run: td.Run) -> dict[str, pd.Series]:
    v = run.verdicts()
    return {m: row for m, row in ((r["metric"], r) for _, r in v[v["probe"] == "disk"].iterrows())}


def test_a_directory_that_gains_a_file_per_step_is_a_leak(tmp_path: Path):
    store = tmp_path / "store"
    store.mkdir()
    run = td.track(_append_a_file_per_step(store), steps=60, every=5, census=False, progress=False,
                   probes=[DiskProbe({"store": store})])
    got = _disk_verdicts(run)
    assert set(got) == {"bytes", "files"}  # walk_s (seconds) and capped (a flag) are not judged
    assert got["bytes"]["verdict"] == "leak" and got["bytes"]["per_step"] == RECORD
    assert got["files"]["verdict"] == "leak" and got["files"]["per_step"] == 1
    assert "2.64 KiB/step" in got["bytes"]["reason"]


@pytest.mark.parametrize("workload", ["prune", "rotate"])
def test_a_directory_that_is_pruned_or_rotated_is_not_a_leak(tmp_path: Path, workload: str):
    store = tmp_path / "store"
    store.mkdir()
    step = _keep_the_last(store, 30) if workload == "prune" else _append_and_rotate(store, 10 * RECORD, 3)
    run = td.track(step, steps=150, every=5, census=False, progress=False, probes=[DiskProbe({"store": store})])
    got = _disk_verdicts(run)
    assert got["bytes"]["verdict"] == "bounded", got["bytes"]["reason"]
    files = run.series("disk", "store", "files")
    assert files.max() == (30 if workload == "prune" else 4)
    # 30 files kept is a bounded growth; 4 (a log and 3 backups) is below the practical minimum of 8 files
    assert got["files"]["verdict"] == ("bounded" if workload == "prune" else "flat"), got["files"]["reason"]


def test_disk_bytes_are_not_rss_in_the_ledger():
    rows = []
    for s in range(0, 101, 10):
        rows.append(("r", s, s / 10, "process", "process", "rss", 100e6 + 1000.0 * s, "bytes"))
        rows.append(("r", s, s / 10, "disk", "store", "bytes", 50e6 * s, "bytes"))
        rows.append(("r", s, s / 10, "disk", "store", "files", float(s), "files"))
    tl = pd.DataFrame(rows, columns=list(COLUMNS))
    led = ledger(tl)
    assert "store" not in set(led["owner"]) and "disk" not in set(led["kind"])
    at_end = led[led["step"] == 100]
    assert at_end["bytes"].sum() == pytest.approx(100_000.0)  # the RSS growth, nothing more
    v = verdicts(tl).set_index(["probe", "metric"])
    assert v.loc[("disk", "bytes"), "verdict"] == "leak" and v.loc[("disk", "files"), "verdict"] == "leak"


def test_files_use_the_practical_minimum_of_counts():
    # one lock file created once is not a leak; neither are 5 files over a long run (below 8)
    steps = np.arange(0, 201, 10)
    assert classify(steps, np.where(steps >= 30, 1.0, 0.0), unit="files").verdict == "flat"
    assert classify(steps, np.where(steps >= 30, 20.0, 0.0), unit="files").verdict == "step"
    assert classify(steps, np.minimum(steps // 40, 5).astype(float), unit="files").verdict != "leak"
    # ... but a file every snapshot is, even when fewer than 8 in all (the every-interval rule of exact counts)
    assert classify(np.arange(0, 7), np.arange(0, 7, dtype=float), unit="files").verdict == "leak"


def test_a_nearly_exact_line_is_not_split_into_a_warm_up_by_a_few_bytes():
    # AWorld's memory store over 30 tasks, as measured (records differ by a few bytes in length): the
    # robust noise is 0, and a split at a 7-byte wiggle used to leave an 18-step tail "flat" at 3.3 KB/step
    steps = np.arange(0, 31, 3)
    store = [0, 9994, 19986, 29978, 39977, 49978, 59979, 69980, 79981, 89982, 99983]
    v = classify(steps, store, unit="bytes")
    assert v.verdict == "leak" and v.warmup_steps == 0, v.reason
    assert round(v.per_step) == 3333


@pytest.mark.slow
def test_aworld_memory_store_grows_per_task_and_is_judged_a_leak(tmp_path: Path):
    pytest.importorskip("tokdiag_workloads.aworld")
    import importlib.util

    if importlib.util.find_spec("aworld") is None:  # pragma: no cover - the aworld extra is installed in CI
        pytest.skip("needs the aworld extra")
    script = textwrap.dedent("""
        import json, sys
        import tokdiag as td
        from tokdiag.probes.disk import DiskProbe
        from tokdiag_workloads.aworld import aworld_agent_workload, sandbox
        with aworld_agent_workload() as step:
            probe = DiskProbe({"memory": sandbox().memory, "logs": sandbox().logs})
            run = td.track(step, steps=30, every=3, census=False, progress=False, why_alive=False, probes=[probe])
        v = run.verdicts()
        v = v[v["probe"] == "disk"]
        print(json.dumps(v[["subject", "metric", "verdict", "per_step"]].to_dict("records")))
    """)
    env = {**os.environ, "PYTHONPATH": str(Path(td.__file__).parents[1]), "TMPDIR": str(tmp_path),
           "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=600, env=env,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    import json

    rows = {(r["subject"], r["metric"]): r for r in json.loads(out.stdout.strip().splitlines()[-1])}
    memory = rows[("memory", "bytes")]
    assert memory["verdict"] == "leak"
    assert 2000 < memory["per_step"] < 6000  # a few KB per task: one JSON record appended to sessions/default.jsonl


def test_a_growing_directory_makes_the_headlines(tmp_path: Path):
    from tokdiag.report.summary import headlines_from_journals

    store = tmp_path / "store"
    store.mkdir()
    journal = tmp_path / "j.jsonl"
    td.track(_append_a_file_per_step(store), steps=60, every=5, census=False, progress=False, journal=journal,
             probes=[DiskProbe({"store": store})])
    heads = {h.subject: h for h in headlines_from_journals([journal])}
    assert heads["store bytes"].verdict == "leak" and heads["store bytes"].detail == "+2.64 KiB/step"
