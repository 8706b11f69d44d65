"""The answer, top growers, ledger and A/B tables on real tracked runs.

A Job-keeping app (10 KiB per job) tracked with a misspelt watch and with the
right one, in this process; the agent app of the built-in workloads (every
retention path on, then fixed) each in a fresh process, as its notebook runs it.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
import sys
import warnings
from pathlib import Path

import pytest

import tokdiag as td
from tokdiag import charts
from tokdiag.analysis import (
    answer,
    compare,
    compare_notes,
    compare_table,
    growers,
    growers_table,
    ledger,
    startup_costs,
)
from tokdiag.errors import TokdiagWarning
from tokdiag.report.summary import headlines_from_runs

try:  # the built-in workloads, wherever they live now
    AGENTS = importlib.import_module("tokdiag_workloads.agents")
except ImportError:
    AGENTS = importlib.import_module("tokdiag.workloads.agents")

JOBS_APP = '''\
_DONE = []


class Job:
    def __init__(self, i):
        self.i = i
        self.payload = bytes(10 * 1024)


def handle(i):
    _DONE.append(Job(i))
'''


def _track_jobs(folder: Path, package: str, watch: str) -> td.Run:
    (folder / package).mkdir()
    (folder / package / "__init__.py").write_text("")
    (folder / package / "jobs.py").write_text(JOBS_APP)
    sys.path.insert(0, str(folder))
    try:
        jobs = importlib.import_module(f"{package}.jobs")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TokdiagWarning)
            run = td.track(jobs.handle, steps=200, watch=[watch], progress=False, name="handle",
                           journal=folder / f"{package}.jsonl")
        jobs._DONE.clear()
    finally:
        sys.path.remove(str(folder))
        for name in [m for m in sys.modules if m == package or m.startswith(f"{package}.")]:
            del sys.modules[name]
    return run


@pytest.fixture(scope="module")
def typo_run(tmp_path_factory: pytest.TempPathFactory) -> td.Run:
    return _track_jobs(tmp_path_factory.mktemp("typo"), "typoapp", "Jobb")


@pytest.fixture(scope="module")
def jobs_run(tmp_path_factory: pytest.TempPathFactory) -> td.Run:
    return _track_jobs(tmp_path_factory.mktemp("jobs"), "jobsapp", "Job")


def test_a_misspelt_watch_answers_with_the_leaking_class_and_the_warning(typo_run):
    a = answer(typo_run)
    # the module-level list that keeps every job leads: the containers probe found it without a hint, and it owns
    # the jobs' bytes; the class is a leak too, counted by the census (as are the payloads, builtins.bytes)
    holder = a.findings[0]
    first = next(f for f in a.leaks if f.owner == "typoapp.jobs.Job")
    assert holder.kind == "leak" and holder.owner == "typoapp.jobs:_DONE"
    assert holder.text == "Leak: container typoapp.jobs:_DONE +10.3 KiB (+1 entry) per step."  # 10 KiB a job
    assert first.kind == "leak" and first.owner == "typoapp.jobs.Job"
    assert first.name in ("Job", "typoapp.jobs.Job")  # qualified when another class "Job" is alive in this process
    assert first.text.startswith(f"Leak: {first.name} +1 object per step (no why-alive chain: only the census saw it; "
                                 f"watch {first.name} to record one)")
    warning = next(f for f in a.findings if f.kind == "warning")
    # Job first among the suggestions (another test of this process may have made a class "_Job" too)
    assert "no class matches 'Jobb'" in warning.text and re.search(r"did you mean Job[,?]", warning.text)
    assert "Warning: watch: no class matches 'Jobb'" in a.markdown
    assert not a.all_clear
    heads = headlines_from_runs(typo_run)
    assert ("typoapp.jobs.Job count", "leak") in [(h.subject, h.verdict) for h in heads]  # the same as the answer


def test_the_right_watch_answers_with_the_bytes_per_job_and_the_chain_that_holds_them(jobs_run):
    a = answer(jobs_run)
    job = next(f for f in a.findings if f.kind == "leak" and f.owner == "jobsapp.jobs.Job")
    assert a.findings.index(job) == 0  # the largest bytes per step
    size = next(s for s in job.series if s.probe == "watch" and s.metric == "bytes")
    assert size.per_step == pytest.approx(10.2 * 1024, rel=0.05)
    assert "+1 object) per step" in job.text and "_DONE[" in job.chain
    assert f"held by {job.chain}" in job.text
    rows = growers(jobs_run)
    assert (rows["owner"] == "jobsapp.jobs.Job").sum() == 1  # one row, though watch and census both counted it
    top = rows.iloc[0]
    assert top["owner"] == "jobsapp.jobs.Job" and top["measured_by"] == "watch reachable bytes"
    assert "census instances: leak" in top["also"] and "_DONE[" in top["chain"]
    table = growers_table(rows)
    # "Job", or its qualified name when another class of that name is alive in this test process
    assert table.iloc[0]["instances per step"] == "+1 object/step" and table.index[0] in ("Job", "jobsapp.jobs.Job")


def test_two_runs_of_one_target_are_told_apart_by_their_journals(typo_run, jobs_run):
    df = compare(typo_run, jobs_run)
    assert df.attrs["labels"] == ("typoapp", "jobsapp")  # both runs are named "handle"
    table = compare_table(df)
    assert {"typoapp", "jobsapp"} <= set(table.columns)
    assert not any(c in table.columns for c in ("verdict_a", "per_step_b", "real"))
    both = answer([typo_run, dataclasses.replace(jobs_run, name="handle (right watch)")])
    assert both.text.splitlines()[0] == "handle:"


@pytest.fixture(scope="module")
def agent_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[td.Run, td.Run]:
    folder = tmp_path_factory.mktemp("agents")
    watch = sorted(set().union(*AGENTS.GROUND_TRUTH.values()))
    cache = next(b for b in AGENTS.BOUNDED if ":" in b)
    target = f"{AGENTS.__name__}:agent_workload"
    options = {"steps": 150, "watch": watch, "caches": [cache]}
    app = td.track_isolated(target, {}, name="as configured", journal=folder / "configured.jsonl", **options)
    fixed = td.track_isolated(target, {"fixed": True}, name="fixed", journal=folder / "fixed.jsonl", **options)
    return app, fixed


def test_the_agent_app_answers_with_every_leaking_class_and_what_holds_it(agent_runs):
    app, fixed = agent_runs
    a = answer([app, fixed])
    leaks = {f.owner: f for f in a.findings if f.kind == "leak" and f.run == "as configured"}
    watched = set().union(*AGENTS.GROUND_TRUTH.values())
    assert watched <= set(leaks)
    for owner in watched:
        assert "_APPS[" in leaks[owner].chain, owner  # held from the module's registry of apps
    assert not [f for f in a.findings if f.kind == "leak" and f.run == "fixed" and f.owner in watched]
    rows = growers(app)
    assert rows.iloc[0]["name"] == "PageSnapshot"  # 20-50 KB of bytes per task: the largest grower
    assert not rows.duplicated("owner").any()


def test_the_agent_ledger_starts_after_the_vocabulary_is_loaded(agent_runs):
    app, _ = agent_runs
    led = ledger(app.timeline)
    base = led.attrs["baseline"]["as configured"]
    assert base > 0
    end = led[led["step"] == led["step"].max()].set_index("owner")["bytes"]
    assert end.drop("unexplained (native or untracked)").idxmax().endswith("PageSnapshot")
    start = startup_costs(app.timeline).set_index("owner")["bytes"]
    whole = ledger(app.timeline, since="start")
    at_end = whole[whole["step"] == whole["step"].max()].set_index("owner")["bytes"]
    # the one-off cost of the tokenizer (its cache and native estimate) is in the start-up, not the ledger
    encoder = [o for o in start.index if "_ENCODINGS" in o]
    assert sum(start[o] for o in encoder) > 10 * 2**20
    assert sum(abs(end.get(o, 0.0)) for o in encoder) < 2**20
    assert at_end.drop("unexplained (native or untracked)").idxmax() in encoder  # what buried the leak before
    fig = charts.startup(app)
    assert any("_ENCODINGS" in t.name for t in fig.data)
    assert "end of warm-up" in charts.ledger(app).layout.title.text


def test_the_agent_fix_says_what_fixed_refers_to(agent_runs):
    app, fixed = agent_runs
    df = compare(app, fixed)
    notes = compare_notes(df)
    fixed_notes = [n for n in notes if n.startswith("Fixed in fixed: ")]
    assert any("RewardAgent (watch instances)" in n for n in fixed_notes)
    assert any(n.startswith("RSS: ") for n in notes)
    table = compare_table(df)
    assert table.loc["RewardAgent"].iloc[0]["change"].startswith("fixed: leak in as configured")
