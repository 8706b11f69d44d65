"""Batch runs: a plan with good and broken runs, parallel kernels, the index page, plan validation."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pytest

from tokdiag.errors import ConfigError
from tokdiag.report.batch import run_batch
from tokdiag.report.folders import RUN_MARKER
from tokdiag.report.results import BatchResult
from tokdiag.report.summary import Headline, headlines_from_journals, read_summary, write_summary

NOTEBOOKS = Path(__file__).parent / "notebooks"


def _copy_fixtures(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("rendezvous.ipynb", "broken.ipynb", "simple_plot.ipynb", "no_parameters.ipynb"):
        shutil.copy(NOTEBOOKS / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> tuple[BatchResult, Path, str]:
    """Two runs that must overlap in time (each waits for the other's pid file) and one broken run, --jobs 2."""
    root = _copy_fixtures(tmp_path_factory.mktemp("batch"))
    meeting = root / "meeting"
    meeting.mkdir()
    (root / "plan.yaml").write_text(f"""\
title: "test <b>batch</b>"
runs:
  - notebook: rendezvous.ipynb
    name: meet
    parameters: {{meeting: "{meeting}", expect: 2, wait_s: 60, steps: 20}}
    grid: {{name: [a, b]}}
  - notebook: broken.ipynb
""", encoding="utf-8")
    progress = io.StringIO()
    result = run_batch(root / "plan.yaml", root / "out", jobs=2, progress=progress)
    return result, meeting, progress.getvalue()


class _Index(HTMLParser):
    """Rows of the index table (their text) and every link target."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[str] = []
        self.links: list[list[str]] = []
        self._in_body = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "tbody":
            self._in_body = True
        elif tag == "tr" and self._in_body:
            self.rows.append("")
            self.links.append([])
        elif tag == "a" and self.rows:
            self.links[-1].append(dict(attrs).get("href") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "tbody":
            self._in_body = False

    def handle_data(self, data: str) -> None:
        if self._in_body and self.rows:
            self.rows[-1] += data


def _index(result: BatchResult) -> _Index:
    parser = _Index()
    parser.feed(result.index.read_text(encoding="utf-8"))
    return parser


def test_both_rows_are_on_the_index_and_the_broken_one_names_cell_and_exception(batch) -> None:
    result, _, _ = batch
    assert [r.spec.folder_name for r in result.runs] == ["01-meet-name=a", "02-meet-name=b", "03-broken"]
    assert [r.status for r in result.runs] == ["ok", "ok", "failed"]
    index = _index(result)
    assert len(index.rows) == 3
    broken = index.rows[0]  # the index lists what each run found, a failed run first
    assert "failed" in broken and "ZeroDivisionError: division by zero" in broken
    assert "cell 2" in broken  # the third cell of broken.ipynb as written, injected parameters not counted
    failure = result.runs[2].failure
    assert failure is not None and failure.ename == "ZeroDivisionError" and failure.cell_index == 2
    record = json.loads((result.out_dir / "index.json").read_text())["runs"][2]
    assert record["status"] == "failed" and record["error"]["ename"] == "ZeroDivisionError"


def test_good_rows_link_to_files_that_exist_by_relative_paths(batch) -> None:
    result, _, _ = batch
    index = _index(result)
    assert "03-broken" in index.rows[0]  # a failed run first, then the two in plan order
    for row, links in zip(index.rows[1:], index.links[1:], strict=True):
        assert "ok" in row
        assert len(links) == 3  # report, notebook, journal
        for href in links:
            assert not href.startswith(("/", "file:", "http")), href
            assert (result.out_dir / unquote(href)).is_file(), href
        assert any(h.endswith(".html") for h in links) and any(h.endswith("journal.jsonl") for h in links)
    # the failed run keeps its executed notebook and HTML, where the traceback is
    for href in index.links[0]:
        assert (result.out_dir / unquote(href)).is_file()


def test_headlines_come_from_the_journal_the_notebook_wrote(batch) -> None:
    result, _, _ = batch
    good = result.runs[0]
    assert good.summary is not None and good.summary.source == "journals"
    kept = [h for h in good.summary.headlines if "Kept count" in h.subject]
    assert kept and kept[0].verdict == "leak" and kept[0].detail == "+1 objects/step"
    row = next(r for r in _index(result).rows if "01-meet-name=a" in r)
    assert "Kept count" in row and "computed from the journal" in row


def test_jobs_2_runs_kernels_at_the_same_time_in_different_processes(batch) -> None:
    result, meeting, _ = batch
    # each rendezvous run waited until both pid files existed: finishing at all proves they overlapped
    pids = {p.stem: int(p.read_text()) for p in meeting.glob("*.pid")}
    assert set(pids) == {"a", "b"}
    assert pids["a"] != pids["b"] and os.getpid() not in pids.values()
    for run, name in zip(result.runs[:2], "ab", strict=True):
        assert run.notebook is not None
        assert f"run {name} in pid {pids[name]}" in run.notebook.read_text()


def test_progress_goes_to_the_stream_while_it_runs(batch) -> None:
    _, _, progress = batch
    assert "3 runs of plan.yaml, 2 at a time" in progress
    assert progress.count("[start]") == 3
    assert re.search(r"\[\d/3\] FAILED 03-broken in [\d.]+s: .*ZeroDivisionError", progress)
    assert "1 failed" in progress.splitlines()[-1]


def test_index_escapes_text_and_holds_no_absolute_paths(batch) -> None:
    result, meeting, _ = batch
    page = result.index.read_text(encoding="utf-8")
    assert "<title>test &lt;b&gt;batch&lt;/b&gt;</title>" in page
    for path in (str(meeting), str(result.out_dir), str(Path.home())):
        assert path not in page
        assert path not in (result.out_dir / "index.json").read_text()
    assert "<script" not in page


def test_a_second_batch_replaces_only_what_the_first_wrote_and_foreign_folders_are_refused(tmp_path: Path) -> None:
    root = _copy_fixtures(tmp_path / "plans")
    (root / "plan.yaml").write_text("runs:\n  - notebook: no_parameters.ipynb\n", encoding="utf-8")
    out = tmp_path / "out"
    run_dir = out / "01-no_parameters"
    run_dir.mkdir(parents=True)
    (run_dir / "mine.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="was not written by tokdiag"):
        run_batch(root / "plan.yaml", out, progress=None)
    (run_dir / RUN_MARKER).write_text("written by tokdiag; cleared when the run is repeated\n")  # an older tokdiag's
    with pytest.raises(ConfigError, match="older tokdiag that did not list its files.*deletes nothing"):
        run_batch(root / "plan.yaml", out, progress=None)
    assert (run_dir / "mine.txt").read_text() == "keep me"
    shutil.rmtree(run_dir)

    first = run_batch(root / "plan.yaml", out, progress=None)
    assert first.runs[0].ok
    written = json.loads((run_dir / RUN_MARKER).read_text())
    assert (
        written["complete"] and "no_parameters.ipynb" in written["files"] and "no_parameters.html" in written["files"]
    )
    (run_dir / "mine.txt").write_text("keep me")  # the user adds files to the run's folder
    (run_dir / "notes").mkdir()
    (run_dir / "notes" / "today.jsonl").write_text("not a journal\n")
    (run_dir / "no_parameters.html").unlink()  # and deletes one of tokdiag's
    second = run_batch(root / "plan.yaml", out, progress=None)
    assert second.runs[0].ok, second.runs[0].failure
    assert (run_dir / "mine.txt").read_text() == "keep me"
    assert (run_dir / "notes" / "today.jsonl").read_text() == "not a journal\n"
    assert (run_dir / "no_parameters.html").is_file()  # written again
    assert second.runs[0].journals == ()  # the user's .jsonl is not the run's
    listed = json.loads((run_dir / RUN_MARKER).read_text())["files"]
    assert "mine.txt" not in listed and "notes/today.jsonl" not in listed

    with (run_dir / "no_parameters.ipynb").open("a") as fh:  # the user edits a file tokdiag wrote
        fh.write("\n")
    edited = (run_dir / "no_parameters.ipynb").read_text()
    with pytest.raises(ConfigError, match=r"no_parameters.ipynb in .* changed since tokdiag wrote it; tokdiag will "
                                          r"not delete your edits"):
        run_batch(root / "plan.yaml", out, progress=None)
    assert (run_dir / "no_parameters.ipynb").read_text() == edited


def test_a_batch_never_overwrites_an_index_page_it_did_not_write(tmp_path: Path) -> None:
    root = _copy_fixtures(tmp_path / "plans")
    (root / "plan.yaml").write_text("runs:\n  - notebook: no_parameters.ipynb\n", encoding="utf-8")
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<h1>my site</h1>")
    with pytest.raises(ConfigError, match=r"index.html' is a file tokdiag did not write; tokdiag will not overwrite "
                                          r"it: move it, or choose another output folder"):
        run_batch(root / "plan.yaml", site, progress=None)
    assert (site / "index.html").read_text() == "<h1>my site</h1>"
    assert sorted(p.name for p in site.iterdir()) == ["index.html"]  # refused before any run started


# --------------------------------------------------------------------------- summaries, no kernel


def test_summary_round_trips_and_a_malformed_one_reads_as_absent(tmp_path: Path) -> None:
    path = write_summary(tmp_path, [("RewardAgent", "leak", "+2 KiB/step"), {"subject": "cache", "label": "bounded"}],
                         title="t")
    summary = read_summary(tmp_path)
    assert summary is not None and summary.title == "t" and path.name == "summary.json"
    assert summary.headlines == (Headline("RewardAgent", "leak", "+2 KiB/step"), Headline("cache", "bounded", ""))
    path.write_text("{not json")
    assert read_summary(tmp_path) is None
    with pytest.raises(ConfigError, match="needs keys 'subject' and 'verdict'"):
        write_summary(tmp_path, [{"name": "x"}])


def _journal(path: Path, run: str, series: dict[tuple[str, str, str, str], list[float]]) -> Path:
    """A journal with one snapshot every 5 steps of the given (probe, subject, metric, unit) series."""
    from tokdiag.recording.journal import JournalWriter, make_header
    from tokdiag.records import Record

    writer = JournalWriter(path, make_header(run, {}))
    for i in range(len(next(iter(series.values())))):
        writer.snapshot(5 * i, 0.1 * i, [Record(probe, subject, metric, values[i], unit)
                                          for (probe, subject, metric, unit), values in series.items()])
    writer.write({"kind": "end", "reason": "completed", "step": 5 * i, "elapsed_s": 0.1 * i, "message": ""})
    writer.close()
    return path


def test_headlines_from_a_journal_put_rss_first_then_what_grows(tmp_path: Path) -> None:
    n = 20
    journal = _journal(tmp_path / "j.jsonl", "service", {
        ("cache", "tiktoken.registry:ENCODINGS", "entries", "entries"): [min(10.0 * i, 50.0) for i in range(n)],
        ("watch", "app.RewardAgent", "count", "objects"): [10.0 * i for i in range(n)],
        ("process", "process", "rss", "bytes"): [100e6 + 2048 * 5 * i for i in range(n)],
        ("census", "builtins.dict", "count", "objects"): [500.0] * n,
    })
    headlines = headlines_from_journals([journal, tmp_path / "missing.jsonl"])
    assert [h.subject for h in headlines] == [
        "RSS", "app.RewardAgent count", "tiktoken.registry:ENCODINGS entries"]  # flat dicts left out
    assert [h.verdict for h in headlines] == ["leak", "leak", "bounded"]
    assert headlines[0].detail == "+2 KiB/step" and headlines[1].detail == "+2 objects/step"
    two = headlines_from_journals([journal, _journal(tmp_path / "k.jsonl", "fixed", {
        ("process", "process", "rss", "bytes"): [100e6] * n})])
    assert [h.subject for h in two] == ["service: RSS", "service: app.RewardAgent count",
                                        "service: tiktoken.registry:ENCODINGS entries", "fixed: RSS"]
    assert two[-1].verdict == "flat"
