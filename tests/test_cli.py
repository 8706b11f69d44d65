"""The ``tokdiag`` command: help with examples, one-line errors with exit status 2, run and report."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tokdiag.cli import main, parse_value

NOTEBOOKS = Path(__file__).parent / "notebooks"
REPO = Path(__file__).resolve().parents[1]


def _tokdiag(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``python -m tokdiag ARGS`` in a subprocess, the way a user runs it."""
    return subprocess.run([sys.executable, "-m", "tokdiag", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONPATH": str(REPO)})


def _one_line_error(stderr: str) -> str:
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_help_shows_examples(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "examples:" in out
    for command in ("tokdiag notebooks", "tokdiag run your_workload -p target", "tokdiag batch plans/default.yaml",
                    "tokdiag report "):
        assert command in out
    assert main(["batch", "--help"]) == 0
    assert "runs:\n    - notebook: agent_objects" in capsys.readouterr().out  # the plan format, by example


def test_a_missing_notebook_is_one_line_and_status_2(tmp_path: Path) -> None:
    done = _tokdiag("run", "nope.ipynb", cwd=tmp_path)
    assert done.returncode == 2
    line = _one_line_error(done.stderr)
    assert line.startswith("tokdiag: error: notebook 'nope.ipynb' not found (no file 'nope.ipynb'")
    assert "`tokdiag notebooks` lists the shipped notebooks" in line


def test_notebooks_are_run_by_name_from_any_folder_and_typos_get_the_closest_name(tmp_path: Path) -> None:
    listed = _tokdiag("notebooks", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    mine = next(i for i, line in enumerate(lines) if line.startswith("your_workload "))
    assert "Does your own step function leak" in lines[mine]  # what it answers
    assert lines[mine + 1].split("parameters: ")[1].startswith('target="tokdiag_workloads.agents:AgentApp.run_task"')
    assert ", name=" in lines[mine + 1] and "output_dir" not in lines[mine + 1]  # tokdiag sets output_dir
    assert any(line.startswith("agent_objects ") and "[tokdiag_workloads]" in line for line in lines)
    shown = _tokdiag("run", "agent_objects", "--list-parameters", cwd=tmp_path)
    assert shown.returncode == 0 and shown.stdout.startswith("tasks (default 300): agent tasks per variant")
    typo = _tokdiag("run", "agent_objets", cwd=tmp_path)
    assert typo.returncode == 2
    assert "did you mean 'agent_objects'?" in _one_line_error(typo.stderr)
    (tmp_path / "run.jsonl").write_text("{}\n")
    journal = _tokdiag("run", "run.jsonl", cwd=tmp_path)
    assert journal.returncode == 2
    assert "'run.jsonl' is a journal: make a report from it with `tokdiag report run.jsonl`" in \
        _one_line_error(journal.stderr)


@pytest.mark.slow
def test_run_ends_with_the_answer_and_a_plain_last_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(NOTEBOOKS / "leak_and_typo.ipynb"), "-o", "out"]) == 0  # completed: exit 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].startswith("Leak: Job +1 object per step, held by module __main__ -> KEPT[*]")  # as summary.json
    assert out[-1] == ("tokdiag run: leak found (Job); warning: watch: no class matches 'Jobb'; did you mean Job? "
                       "(its count and bytes were not measured)")
    assert main(["run", str(NOTEBOOKS / "leak_and_typo.ipynb"), "-o", "clean", "-p", "watch", '["Job"]',
                 "-p", "steps", "1"]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("tokdiag run: ") and "leak found (" not in last and "warning" not in last


def test_an_unknown_parameter_names_it_and_the_documented_ones(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(NOTEBOOKS / "simple_plot.ipynb"), "-p", "pionts", "3"]) == 2
    line = _one_line_error(capsys.readouterr().err)
    assert "no parameter 'pionts'" in line and "did you mean 'points'?" in line
    assert 'title (default "Bytes per step"): title of the first chart' in line
    assert "points (default 6): number of steps to plot" in line
    assert "output_dir" in line and "[set by tokdiag]" in line


def test_parameters_set_by_tokdiag_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(NOTEBOOKS / "simple_plot.ipynb"), "-p", "output_dir", "/tmp/x"]) == 2
    assert "parameter 'output_dir' is set by tokdiag" in _one_line_error(capsys.readouterr().err)


