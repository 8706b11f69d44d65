"""What the shipped notebooks call: one setup, the parameters a run used, your workload's "auto", run names."""

from __future__ import annotations

import sys
import textwrap
import warnings
from pathlib import Path

import pandas as pd
import pytest

import tokdiag as td
from tokdiag.report import notebook as nb


def test_setup_makes_figures_export_offline_and_tables_show_whole_cells() -> None:
    import plotly.io as pio

    pio.renderers.default = "json"
    pd.set_option("display.max_colwidth", 50)
    try:
        nb.setup()
        assert pio.renderers.default == "tokdiag"
        assert pd.get_option("display.max_colwidth") == nb.MAX_COLWIDTH
    finally:
        pd.reset_option("display.max_colwidth")


def test_auto_is_the_demo_apps_for_the_demo_target_and_nothing_for_yours() -> None:
    demo = nb.workload_options(nb.DEMO_TARGET)
    assert demo == {"target": nb.DEMO_TARGET, "setup": "tokdiag_workloads.agents:AgentApp",
                    "watch": ["RewardAgent", "MemoryEventMessage"],
                    "caches": ["tokdiag_workloads.agents.objects:_ENCODINGS"], "name": "AgentApp.run_task"}
    mine = nb.workload_options("myapp.jobs:handle", caches="myapp.cache:_C", name=" nightly ")
    assert mine == {"target": "myapp.jobs:handle", "setup": "", "watch": [], "caches": ["myapp.cache:_C"],
                    "name": "nightly"}
    assert nb.workload_options(nb.DEMO_TARGET, setup="", watch=[])["setup"] == ""  # given values win over auto
    with pytest.raises(td.ConfigError, match=r"watch=3: give a name, a list of names"):
        nb.workload_options("a:b", watch=3)


@pytest.fixture
def jobs_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "tdnb_jobs.py").write_text(textwrap.dedent("""
        KEPT = []
        class Job:
            def __init__(self, i):
                self.buf = bytearray(2_000)
        def handle(i):
            KEPT.append(Job(i))
        """))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "tdnb_jobs"
    sys.modules.pop("tdnb_jobs", None)


def test_track_workload_names_the_run_and_keeps_a_journaled_warning_for_the_answer(
        jobs_module: str, tmp_path: Path) -> None:
    with warnings.catch_warnings(record=True) as printed:
        warnings.simplefilter("always")
        run, used = nb.track_workload(f"{jobs_module}:handle", watch=["Job", "Jobb"], steps=30, every=3,
                                      census=False, progress=False, journal=tmp_path / "w.jsonl")
    assert run.name == "handle" and td.load(tmp_path / "w.jsonl").name == "handle"
    assert used == {"target": f"{jobs_module}:handle", "setup": "", "watch": ["Job", "Jobb"], "caches": [],
                    "name": "handle", "steps": 30, "every": 3, "budget_mb": None}
    assert any("no class matches 'Jobb'" in w for w in run.warnings)
    assert not [w for w in printed if "Jobb" in str(w.message)]  # not printed: the answer says it, first
    answer = td.analysis.answer(run)
    # qualified when another class "Job" is alive in this process (another test's)
    assert answer.text.startswith(("Leak: Job", f"Leak: {jobs_module}.Job"))
    assert "Warning: watch: no class matches 'Jobb'" in answer.text
    table = nb.parameters_table(used)
    assert table.loc["watch", "value"] == "Job, Jobb" and table.loc["caches", "value"] == "(none)"
    assert table.loc["setup", "value"] == '""'


def test_named_renames_runs_everywhere_and_refuses_two_of_the_same_name() -> None:
    a = td.track(lambda i: None, steps=3, census=False, progress=False, name="handle")
    b = td.track(lambda i: None, steps=3, census=False, progress=False, name="handle")
    before, after = nb.named([a, b], ["before", "after"])
    assert (before.name, after.name) == ("before", "after")
    assert set(after.timeline["run"]) == {"after"} and a.name == "handle"  # a copy: the run is untouched
    assert td.analysis.answer([before, after]).runs == ("before", "after")
    with pytest.raises(td.ConfigError, match=r"two runs are named 'handle'.*names=\['before', 'after'\]"):
        nb.named([a, b])
    with pytest.raises(td.ConfigError, match=r"one name per run \(2\)"):
        nb.named([a, b], ["only"])
    assert nb.names("v2", ["as configured", "fixed"]) == ["v2 as configured", "v2 fixed"]
    assert nb.names("", ["fixed"]) == ["fixed"]


def test_bullets_escape_what_the_workload_named() -> None:
    shown = nb.bullets(["Fixed in <b>after</b>: Job count."])._repr_html_()
    assert shown == '<ul class="tokdiag-notes"><li>Fixed in &lt;b&gt;after&lt;/b&gt;: Job count.</li></ul>'
