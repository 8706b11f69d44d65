"""The notebook suite: shipped clean and thin, answer first, and every notebook runs under papermill.

Each runs with small parameters.

The runs go through ``tokdiag batch`` (two kernels at a time), which is also what ``make report`` does; the
batch is tests/small_suite.py's, shared with the layout tests.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from late_imports import lazy
from small_suite import SMALL, SUITE

import tokdiag as td
from tokdiag.report.catalog import notebooks
from tokdiag.report.kernel import notebook_parameters
from tokdiag.report.plan import load_plan

nbformat = lazy("nbformat")  # at first use, not at collection (tests/late_imports.py)

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = {n.name: n.path for n in notebooks()}
GENERIC = ("your_workload", "compare_runs", "journal_report")  # the tool's own; the rest are the workloads'

BUILT_TO_SHOW = {
    "tokenizer_caches": {"per-instance load, kept: RSS": "leak", "lazy cache without a lock": "race",
                         "shared ranks dict": "mutated"},
    "agent_objects": {"as configured: tokdiag_workloads.agents.objects.RewardAgent count": "leak",
                      "fixed: tokdiag_workloads.agents.objects.RewardAgent count": "bounded"},
    # two tasks: three snapshots, too few for a verdict either way
    "aworld_agents": {"new agent per task: tokdiag_workloads.aworld.agents.RewardAgent count": "inconclusive",
                      "one agent reused: tokdiag_workloads.aworld.agents.RewardAgent count": "inconclusive"},
    "your_workload": {"tokdiag_workloads.agents.objects.RewardAgent count": "leak"},
    "compare_runs": {"reused: RewardAgent instances": "fixed",
                     "per task: tokdiag_workloads.agents.objects.RewardAgent count": "leak"},
}
"""Headline -> verdict: what each notebook's workload is built to show, at the SMALL parameters."""
ORDER = ("parameters", "setup", "answer", "growers", "used", "summary")
"""Tags every shipped notebook has, in this order: the answer comes first, summary.json is written last."""


def test_the_notebooks_ship_in_the_packages_that_own_them() -> None:
    assert set(SHIPPED) >= {*SUITE, *GENERIC}
    for name in GENERIC:
        assert SHIPPED[name].parent == ROOT / "tokdiag" / "report" / "notebooks"
    for name in set(SUITE) - set(GENERIC):
        assert SHIPPED[name].parent == ROOT / "tokdiag_workloads" / "notebooks"
    assert not (ROOT / "notebooks").exists()


@pytest.mark.parametrize("name", [*SUITE, "journal_report"])
def test_shipped_notebook_is_clean_thin_and_answers_first(name: str) -> None:
    nb = nbformat.read(SHIPPED[name], as_version=4)
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{name}: outputs committed"
    documented = notebook_parameters(SHIPPED[name])
    assert documented is not None and "output_dir" in documented
    assert {"name", "names"} & set(documented), f"{name}: no run-name parameter"
    for line in tagged[0].source.splitlines():  # every default says what it is
        if "=" in line:
            assert "#" in line, f"{name}: parameter line without a comment: {line!r}"
    assert set(SMALL.get(name, {})) <= set(documented)
    # one setup call, no repeated setup logic
    setup = [c for c in nb.cells if "setup" in c.metadata.get("tags", [])]
    assert len(setup) == 1 and setup[0].source.count("nb.setup()") == 1
    for cell in nb.cells:
        assert "plotly_renderer_setup" not in cell.source and "set_option" not in cell.source, name
    # the answer first: parameters, setup, the run(s), then the answer, the top growers, what the run used
    tags = [t for c in nb.cells for t in c.metadata.get("tags", [])]
    assert [t for t in tags if t in ORDER] == list(ORDER), f"{name}: {tags}"
    code = [c for c in nb.cells if c.cell_type == "code"]
    answer = next(i for i, c in enumerate(code) if "answer" in c.metadata.get("tags", []))
    assert "td.analysis.answer(" in code[answer].source
    assert all("print(" not in c.source for c in code[:answer]), f"{name}: prints above the answer"
    assert "answer=a" in next(c for c in code if "summary" in c.metadata.get("tags", [])).source
    assert (nb.metadata.get("tokdiag") or {}).get("answers"), f"{name}: no metadata.tokdiag.answers"
    for cell in code:  # thin: a cell is a few calls, not a program
        assert len(cell.source.splitlines()) <= 40, f"{name}: cell {cell.id} has {len(cell.source.splitlines())} lines"


