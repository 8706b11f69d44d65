"""The index page without a kernel: its own pages only, escaped text, folded lists, where each run ran."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from tokdiag.errors import ConfigError
from tokdiag.report.index import write_index
from tokdiag.report.kernel import ExecutionFailure
from tokdiag.report.plan import RunSpec
from tokdiag.report.results import RunResult
from tokdiag.report.summary import Headline, Summary


def test_write_index_replaces_its_own_pages_only(tmp_path: Path) -> None:
    page = write_index([], tmp_path)
    write_index([], tmp_path)  # its own: replaced
    page.write_text("<p>mine now</p>")
    with pytest.raises(ConfigError, match="did not write"):
        write_index([], tmp_path)
    assert page.read_text() == "<p>mine now</p>"
    page.unlink()
    (tmp_path / "index.json").write_text('{"mine": true}')
    with pytest.raises(ConfigError, match=r"index.json' is a file tokdiag did not write"):
        write_index([], tmp_path)
    (tmp_path / "index.json").unlink()
    write_index([], tmp_path)
    assert json.loads((tmp_path / "index.json").read_text())["generator"] == "tokdiag"


def test_index_folds_long_headline_lists_and_many_journals(tmp_path: Path) -> None:
    journals = []
    for name in ("a.jsonl", "b.jsonl", "c.jsonl"):
        journals.append(tmp_path / "01-x" / name)
        journals[-1].parent.mkdir(exist_ok=True)
        journals[-1].write_text("")
    headlines = tuple(Headline(f"s{i}", "leak", "x" * 200 if i == 0 else "") for i in range(6))
    spec = RunSpec(index=1, notebook=tmp_path / "x.ipynb", label="x.ipynb", parameters={}, folder_name="01-x")
    result = RunResult(spec=spec, folder=tmp_path / "01-x", duration_s=1.0, journals=tuple(journals),
                       summary=Summary(headlines=headlines))
    page = write_index([result], tmp_path).read_text(encoding="utf-8")
    assert "<summary>2 more</summary>" in page and "<summary>3 journals</summary>" in page
    assert f'<span class="detail">{"x" * 200}</span>' in page  # whole, wrapped by the page: never cut
    assert all(f'href="01-x/{j.name}"' in page for j in journals)


def test_the_index_says_where_each_run_ran_when_the_batch_ran_on_a_cluster(tmp_path: Path) -> None:
    def spec(i: int) -> RunSpec:
        return RunSpec(index=i, notebook=tmp_path / "x.ipynb", label="x.ipynb", parameters={}, folder_name=f"0{i}-x")

    local = [RunResult(spec=spec(1), folder=tmp_path / "01-x", duration_s=1.0)]
    page = write_index(local, tmp_path / "local").read_text(encoding="utf-8")
    assert "ran on" not in page
    record = json.loads((tmp_path / "local" / "index.json").read_text())["runs"][0]
    assert (record["host"], record["worker"], record["attempts"]) == (socket.gethostname(), "", 1)

    cancelled = ExecutionFailure(ename="Cancelled", evalue="interrupted")
    remote = [RunResult(spec=spec(1), folder=tmp_path / "01-x", duration_s=1.0, host="gpu<1>",
                        worker="tcp://10.0.0.7:4000", attempts=2),
              RunResult(spec=spec(2), folder=tmp_path / "02-x", duration_s=0.0, host="", failure=cancelled)]
    page = write_index(remote, tmp_path / "remote").read_text(encoding="utf-8")
    assert "<th>ran on</th>" in page and page.count('<td class="host">') == 2
    assert "gpu&lt;1&gt;<div class=\"muted\">tcp://10.0.0.7:4000</div><div class=\"muted\">2 attempts</div>" in page
    assert '<td class="host"><span class="muted">unknown</span></td>' in page
    records = json.loads((tmp_path / "remote" / "index.json").read_text())["runs"]
    assert [(r["host"], r["worker"], r["attempts"]) for r in records] == [
        ("gpu<1>", "tcp://10.0.0.7:4000", 2), ("", "", 1)]


def _run(tmp_path: Path, index: int, headlines: tuple[Headline, ...] = (), answer: str = "",
         failure: ExecutionFailure | None = None) -> RunResult:
    spec = RunSpec(index=index, notebook=tmp_path / f"n{index}.ipynb", label="n", parameters={},
                   folder_name=f"0{index}-n{index}")
    return RunResult(spec=spec, folder=tmp_path / spec.folder_name, duration_s=1.0, failure=failure,
                     summary=Summary(headlines=headlines, answer=answer) if headlines or answer else None)


def test_index_orders_runs_by_what_they_found_and_opens_each_on_its_answer(tmp_path: Path) -> None:
    from bs4 import BeautifulSoup

    long = ("Leak: Job +10.5 KiB per step, held by myapp.jobs._DONE (a list at module level that every job is "
            "appended to and that nothing ever empties).")
    runs = [
        _run(tmp_path, 1, (Headline("RSS", "flat", "+0 B overall"),), "No leak: 300 steps measured, RSS flat."),
        _run(tmp_path, 2, (Headline("cache", "bounded", "+2 MiB then level"),), "Cache: settled at 32 entries."),
        _run(tmp_path, 3, (Headline("RSS", "inconclusive"),), "Undecided: run longer."),
        _run(tmp_path, 4, (Headline("RSS", "bounded", "+1 MiB then level"),
                           Headline("watch", "warning", "no class matches 'Jobb'; did you mean Job?"))),
        _run(tmp_path, 5, (Headline("RSS", "flat"), Headline("Job count", "leak", "+1 objects/step")),
             long + "\nProcess: +125 MiB per 10,000 steps."),
    ]
    soup = BeautifulSoup(write_index(runs, tmp_path / "out").read_text(encoding="utf-8"), "html.parser")
    rows = soup.select("table.runs tbody tr")
    assert [r.select_one("td.num").get_text(strip=True) for r in rows] == ["5", "4", "3", "2", "1"]
    first = rows[0].select_one("td.hl")
    answer = first.select_one(".answer")
    assert answer is not None and answer.get_text(" ", strip=True) == long  # the answer's first line, whole
    assert first.get_text().index(long) < first.get_text().index("Job count")  # before the headlines
    assert "Process: +125 MiB" not in first.get_text()
    assert "then in order of what they found: leak, warning, undecided, settled, clear" in soup.get_text(" ")


def test_a_failed_run_is_listed_before_the_runs_that_answered(tmp_path: Path) -> None:
    from bs4 import BeautifulSoup

    failed = ExecutionFailure(ename="ZeroDivisionError", evalue="division by zero", cell_index=2)
    runs = [_run(tmp_path, 1, (Headline("Job count", "leak", "+1 objects/step"),), "Leak: Job."),
            _run(tmp_path, 2, failure=failed)]
    soup = BeautifulSoup(write_index(runs, tmp_path / "out").read_text(encoding="utf-8"), "html.parser")
    assert [r.select_one("td.num").get_text(strip=True) for r in soup.select("table.runs tbody tr")] == ["2", "1"]
