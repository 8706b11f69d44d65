"""The answer: leaks first with what holds them, warnings never dropped, never a false all-clear (synthetic runs)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from tokdiag.analysis import answer, findings
from tokdiag.analysis.answer import MAX_LEAK_LINES
from tokdiag.errors import ConfigError
from tokdiag.recording.run import Run
from tokdiag.records import COLUMNS
from tokdiag.report.summary import (
    WARNING,
    headlines_from_runs,
    read_summary,
    write_summary,
)

KB = 1024
MB = 1024 * 1024
STEPS = range(0, 301, 10)


def _tl(series: dict[tuple[str, str, str, str], object], run: str = "jobs") -> pd.DataFrame:
    """A timeline from {(probe, subject, metric, unit): f(step) or list}, one snapshot every 10 steps, 1 s apart."""
    rows = []
    for (probe, subject, metric, unit), f in series.items():
        for n, s in enumerate(STEPS):
            v = f[n] if isinstance(f, (list, np.ndarray)) else f(s)  # type: ignore[operator]
            rows.append((run, s, s / 10, probe, subject, metric, float(v), unit))
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _noisy(per_step: float, base: float = 80 * MB, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return base + per_step * np.asarray(STEPS, dtype=float) + rng.integers(0, 4, len(STEPS)) * 4096.0


CHAIN = {"root": "module myapp.jobs", "root_kind": "module", "target_type": "Job",
         "edges": [{"kind": "attr", "label": "_DONE", "source_type": "module"},
                   {"kind": "index", "label": "12", "source_type": "list"}]}
GC_CHAIN = {"root": "gc object", "root_kind": "gc", "target_type": "Job", "edges": []}


def _job_run(**kw: object) -> Run:
    tl = _tl({
        ("process", "process", "rss", "bytes"): _noisy(11 * KB),
        ("process", "process", "gc_objects", "objects"): lambda s: 50_000 + 2.0 * s,
        ("process", "process", "gc_gen0", "objects"): lambda s: 700 - s % 500,
        ("watch", "myapp.jobs.Job", "count", "objects"): lambda s: 1.0 * s,
        ("watch", "myapp.jobs.Job", "bytes", "bytes"): lambda s: 10752.0 * s,
        ("census", "myapp.jobs.Job", "count", "objects"): lambda s: 1.0 * s,
        ("census", "myapp.jobs.Job", "bytes", "bytes"): lambda s: 56.0 * s,
        ("census", "myapp.jobs.Job", "unowned_bytes", "bytes"): lambda s: 0.0,
        ("tracker", "tokdiag", "self_bytes", "bytes"): lambda s: 200 * KB + 300.0 * s,  # tokdiag's own: not a finding
        ("tracker", "tokdiag", "snapshot_s", "seconds"): lambda s: 0.05,
    })
    return Run("jobs", tl, retention={"myapp.jobs.Job": [GC_CHAIN, CHAIN]}, **kw)  # type: ignore[arg-type]


def test_a_leak_comes_first_with_its_growth_per_step_and_what_holds_it():
    a = answer(_job_run())
    first = a.findings[0]
    assert first.kind == "leak" and first.owner == "myapp.jobs.Job" and first.name == "Job"
    # watch bytes and count merged with the census count into one owner; the module-rooted chain, not the gc one
    assert a.text.splitlines()[0] == "Leak: Job +10.5 KiB (+1 object) per step, held by module myapp.jobs -> _DONE[12]."
    assert a.markdown.splitlines()[0] == ("- Leak: `Job` +10.5 KiB (+1 object) per step, held by "
                                          "`module myapp.jobs -> _DONE[12]`.")
    assert "<code>Job</code>" in a.html and "<code>module myapp.jobs -&gt; _DONE[12]</code>" in a.html
    assert [f.kind for f in a.findings].count("leak") == 1  # Job once, though watch and census both judged it
    # gc_objects is folded into the class that makes it grow; the generation counters and tokdiag are no findings
    assert any(s.metric == "gc_objects" for s in first.series)
    assert not any(s.metric == "gc_gen0" for f in a.findings for s in f.series)
    assert not any(s.probe == "tracker" for f in a.findings for s in f.series)
    own = [f for f in a.findings if f.kind == "self"]
    assert len(own) == 1 and own[0].text.startswith("tokdiag's own cost (not in the findings)")
    assert a.findings[-1].kind == "self"
    process = next(f for f in a.findings if f.kind == "process")
    assert process.text.startswith("Process: RSS leaks, +107 MiB per 10,000 steps")


def test_every_leak_of_every_probe_is_a_finding_and_a_census_only_class_says_how_to_get_its_chain():
    tl = _tl({
        ("process", "process", "rss", "bytes"): _noisy(200 * KB),
        ("census", "app.Record", "count", "objects"): lambda s: 2.0 * s,
        ("cache", "app.render:_TEMPLATES", "entries", "entries"): lambda s: 1.0 * s,
        ("cache", "app.render:_TEMPLATES", "bytes", "bytes"): lambda s: 7.0 * KB * s,
        ("native", "ssl.SSLContext", "native_bytes", "bytes"): lambda s: 830.0 * KB * (s // 10),
        ("native", "ssl.SSLContext", "count", "objects"): lambda s: 1.0 * (s // 10),
        ("allocator", "glibc", "free", "bytes"): lambda s: 2 * MB + 30.0 * KB * s,
        ("disk", "/var/log/app", "bytes", "bytes"): lambda s: 4.0 * KB * s,
        ("alloc", "app/render.py:12", "bytes", "bytes"): lambda s: 7.0 * KB * s,
        ("alloc", "other/lib.py:3", "bytes", "bytes"): lambda s: 3.0 * KB * s,
    })
    found = findings(Run("svc", tl))
    leaks = {f.owner: f for f in found if f.kind == "leak"}
    assert set(leaks) == {"app.Record", "app.render:_TEMPLATES", "ssl.SSLContext", "glibc free (kept by malloc)",
                          "/var/log/app", "other/lib.py:3"}  # the site in app/render.py went to the cache
    assert leaks["app.render:_TEMPLATES"].sites == ("app/render.py:12",)
    assert "allocated at app/render.py:12" in leaks["app.render:_TEMPLATES"].text
    assert leaks["app.render:_TEMPLATES"].text.startswith("Leak: cache _TEMPLATES +7 KiB (+1 entry) per step")
    assert "fragmentation" in leaks["glibc free (kept by malloc)"].text
    assert leaks["app.Record"].text == ("Leak: Record +2 objects per step (no why-alive chain: only the census saw it; "
                                        "watch Record to record one).")
    # largest bytes per step first: the SSL contexts' native memory
    assert [f.kind for f in found][: len(leaks)] == ["leak"] * len(leaks)
    assert found[0].owner == "ssl.SSLContext"


def test_a_watched_name_that_matched_nothing_is_a_warning_and_never_dropped():
    message = "watch: no class matches 'Jobb'; did you mean Job? (its count and bytes were not measured)"
    tl = _tl({("process", "process", "rss", "bytes"): lambda s: 80 * MB,
              ("census", "myapp.jobs.Job", "count", "objects"): lambda s: 1.0 * s})
    a = answer(Run("jobs", tl, warnings=[message, message]))
    warnings = [f for f in a.findings if f.kind == "warning"]
    assert len(warnings) == 1 and warnings[0].owner == "watch" and warnings[0].detail.startswith("no class matches")
    assert "Warning: watch: no class matches 'Jobb'; did you mean Job?" in a.text
    assert a.text.splitlines()[0].startswith("Leak: Job +1 object per step")
    assert not a.all_clear
    # with nothing leaking the warning is still there, and the all-clear points at it
    quiet = answer(Run("jobs", tl[tl["probe"] == "process"], warnings=[message]))
    assert quiet.findings[0].kind == "clear" and "See the warning below." in quiet.findings[0].text
    assert any(f.kind == "warning" for f in quiet.findings) and not quiet.all_clear


def test_no_leak_says_what_it_measured_and_for_how_long():
    tl = _tl({
        ("process", "process", "rss", "bytes"): lambda s: 80 * MB,
        ("watch", "app.Agent", "count", "objects"): lambda s: 3.0,
        ("watch", "app.Message", "count", "objects"): lambda s: 0.0,
        ("cache", "app:_TEMPLATES", "entries", "entries"): lambda s: float(min(s, 32)),
        ("cache", "app:_TEMPLATES", "bytes", "bytes"): lambda s: min(s, 32) * 7.0 * KB,
        ("census", "builtins.dict", "count", "objects"): lambda s: 5000.0,
        ("census", "builtins.list", "count", "objects"): lambda s: 900.0,
    })
    a = answer(Run("svc", tl))
    assert a.all_clear
    assert a.findings[0].kind == "clear"
    assert a.findings[0].text == ("No leak in 300 steps (31 snapshots, 30 s): RSS flat, 2 watched classes flat, "
                                  "1 cache bounded, 2 census types, none leaking.")
    cache = next(f for f in a.findings if f.kind == "settled")
    assert cache.text == "Cache: _TEMPLATES settled at 32 entries (224 KiB)."


def test_an_undecided_run_or_one_that_did_not_complete_is_never_an_all_clear():
    rng = np.random.default_rng(5)
    noisy = _tl({("process", "process", "rss", "bytes"): 80 * MB + rng.normal(0, 2 * MB, len(STEPS)),
                 ("watch", "app.Agent", "count", "objects"): lambda s: 3.0})
    a = answer(Run("svc", noisy))
    assert a.findings[0].kind == "undecided" and not a.all_clear
    assert "not an all-clear" in a.findings[0].text and "undecided: RSS" in a.findings[0].text
    flat = _tl({("process", "process", "rss", "bytes"): lambda s: 80 * MB})
    killed = answer(Run("svc", flat, status="killed", message="the journal has no end line"))
    assert [f.kind for f in killed.findings][:2] == ["undecided", "status"]
    assert "the run did not complete (killed)" in killed.findings[0].text
    assert killed.findings[1].text == "The run did not complete (killed): the journal has no end line."
    assert not killed.all_clear


def _loaded_then_leaking(rss_per_step: float, job_per_step: float, extra: dict | None = None) -> Run:
    loaded = np.asarray([s >= 50 for s in STEPS], dtype=float)
    series = {
        ("process", "process", "rss", "bytes"): _noisy(rss_per_step) + 40 * MB * loaded,
        ("cache", "app:_VOCAB", "native_bytes", "bytes"): 36 * MB * loaded,
        ("watch", "app.Job", "bytes", "bytes"): lambda s: job_per_step * s,
        ("watch", "app.Job", "count", "objects"): lambda s: 1.0 * s,
        **(extra or {}),
    }
    return Run("app", _tl(series))  # type: ignore[arg-type]


def test_the_ledger_finding_starts_after_warm_up_names_the_dominant_owner_and_what_is_not_attributed():
    found = findings(_loaded_then_leaking(25 * KB, 20 * KB))
    ledger = next(f for f in found if f.kind == "ledger")
    assert ledger.text.startswith("RSS after warm-up (step 50 to 300): +6.1")
    assert "mostly Job 4.88 MiB (80%)" in ledger.text and "20% of it not attributed" in ledger.text
    startup = next(f for f in found if f.kind == "startup")
    assert startup.text.startswith("Start-up (step 0 to 50, left out of the ledger): RSS +41.")
    assert "mostly _VOCAB (native estimate) 36 MiB" in startup.text
    assert [f.kind for f in found].index("startup") < [f.kind for f in found].index("ledger")


def test_an_owner_growing_faster_than_rss_is_reconciled_in_words():
    falling_free = {("allocator", "glibc", "free", "bytes"): lambda s: 20 * MB - 15.0 * KB * s}
    found = findings(_loaded_then_leaking(2 * KB, 20 * KB, falling_free))
    note = next(f for f in found if f.kind == "reconcile")
    assert note.text.startswith("Job grows +20 KiB per step (+195 MiB at 10,000 steps) but RSS only +2")
    assert "the allocators' free memory fell by" in note.text and "reused memory freed earlier" in note.text
    # without the allocator probe, the same contradiction says what could not be measured
    found = findings(_loaded_then_leaking(2 * KB, 20 * KB))
    note = next(f for f in found if f.kind == "reconcile")
    assert "run with the allocator probe to measure it" in note.text
    # an owner within RSS's growth needs no reconciling
    assert not [f for f in findings(_loaded_then_leaking(25 * KB, 20 * KB)) if f.kind == "reconcile"]


def test_headlines_are_the_findings_series_so_the_answer_and_the_index_agree():
    run = _job_run(warnings=["watch: no class matches 'Jobb'"], status="budget", message="stopped at 300 MiB")
    found = findings(run)
    heads = headlines_from_runs(run)
    leak_series = {f"{s.subject} {s.metric}" if s.probe != "process" or s.metric != "rss" else "RSS"
                   for f in found for s in f.series if s.verdict == "leak" and s.role != "duplicate"}
    assert {h.subject for h in heads if h.verdict == "leak"} == leak_series
    assert ("watch", WARNING) in [(h.subject, h.verdict) for h in heads]
    assert ("run", "budget") in [(h.subject, h.verdict) for h in heads]
    assert not any("self_bytes" in h.subject or "gc_gen" in h.subject for h in heads)


def test_the_answer_goes_into_summary_json_and_comes_back(tmp_path):
    a = answer(_job_run())
    path = write_summary(tmp_path, headlines_from_runs(_job_run()), title="jobs", answer=a)
    payload = json.loads(path.read_text())  # NaN never reaches the file: plain JSON
    assert payload["answer"]["text"] == a.text and payload["answer"]["all_clear"] is False
    kinds = [f["kind"] for f in payload["answer"]["findings"]]
    assert kinds[0] == "leak" and "self" in kinds
    assert all(v is None or math.isfinite(v) for f in payload["answer"]["findings"] for s in f["series"]
               for v in s.values() if isinstance(v, float))
    assert read_summary(tmp_path).answer == a.text
    with pytest.raises(ConfigError, match="answer="):
        write_summary(tmp_path, [], answer="Leak: everything")


def test_workload_strings_are_escaped_in_markdown_and_html():
    evil = "app.<img src=x onerror=alert(1)>*bold*"
    tl = _tl({("process", "process", "rss", "bytes"): lambda s: 80 * MB,
              ("watch", evil, "count", "objects"): lambda s: 1.0 * s})
    a = answer(Run("<b>run</b>", tl, warnings=["run: *not* [a link](x) <script>"]))
    assert "<img" not in a.html and "<script>" not in a.html and "&lt;img" in a.html
    assert "`<img src=x onerror=alert(1)>*bold*`" in a.markdown  # a name: literal inside backticks
    assert r"\*not\* \[a link\](x) \<script\>" in a.markdown  # a message: markdown escaped


def test_several_runs_each_under_its_name_and_two_of_one_name_are_refused():
    leaking, clean = _job_run(), Run("fixed", _tl({("process", "process", "rss", "bytes"): lambda s: 80 * MB}))
    a = answer([leaking, clean])
    assert a.runs == ("jobs", "fixed")
    lines = a.text.splitlines()
    assert lines[0] == "jobs:" and lines[1].startswith("  Leak: Job")
    assert "fixed:" in lines and lines[lines.index("fixed:") + 1].startswith("  No leak in 300 steps")
    assert "**fixed**" in a.markdown
    with pytest.raises(ConfigError, match="both named 'jobs'"):
        answer([leaking, _job_run()])
    labelled = answer({"before": leaking, "after": _job_run()})
    assert labelled.runs == ("before", "after")
    with pytest.raises(ConfigError, match="bare timeline"):
        answer(leaking.timeline)


def test_many_leaks_are_all_named_though_only_the_first_are_written_out():
    series = {("process", "process", "rss", "bytes"): _noisy(100 * KB)}
    for k in range(MAX_LEAK_LINES + 3):
        series[("census", f"app.T{k}", "count", "objects")] = (k + 1.0) * np.asarray(STEPS, dtype=float)
    a = answer(Run("many", _tl(series)))
    leak_lines = [line for line in a.text.splitlines() if line.startswith("Leak:")]
    assert len(leak_lines) == MAX_LEAK_LINES
    more = next(line for line in a.text.splitlines() if line.startswith("3 more leaks:"))
    assert all(f"T{k}" in more for k in range(3))  # the smallest three, named
    assert len([f for f in a.findings if f.kind == "leak"]) == MAX_LEAK_LINES + 3


def test_analysis_never_imports_plotly():
    import subprocess
    import sys

    code = ("import sys, tokdiag.analysis as a; a.answer; a.growers; a.compare_table; "
            "print(sorted(m for m in sys.modules if m.startswith(('plotly', 'tokdiag.charts'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_a_notebook_shows_the_answer_as_its_html_with_its_text_as_plain_text():
    from IPython.core.formatters import DisplayFormatter

    a = answer(_job_run())
    data, _ = DisplayFormatter().format(a)
    assert data["text/html"] == a.html  # preferred to the Markdown by JupyterLab and nbconvert
    assert data["text/markdown"] == a.markdown
    assert data["text/plain"] == a.text  # not the dataclass repr
    assert "-&gt;" in a.html and "&amp;gt;" not in a.html  # a chain's arrow escaped once


def test_a_flat_run_too_short_to_judge_its_end_is_not_an_all_clear():
    # 4 snapshots of an exactly flat RSS: each series may be 'flat', but the run's end cannot be shown flat (the
    # verdicts judge the last half from 8 snapshots on), so the answer must not say "No leak"
    short = _tl({("process", "process", "rss", "bytes"): lambda s: 80 * MB})
    short = short[short.step <= 30]
    a = answer(Run("svc", short))
    assert a.findings[0].kind == "undecided" and not a.all_clear
    assert a.findings[0].text.startswith("No leak shown in 30 steps (4 snapshots, 3 s), but this is not an all-clear: "
                                         "4 snapshots cannot show that the end of the run is flat")
    eight = _tl({("process", "process", "rss", "bytes"): lambda s: 80 * MB})
    assert answer(Run("svc", eight[eight.step <= 70])).all_clear  # 8 snapshots: enough