def test_the_default_plan_names_every_notebook_of_the_suite() -> None:
    plan = load_plan(ROOT / "plans" / "default.yaml")
    assert [r.notebook for r in plan.runs] == [SHIPPED[name] for name in SUITE]
    assert all("/" not in r.label for r in plan.runs)  # by name, not by a path into a source tree


@pytest.fixture
def batch(small_suite):
    """The five notebooks on small parameters (tests/small_suite.py; the layout tests open the same pages)."""
    return small_suite


@pytest.mark.slow
@pytest.mark.parametrize("name", SUITE)
def test_notebook_runs_under_papermill_and_writes_report_journal_and_headlines(batch, name: str) -> None:
    result = next(r for r in batch.runs if r.spec.notebook.stem == name)
    assert result.ok, result.failure and result.failure.describe()
    assert result.html is not None and result.html.exists()
    assert result.journals, "the notebook wrote no journal into its run folder"
    assert result.summary is not None
    heads = {h.subject: h.verdict for h in result.summary.headlines}
    assert {subject: heads.get(subject) for subject in BUILT_TO_SHOW[name]} == BUILT_TO_SHOW[name]
    page = result.html.read_text()
    assert "plotly-graph-div" in page
    assert str(Path.home()) not in page and str(ROOT) not in page


def _shown(output: dict) -> str:
    """What an output shows as text ("" for the emptied progress line of a run that completed)."""
    if output["output_type"] == "stream":
        return output.get("text", "")
    data = output.get("data", {})
    return "" if set(data) == {"text/plain"} and not data["text/plain"].strip() else str(data)


@pytest.mark.slow
@pytest.mark.parametrize("name", SUITE)
def test_the_first_thing_an_executed_notebook_shows_is_its_answer_then_its_growers(batch, name: str) -> None:
    result = next(r for r in batch.runs if r.spec.notebook.stem == name)
    nb = nbformat.read(result.notebook, as_version=4)
    shown = [(c.metadata.get("tags", []), o) for c in nb.cells if c.cell_type == "code" for o in c.outputs
             if _shown(o)]
    first_tags, first = shown[0]
    assert "answer" in first_tags and 'class="tokdiag-answer"' in first["data"].get("text/html", ""), \
        f"{name}: {first_tags} shows first"
    second_tags = next(tags for tags, _ in shown if tags != first_tags)  # the answer cell may add its own findings
    assert "growers" in second_tags, f"{name}: {second_tags} second"
    assert not any(o["output_type"] == "stream" and o.get("name") == "stderr" for _, o in shown), \
        f"{name}: stderr output (a progress bar or a warning drawn as an error)"
    said = json.loads((result.folder / "summary.json").read_text())["answer"]
    assert said["text"] and said["text"].split("\n")[0] in first["data"]["text/plain"]


@pytest.mark.slow
def test_run_names_reach_the_runs_their_answer_and_summary(batch) -> None:
    by_name = {r.spec.notebook.stem: r for r in batch.runs}
    mine = json.loads((by_name["your_workload"].folder / "summary.json").read_text())
    assert mine["answer"]["runs"] == ["demo run"]
    assert td.load(by_name["your_workload"].folder / "your_workload.jsonl").name == "demo run"
    compared = json.loads((by_name["compare_runs"].folder / "summary.json").read_text())
    assert compared["answer"]["runs"] == ["per task", "reused"]