@pytest.mark.parametrize(("plan", "message"), [
    (None, "plan file 'plan.yaml' does not exist"),
    ("runs:\n  - notebook: x.ipynb\n bad: [\n", "plan.yaml: not valid YAML at line"),
    ("runs:\n  - notebook: simple_plot.ipynb\n    parameter: {points: 2}\n",
     "runs[0]: unknown key 'parameter'; did you mean 'parameters'?"),
    ("runs:\n  - notebook: simple_plot.ipynb\n    grid: {points: 3}\n", "grid.points must be a non-empty list"),
    ("timeout: soon\nruns:\n  - notebook: simple_plot.ipynb\n", "timeout must be a number of seconds > 0"),
])
def test_a_bad_plan_is_one_line_and_status_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                             monkeypatch: pytest.MonkeyPatch, plan: str | None,
                                             message: str) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "simple_plot.ipynb").write_bytes((NOTEBOOKS / "simple_plot.ipynb").read_bytes())
    if plan is not None:
        (tmp_path / "plan.yaml").write_text(plan, encoding="utf-8")
    assert main(["batch", "plan.yaml", "-o", "out"]) == 2
    line = _one_line_error(capsys.readouterr().err)
    assert line.startswith("tokdiag: error: ") and message in line
    assert not (tmp_path / "out").exists()  # nothing ran


def test_a_plan_naming_a_missing_notebook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "plan.yaml").write_text("runs:\n  - notebook: missing.ipynb\n", encoding="utf-8")
    assert main(["batch", "plan.yaml"]) == 2
    assert "runs[0]: notebook 'missing.ipynb' not found" in _one_line_error(capsys.readouterr().err)


