"""Headlines: a run never says "no leak" while one of its series leaks, and shows what it warned about."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tokdiag.errors import ConfigError, TokdiagWarning
from tokdiag.report.summary import (
    WARNING,
    Headline,
    headlines_from_journals,
    headlines_from_runs,
    read_summary,
    write_summary,
)

ROOT = Path(__file__).resolve().parents[1]

JOBS_APP = '''\
_DONE = []


class Job:
    def __init__(self, i):
        self.i = i
        self.payload = bytes(10 * 1024)


def handle(i):
    _DONE.append(Job(i))
'''
"""An app that keeps every job it handled (~10 KiB each): what issue 9 (B5) ran with ``watch Jobb``."""


def _jobs_app(folder: Path, package: str) -> None:
    (folder / package).mkdir()
    (folder / package / "__init__.py").write_text("")
    (folder / package / "jobs.py").write_text(JOBS_APP)


def _journal(path: Path, run: str, series: dict[tuple[str, str, str, str], list[float]], *,
             warnings: tuple[str, ...] = (), end: str | None = "completed") -> Path:
    """A journal with one snapshot every 5 steps of the given (probe, subject, metric, unit) series."""
    from tokdiag.recording.journal import JournalWriter, make_header
    from tokdiag.records import Record

    writer = JournalWriter(path, make_header(run, {}))
    n = len(next(iter(series.values())))
    for i in range(n):
        writer.snapshot(5 * i, 0.1 * i, [Record(probe, subject, metric, values[i], unit)
                                          for (probe, subject, metric, unit), values in series.items()])
    for message in warnings:
        writer.write({"kind": "warning", "message": message})
    if end is not None:
        writer.write({"kind": "end", "reason": end, "step": 5 * (n - 1), "elapsed_s": 0.1 * n, "message": "stopped"})
    writer.close()
    return path


def test_a_run_that_keeps_every_job_under_a_misspelt_watch_headlines_the_leak_and_the_warning(tmp_path, monkeypatch):
    # the real thing, in this process: the census sees Job pile up, the watch of 'Jobb' matches nothing
    import tokdiag as td

    _jobs_app(tmp_path, "b5app")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        from b5app.jobs import _DONE, handle

        journal = tmp_path / "your_workload.jsonl"
        with pytest.warns(TokdiagWarning, match="no class matches 'Jobb'; did you mean Job"):
            run = td.track(handle, steps=200, watch=["Jobb"], journal=journal, progress=False, why_alive=False)
        _DONE.clear()
    finally:
        for name in [m for m in sys.modules if m == "b5app" or m.startswith("b5app.")]:
            del sys.modules[name]
    v = run.verdicts()
    assert ((v.probe == "census") & (v.subject == "b5app.jobs.Job") & (v.metric == "count")
            & (v.verdict == "leak")).any()

    for heads in (headlines_from_journals([journal]), headlines_from_runs(run)):
        by_subject = {h.subject: h for h in heads}
        assert by_subject["b5app.jobs.Job count"].verdict == "leak"
        assert by_subject["b5app.jobs.Job count"].detail == "+1 objects/step"
        warning = by_subject["watch"]
        assert warning.verdict == WARNING and "'Jobb'" in warning.detail and "did you mean Job" in warning.detail
        assert "RSS" in by_subject  # the answer for the process is still there, whatever it is
        assert not any("gc_gen" in h.subject for h in heads)
        labels = [h.verdict for h in heads]
        first_other = next(i for i, label in enumerate(labels) if label != "leak")
        assert "leak" not in labels[first_other:]  # every leak before anything else
        assert labels[first_other] == WARNING  # then the warnings
    summary = read_summary(write_summary(tmp_path, heads).parent)
    assert summary is not None and summary.warnings == (warning,)


def test_every_leak_is_a_headline_most_severe_first_and_noise_counters_never(tmp_path):
    n = 20
    series = {
        ("process", "process", "rss", "bytes"): [100e6] * n,  # bounded by the allocator: not the answer here
        ("process", "process", "gc_gen0", "objects"): [10.0 * i for i in range(n)],  # climbs, says nothing
        ("process", "process", "gc_objects", "objects"): [1e5 + 30.0 * i for i in range(n)],
    }
    for k in range(7):  # more leaking census types than any limit
        series[("census", f"app.T{k}", "count", "objects")] = [1.0 * (k + 1) * i for i in range(n)]
        series[("census", f"app.T{k}", "bytes", "bytes")] = [64.0 * 1024 * (k + 1) * i for i in range(n)]
        series[("census", f"app.T{k}", "unowned_bytes", "bytes")] = [64.0 * 1024 * (k + 1) * i for i in range(n)]
    series[("census", "builtins.dict", "count", "objects")] = [500.0] * n
    journal = _journal(tmp_path / "j.jsonl", "service", series, warnings=(
        "watch: no class matches 'Jobb'; did you mean Job? (its count and bytes were not measured)",))
    heads = headlines_from_journals([journal], limit=1)
    subjects = [h.subject for h in heads]
    leaks = [h.subject for h in heads if h.verdict == "leak"]
    # bytes first, largest growth per step first (unowned_bytes folded into bytes), then the counts
    # the same way: gc_objects (+6 objects/step) before app.T6 (+1.4 objects/step)
    assert leaks == ([f"app.T{k} bytes" for k in reversed(range(7))]
                     + ["process gc_objects"] + [f"app.T{k} count" for k in reversed(range(7))])
    assert subjects[len(leaks)] == "watch" and heads[len(leaks)].verdict == WARNING
    assert subjects[len(leaks) + 1:] == ["RSS"]
    assert not any("gc_gen" in s or "unowned" in s or "builtins.dict" in s for s in subjects)


def test_several_runs_are_prefixed_and_one_that_did_not_complete_says_so(tmp_path):
    n = 12
    leaking = _journal(tmp_path / "a.jsonl", "as configured", {
        ("process", "process", "rss", "bytes"): [100e6 + 40 * 1024 * i for i in range(n)],
        ("watch", "app.Agent", "count", "objects"): [1.0 * i for i in range(n)],
    }, warnings=("RSS passed 90% of budget_mb",), end="budget")
    fixed = _journal(tmp_path / "b.jsonl", "fixed", {
        ("process", "process", "rss", "bytes"): [100e6] * n,
        ("watch", "app.Agent", "count", "objects"): [1.0] * n,
    })
    heads = headlines_from_journals([leaking, fixed, tmp_path / "missing.jsonl"])
    assert [(h.subject, h.verdict) for h in heads] == [
        ("as configured: RSS", "leak"), ("as configured: app.Agent count", "leak"),
        ("as configured: run", "warning"), ("as configured: run", "budget"), ("fixed: RSS", "flat")]
    assert heads[2].detail == "RSS passed 90% of budget_mb" and heads[3].detail == "stopped"
    from tokdiag.recording.run import load

    both = headlines_from_runs([load(leaking), load(fixed)], always=[("process", "rss"), ("watch", "count")])
    assert ("fixed: app.Agent count", "flat") in [(h.subject, h.verdict) for h in both]
    with pytest.raises(ConfigError, match="limit=-1"):
        headlines_from_runs([], limit=-1)


def test_summary_keeps_warnings_as_headlines_a_batch_index_shows(tmp_path):
    heads = [
        Headline("RewardAgent count", "leak", "+1 objects/step"),
        Headline("watch", WARNING, "no class matches 'X'"),
    ]
    path = write_summary(tmp_path, heads)
    payload = json.loads(path.read_text())
    assert payload["headlines"][1] == {"subject": "watch", "verdict": "warning", "detail": "no class matches 'X'"}
    summary = read_summary(tmp_path)
    assert summary is not None and summary.headlines == tuple(heads) and summary.warnings == (heads[1],)


@pytest.mark.slow
def test_tokdiag_run_of_your_workload_with_a_misspelt_watch_reports_the_leak_and_the_warning(tmp_path, monkeypatch):
    # issue 9, B5, end to end: the kernel, the notebook's summary cell, summary.json
    from tokdiag.cli import main

    _jobs_app(tmp_path, "myapp")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    code = main(["run", "your_workload", "-p", "target", "myapp.jobs:handle",
                 "-p", "watch", "Jobb", "-p", "steps", "200", "-o", "out"])
    assert code == 0
    heads = json.loads((tmp_path / "out" / "summary.json").read_text())["headlines"]
    by_subject = {h["subject"]: h for h in heads}
    assert by_subject["myapp.jobs.Job count"]["verdict"] == "leak", heads
    assert by_subject["watch"]["verdict"] == "warning" and "did you mean Job" in by_subject["watch"]["detail"]
    assert heads[0]["verdict"] == "leak" and not any("gc_gen" in h["subject"] for h in heads)
