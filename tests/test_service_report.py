"""A service's journals reported as one (issue 13 items 5, 6, 7, 8 end to end): which journals are one service,
per-process runs and the total, the time to the limit, --disk and --limit where they are given, the service
notebook through ``tokdiag report``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from late_imports import lazy

import tokdiag as td
from tokdiag.cli import main
from tokdiag.errors import ConfigError
from tokdiag.recording.journal import JournalWriter, make_header
from tokdiag.recording.service import (
    journal_for,
    load_service,
    one_service,
    service_parts,
)
from tokdiag.records import Record
from tokdiag.report.service import (
    SERVICE_REPORT_NOTEBOOK,
    overview,
    time_to_limit_table,
)
from tokdiag.report.summary import headlines_from_runs

nbformat = lazy("nbformat")  # at first use, not at collection (tests/late_imports.py)

MiB = 1 << 20
GiB = 1 << 30
REPO = Path(__file__).resolve().parents[1]


def _journal(path: Path, pid: int, rss_per_s: float, *, service: str | None = None, limit: int | None = None,
             memory_limit: dict | None = None) -> Path:
    """A recorder's journal of ``pid``: a snapshot every 5 s for a minute, RSS from 100 MiB at ``rss_per_s``."""
    params = {"step_unit": "second", "pid": pid}
    if service is not None:
        params["service"] = service
    if limit is not None:
        params["limit"] = limit
    header = make_header(path.stem, params)
    header["pid"] = pid
    header["memory_limit"] = memory_limit
    with JournalWriter(path, header) as w:
        for s in range(0, 61, 5):
            w.snapshot(s, float(s), [Record("process", "process", "rss", 100 * MiB + s * rss_per_s, "bytes"),
                                     Record("watch", "app.Job", "count", float(s) if rss_per_s else 3.0, "objects")])
        w.write({"kind": "end", "reason": "completed", "step": 60, "elapsed_s": 60.0, "message": "for_s"})
    return path


# -- which journals are one service ----------------------------------------------------------------------------

def test_one_service_knows_a_services_journals_by_their_headers_or_names(tmp_path):
    named = [_journal(tmp_path / f"svc-{pid}.jsonl", pid, MiB, service="svc") for pid in (11, 12)]
    attached = [_journal(journal_for(tmp_path / "att.jsonl", pid, True), pid, MiB) for pid in (21, 22)]
    plain = [_journal(tmp_path / f"{n}.jsonl", pid, MiB) for n, pid in (("a", 31), ("b", 32))]
    same_pid = [_journal(tmp_path / f"x.pid000004{n}.jsonl", 40, MiB) for n in (1, 2)]
    assert one_service(named) and one_service(attached)
    assert one_service([tmp_path / "att.jsonl"])  # the -o path of tokdiag attach
    assert one_service([str(tmp_path / "svc-*.jsonl")])  # a quoted glob, judged on what it matches
    assert not one_service(plain) and not one_service(same_pid)
    assert not one_service([named[0]])  # one journal: the journal report, unless --service
    assert not one_service([named[0], plain[0]]) and not one_service([tmp_path / "missing.jsonl"])
    assert not one_service([str(tmp_path / "[ab].jsonl")])


def test_record_names_its_service_and_load_service_uses_it(tmp_path):
    with td.record(tmp_path / "api-{pid}.jsonl", every_s=60, census=False, why_alive=False):
        pass
    (journal,) = tmp_path.glob("api-*.jsonl")
    assert td.load(journal).params["service"] == "api"
    assert load_service(journal).name == "api"


def test_service_parts_give_each_process_its_own_header_and_the_total(tmp_path):
    _journal(journal_for(tmp_path / "svc.jsonl", 11, True), 11, MiB, memory_limit={"bytes": 2 * GiB, "source": "a"})
    _journal(journal_for(tmp_path / "svc.jsonl", 12, True), 12, 0.0, memory_limit={"bytes": 3 * GiB, "source": "b"})
    svc = load_service(tmp_path / "svc.jsonl")
    parts = service_parts(svc)
    assert list(parts) == ["svc pid 11", "svc pid 12", "svc (total)"]
    assert [p.header["memory_limit"]["bytes"] for p in parts.values()] == [2 * GiB, 3 * GiB, 2 * GiB]
    assert all(set(p.timeline.run) == {label} for label, p in parts.items())
    assert sum(len(p.timeline) for p in parts.values()) == len(svc.timeline)
    table = overview(parts)
    assert table.pid.tolist()[:2] == [11, 12] and table.pid.isna().tolist() == [False, False, True]
    assert table.rss_mib_end.tolist() == [160.0, 100.0, 260.0]
    one = service_parts(load_service(journal_for(tmp_path / "svc.jsonl", 11, True)))
    assert list(one) == ["svc pid 11"]  # one process: no total
    with pytest.raises(ConfigError, match="td.load_service"):
        service_parts(td.load(journal_for(tmp_path / "svc.jsonl", 11, True)))