@pytest.mark.slow
def test_the_suite_finds_what_the_workloads_are_built_to_show(batch) -> None:
    by_name = {r.spec.notebook.stem: r for r in batch.runs}
    heads = {n: {h.subject: h.verdict for h in r.summary.headlines} for n, r in by_name.items() if r.summary}
    tok = heads["tokenizer_caches"]
    assert tok["per-instance load, kept: RSS"] == "leak"
    # one load, then cached: never a leak. At 8 steps a late RSS wobble of ~1 MiB (allocator) can leave
    # the RSS verdict inconclusive; the registry itself must hold one Encoding from the first step on.
    assert tok["tiktoken registry: RSS"] in ("step", "bounded", "inconclusive")
    registry = td.load(by_name["tokenizer_caches"].folder / "tokenizers-registry-3.jsonl")
    entries = registry.series("cache", "tiktoken.registry:ENCODINGS", "entries")
    assert set(entries.iloc[1:]) == {1}
    rss = registry.series("process", "process", "rss")
    assert rss.iloc[1] - rss.iloc[0] > 20 * 2**20  # the load shows in RSS at the first step
    assert rss.iloc[-1] - rss.iloc[3] < 0.2 * (rss.iloc[3] - rss.iloc[0])  # and most of the growth is early
    assert tok["lazy cache without a lock"] == "race"
    assert tok["shared ranks dict"] == "mutated"
    agents = heads["agent_objects"]  # the runs' names: the notebook's variants (its name parameter is a prefix)
    assert agents["as configured: tokdiag_workloads.agents.objects.RewardAgent count"] == "leak"
    assert agents["fixed: tokdiag_workloads.agents.objects.RewardAgent count"] != "leak"
    # two AWorld tasks are too few for a verdict; the journals say what each variant kept alive
    folder = by_name["aworld_agents"].folder
    agent = "tokdiag_workloads.aworld.agents.RewardAgent"
    new = td.load(folder / "aworld-agents-new.jsonl").series("watch", agent, "count")
    reused = td.load(folder / "aworld-agents-reused.jsonl").series("watch", agent, "count")
    assert list(new) == [0, 1, 2] and list(reused) == [0, 1, 1]
    index = json.loads((batch.out_dir / "index.json").read_text())
    assert len(index["runs"]) == len(SUITE)


@pytest.mark.slow
def test_agent_report_shows_the_retention_chain(batch) -> None:
    result = next(r for r in batch.runs if r.spec.notebook.stem == "agent_objects")
    page = result.html.read_text()
    assert re.search(r"module tokdiag_workloads\.agents\.app -&gt; _APPS\[", page), "no why-alive chain in the report"


@pytest.mark.slow
def test_your_workload_by_name_with_a_typo_in_watch_is_no_false_all_clear(tmp_path, monkeypatch, capsys) -> None:
    """Issue 12's case: a leaking app, a watched name that matches nothing; the census finds the leak."""
    from tokdiag.cli import main

    (tmp_path / "myjobs_td.py").write_text(
        "KEPT = []\n"
        "class Session:\n"
        "    def __init__(self, i):\n"
        "        self.buf = bytearray(10_000)\n"
        "def handle_one(i):\n"
        "    KEPT.append(Session(i))\n")
    monkeypatch.chdir(tmp_path)  # the user's module is imported from where tokdiag was started
    code = main(["run", "your_workload", "-p", "target", "myjobs_td:handle_one", "-p", "setup", "",
                 "-p", "steps", "80", "-p", "watch", "Sesion", "-p", "caches", "[]", "-o", "out"])
    assert code == 0  # the run completed: exit 0, and the last line says what it found
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("tokdiag run: leak found (") and "Session" in last.split(";")[0]
    assert "warning: watch: no class matches 'Sesion'; did you mean Session" in last
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    heads = {h["subject"]: h["verdict"] for h in summary["headlines"]}
    assert heads["myjobs_td.Session count"] == "leak" and heads["watch"] == "warning"
    # the module-level list that keeps them leads (the containers probe found it), the class is a leak too
    assert summary["answer"]["text"].startswith("Leak: container myjobs_td:KEPT +10.1 KiB (+1 entry) per step.")
    assert "\nLeak: Session +1 object per step" in summary["answer"]["text"]
    page = (tmp_path / "out" / "your_workload.html").read_text()
    assert "no class matches &#x27;Sesion&#x27;" in page or "no class matches 'Sesion'" in page