def test_usage_errors_are_status_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert main(["run"]) == 2
    assert main(["batch", "plan.yaml", "--jobs", "many"]) == 2
    assert main(["report", "missing.jsonl"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "journal 'missing.jsonl' does not exist" in err


def test_list_parameters(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", str(NOTEBOOKS / "broken.ipynb"), "--list-parameters"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith("divisor (default 0): the cell after next divides by this")


def test_parse_value_reads_literals_and_keeps_text() -> None:
    assert parse_value("300") == 300 and parse_value("1.5") == 1.5
    assert parse_value("true") is True and parse_value("None") is None
    assert parse_value('["A", "B"]') == ["A", "B"] and parse_value("{'k': 1}") == {"k": 1}
    assert parse_value("mypkg.mod:fn") == "mypkg.mod:fn" and parse_value("") == ""


def test_run_passes_typed_parameters_and_reports_a_failure_with_status_1(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "broken.ipynb").write_bytes((NOTEBOOKS / "broken.ipynb").read_bytes())
    assert main(["run", "broken.ipynb", "-p", "divisor", "4", "-o", "ok"]) == 0
    assert "open ok/broken.html" in capsys.readouterr().err
    assert "0.25" in (tmp_path / "ok" / "broken.ipynb").read_text()  # 4 arrived as a number
    failed = _tokdiag("run", "broken.ipynb", "-o", "failed", cwd=tmp_path)
    assert failed.returncode == 1
    assert "failed at In [4], cell 2: ZeroDivisionError: division by zero" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert (tmp_path / "failed" / "broken.html").is_file()


def test_report_on_a_file_that_is_not_a_journal_names_it_as_given_and_starts_no_kernel(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    notes = tmp_path / "notes.md"
    notes.write_text("# not a journal\n")
    assert main(["report", str(notes), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"'{notes}' is not a tokdiag journal" in err
    assert not (tmp_path / "out" / "journal_report.ipynb").exists()


@pytest.mark.slow
def test_report_shows_what_the_tracker_warned_about(tmp_path: Path) -> None:
    import warnings

    import tokdiag as td

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        td.track(lambda i: None, steps=4, watch=["RewardAgnet"], journal=tmp_path / "typo.jsonl", progress=False)
    assert main(["report", str(tmp_path / "typo.jsonl"), "-o", str(tmp_path / "out")]) == 0
    page = (tmp_path / "out" / "journal_report.html").read_text()
    # in the answer, at the top of the page
    assert "Warning: watch: no class matches 'RewardAgnet'" in page


@pytest.mark.slow
def test_running_again_into_the_same_folder_keeps_the_users_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "broken.ipynb").write_bytes((NOTEBOOKS / "broken.ipynb").read_bytes())
    assert main(["run", "broken.ipynb", "-p", "divisor", "4", "-o", "mine"]) == 0
    (tmp_path / "mine" / "notes.md").write_text("my conclusions")
    (tmp_path / "mine" / "plots").mkdir()
    (tmp_path / "mine" / "plots" / "rss.png").write_bytes(b"png")
    assert main(["run", "broken.ipynb", "-p", "divisor", "5", "-o", "mine"]) == 0
    assert (tmp_path / "mine" / "notes.md").read_text() == "my conclusions"
    assert (tmp_path / "mine" / "plots" / "rss.png").read_bytes() == b"png"
    assert "0.2" in (tmp_path / "mine" / "broken.ipynb").read_text()  # the run itself was replaced
    capsys.readouterr()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "thesis.tex").write_text("x")
    assert main(["run", "broken.ipynb", "-o", "elsewhere"]) == 2
    assert "was not written by tokdiag" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "elsewhere").iterdir()) == ["thesis.tex"]


def test_pyzmq_s_shutdown_race_is_one_line_on_stderr_not_a_traceback() -> None:
    # papermill stops the kernel after a failed cell while a reply may be in flight; pyzmq then logs the closed
    # channel's error with a traceback under "tornado.general". A run's stderr keeps the line, not the traceback.
    # (The filter is applied to records directly: another test's logging config may disable that logger.)
    import logging
    import sys

    from tokdiag.report import kernel

    kernel._quiet_papermill()
    filters = logging.getLogger("tornado.general").filters
    assert [f for f in filters if type(f) is kernel._ShutdownRace]  # installed where pyzmq logs
    try:
        raise RuntimeError("Stream is closed")
    except RuntimeError:
        race = logging.LogRecord("tornado.general", logging.ERROR, __file__, 1,
                                 "Uncaught exception in ZMQStream callback", (), sys.exc_info())
    other = logging.LogRecord("tornado.general", logging.ERROR, __file__, 1, "some other failure %s", ("kept",),
                              (ValueError, ValueError("v"), None))
    shown = [logging.Formatter().format(r) for r in (race, other) if kernel._ShutdownRace().filter(r)]
    assert shown[0] == ("Uncaught exception in ZMQStream callback while the kernel stopped: "
                        "RuntimeError: Stream is closed")
    assert shown[1].startswith("some other failure kept") and "ValueError: v" in shown[1]
    assert "Traceback" not in "\n".join(shown)


def test_with_code_reaches_the_export_of_run_batch_and_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import tokdiag as td
    from tokdiag.errors import ConfigError
    from tokdiag.report import batch, journal_report

    seen: dict[str, object] = {}

    def stop(key: str, value: object) -> None:
        seen[key] = value
        raise ConfigError("stopped by the test")

    monkeypatch.chdir(tmp_path)
    (tmp_path / "broken.ipynb").write_bytes((NOTEBOOKS / "broken.ipynb").read_bytes())
    (tmp_path / "plan.yaml").write_text("runs:\n  - notebook: broken.ipynb\n", encoding="utf-8")
    monkeypatch.setattr(batch, "run_one", lambda spec, folder, **kw: stop("run", spec.with_code))
    monkeypatch.setattr(batch, "run_batch", lambda plan, out, **kw: stop("batch", kw.get("with_code")))
    monkeypatch.setattr(journal_report, "run_report_notebook", lambda *a, **kw: stop("report", kw.get("with_code")))
    td.track(lambda i: None, steps=2, census=False, progress=False, journal=tmp_path / "a.jsonl")
    for with_code in (False, True):
        flag = ["--with-code"] if with_code else []
        assert main(["run", "broken.ipynb", *flag]) == 2
        assert main(["batch", "plan.yaml", *flag]) == 2
        assert main(["report", "a.jsonl", *flag]) == 2
        assert seen == {"run": with_code, "batch": with_code, "report": with_code}