def test_a_directory_every_process_measures_counts_once_in_the_total(tmp_path):
    for pid, seen in ((11, 1000.0), (12, 1500.0)):  # the same store, walked a moment apart
        header = make_header("svc", {"service": "svc"})
        header["pid"] = pid
        with JournalWriter(journal_for(tmp_path / "svc.jsonl", pid, True), header) as w:
            for s in (0, 5, 10):
                w.snapshot(s, float(s), [Record("disk", "store", "bytes", seen * (s + 1), "bytes"),
                                         Record("disk", "store", "files", 3.0, "files"),
                                         Record("process", "process", "rss", 100.0 * MiB, "bytes")])
    tl = load_service(tmp_path / "svc.jsonl").timeline
    total = tl[tl.run == "svc (total)"]
    assert total[total.metric == "bytes"].set_index("step").value.to_dict() == {0: 1500.0, 5: 9000.0, 10: 16500.0}
    assert total[total.metric == "files"].value.tolist() == [3.0, 3.0, 3.0]
    assert total[total.metric == "rss"].value.tolist() == [200.0 * MiB] * 3  # memory is each process's own


# -- the time to the limit -----------------------------------------------------------------------------------

def test_time_to_limit_table_says_when_each_process_and_the_total_reach_the_limit(tmp_path):
    for pid, rate in ((11, MiB), (12, MiB), (13, 0.0)):
        _journal(journal_for(tmp_path / "svc.jsonl", pid, True), pid, rate)
    table = time_to_limit_table(service_parts(load_service(tmp_path / "svc.jsonl")), "1GiB").set_index("run")
    assert table.status.to_dict() == {"svc pid 11": "limit", "svc pid 12": "limit", "svc pid 13": "no leak",
                                      "svc (total)": "limit"}
    # 1 GiB - 160 MiB left at 1 MiB/s; the total has 1 GiB - 420 MiB left at 2 MiB/s
    assert table.seconds["svc pid 11"] == pytest.approx((1024 - 160) * 1.0)
    assert table.seconds["svc (total)"] == pytest.approx((1024 - 420) / 2)
    assert table.text["svc (total)"] == "at +2 MiB per second, the 1 GiB limit is reached in ~5 min"


def test_a_limit_given_when_recording_counts_before_the_cgroups(tmp_path):
    path = _journal(tmp_path / "j.jsonl", 1, MiB, limit=GiB, memory_limit={"bytes": 8 * GiB, "source": "cgroup"})
    when = td.load(path).time_to_limit()
    assert (when.limit_bytes, when.limit_source) == (GiB, "given when recording")
    assert td.load(path).time_to_limit("2GiB").limit_bytes == 2 * GiB  # one given now wins
    assert "seconds per hour" not in when.text  # a step that is a second needs no pace


def test_the_headlines_of_a_loaded_service_count_each_leaking_process_down_to_the_limit(tmp_path):
    for pid in (11, 12):
        _journal(journal_for(tmp_path / "svc.jsonl", pid, True), pid, MiB)
    svc = load_service(tmp_path / "svc.jsonl")
    expected = {"svc pid 11: RSS": "1 GiB limit in ~14 min", "svc pid 12: RSS": "1 GiB limit in ~14 min",
                "svc (total): RSS": "1 GiB limit in ~6 min"}  # (1024 - 160) MiB at 1 MiB/s; (1024 - 320) at 2
    for runs in (svc, list(service_parts(svc).values())):
        got = headlines_from_runs(runs, memory_limit="1GiB")
        assert {h.subject: h.detail.rsplit("; ", 1)[-1] for h in got if h.subject.endswith("RSS")} == expected


# -- --disk and --limit where they are given -----------------------------------------------------------------

