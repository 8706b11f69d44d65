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
    assert "x" * 89 + "…" in page and f'title="{"x" * 200}"' in page
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