def test_tracker_and_record_follow_the_disk_and_record_the_limit(tmp_path):
    store = tmp_path / "store"
    store.mkdir()

    def step(i: int) -> None:
        with open(store / "memory.jsonl", "a") as fh:
            fh.write("x" * 5000)

    run = td.track(step, steps=24, every=3, census=False, progress=False, why_alive=False, disk={"memory": store})
    assert run.params["disk"] == ["memory"]
    v = run.verdicts()
    assert v[(v.probe == "disk") & (v.metric == "bytes")].verdict.tolist() == ["leak"]
    assert run.series("disk", "memory", "bytes").iloc[-1] == 24 * 5000
    with td.record(tmp_path / "svc-{pid}.jsonl", every_s=60, census=False, why_alive=False, disk=[str(store)],
                   limit="2GiB") as rec:
        pass
    recorded = td.load(rec.journal)
    assert recorded.params["limit"] == 2 * GiB and recorded.params["disk"] == [str(store)]
    assert recorded.series("disk", str(store), "bytes").iloc[-1] == 24 * 5000
    with pytest.raises(ConfigError, match=r"limit='lots' is not a size"):
        td.record(tmp_path / "bad.jsonl", limit="lots")
    assert not (tmp_path / "bad.jsonl").exists()


def test_report_options_are_checked_before_any_kernel_starts(tmp_path, capsys):
    journal = _journal(tmp_path / "j.jsonl", 1, MiB)
    assert main(["report", str(journal), "--limit", "lots", "-o", str(tmp_path / "out")]) == 2
    assert "limit='lots' is not a size" in capsys.readouterr().err
    assert main(["report", "--service", str(tmp_path / "none.jsonl"), "-o", str(tmp_path / "out")]) == 2
    assert "no journal at" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_the_service_notebook_is_clean_with_one_documented_parameters_cell():
    from tokdiag.report.kernel import notebook_parameters

    nb = nbformat.read(SERVICE_REPORT_NOTEBOOK, as_version=4)
    assert [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])].__len__() == 1
    assert all(c.outputs == [] and c.execution_count is None for c in nb.cells if c.cell_type == "code")
    assert set(notebook_parameters(SERVICE_REPORT_NOTEBOOK)) == {"journals", "limit", "output_dir"}
    import fnmatch
    import tomllib

    globs = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["tokdiag"]
    assert any(fnmatch.fnmatch("report/notebooks/service.ipynb", g) for g in globs)  # shipped with the package


# -- the service report, end to end ---------------------------------------------------------------------------

WORKER = """
import os, sys, time
import tokdiag as td

class Job:
    def __init__(self):
        self.payload = bytearray(100_000)

kept = []
with td.record("svc-{pid}.jsonl", every_s=1, for_s=8, watch=["Job"], limit="1GiB", disk={"store": "store"}):
    t0 = time.monotonic()
    while time.monotonic() - t0 < 8.5:
        kept.append(Job())
        with open(os.path.join("store", f"{os.getpid()}.log"), "a") as fh:
            fh.write("x" * 2000)
        time.sleep(0.05)
"""


@pytest.mark.slow
def test_tokdiag_report_shows_a_services_processes_and_their_total(tmp_path, monkeypatch):
    (tmp_path / "store").mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    workers = [subprocess.Popen([sys.executable, "-c", WORKER], cwd=tmp_path, env=env) for _ in range(2)]
    assert [w.wait(120) for w in workers] == [0, 0]
    journals = sorted(str(p) for p in tmp_path.glob("svc-*.jsonl"))
    assert len(journals) == 2
    monkeypatch.chdir(tmp_path)
    assert main(["report", *journals, "-o", "out"]) == 0  # found to be one service by their headers
    page = (tmp_path / "out" / "service.html").read_text()
    nb = nbformat.read(tmp_path / "out" / "service.ipynb", as_version=4)
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "svc (total): at +" in printed and "the 1 GiB limit is reached in" in printed
    assert printed.count("module __main__ -> kept[") == 2  # each process's why-alive chain
    assert "svc (total)" in page and str(tmp_path) not in page
    # verdicts, RSS, a ledger and a count chart per process and for the total, the chains
    assert page.count('class="tokdiag-figure"') == 1 + 1 + 3 + 3 + 1
    headlines = json.loads((tmp_path / "out" / "summary.json").read_text())["headlines"]
    rss = {h["subject"]: h for h in headlines if h["subject"].endswith(": RSS")}
    assert rss["svc (total): RSS"]["verdict"] == "leak" and "1 GiB limit in" in rss["svc (total): RSS"]["detail"]
    disk = [h for h in headlines if h["subject"] == "svc (total): store bytes"]
    assert disk and disk[0]["verdict"] == "leak"
