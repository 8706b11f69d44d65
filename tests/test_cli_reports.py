"""``tokdiag report`` and ``tokdiag compare``: runs with names, one folder per report, files told apart."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest

import tokdiag as td
from tokdiag.cli import main

_KEPT: list[bytearray] = []


@pytest.fixture(scope="module")
def _recorded(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two journals of one target name, recorded once for the module: one leaks 10 KB per step, one keeps nothing."""
    folder = tmp_path_factory.mktemp("journals")
    leaky, clean = folder / "before.jsonl", folder / "after.jsonl"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        td.track(lambda i: _KEPT.append(bytearray(10_000)), steps=60, every=4, name="handle", census=False,
                 progress=False, journal=leaky)
        td.track(lambda i: None, steps=60, every=4, name="handle", census=False, progress=False, journal=clean)
    return leaky, clean


@pytest.fixture
def journals(_recorded: tuple[Path, Path], tmp_path: Path) -> tuple[Path, Path]:
    """The two journals, copied into the test's folder (its reports are written there)."""
    leaky, clean = (Path(shutil.copy(journal, tmp_path / journal.name)) for journal in _recorded)
    return leaky, clean


@pytest.mark.parametrize(("name", "content", "said"), [
    ("summary.json", {"tokdiag_summary": 1, "title": "", "headlines": []}, "a run's summary.json"),
    ("index.json", {"generator": "tokdiag", "title": "t", "plan": "", "runs": []}, "a batch's index.json"),
    ("plan.yaml", None, "`tokdiag batch plan.yaml`"),
    ("broken.ipynb", {"cells": [], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}, "`tokdiag run broken.ipynb`"),
])
def test_report_of_a_file_that_is_not_a_journal_says_what_it_is_and_which_command_takes_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        name: str, content: object, said: str) -> None:
    monkeypatch.chdir(tmp_path)
    Path(name).write_text(json.dumps(content) if content is not None else "runs: []\n", encoding="utf-8")
    assert main(["report", name]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and said in err, err
    assert "damaged" not in err and err.count("not a tokdiag journal") <= 1
    assert "`tokdiag report` takes journals (.jsonl)" in err


def test_names_must_be_one_per_journal_before_any_kernel_starts(
        tmp_path: Path, journals: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    leaky, clean = journals
    for command in ("report", "compare"):
        assert main([command, leaky.name, clean.name, "--name", "only one"]) == 2
        err = capsys.readouterr().err
        assert "--name 'only one': give one --name per journal (2)" in err
    assert not Path("reports").exists()


def test_compare_needs_two_journals(
        tmp_path: Path, journals: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    leaky, _ = journals
    assert main(["compare", leaky.name]) == 2
    assert "tokdiag compare takes two or more journals" in capsys.readouterr().err


@pytest.mark.slow
def test_compare_writes_an_ab_report_of_named_runs_and_ends_with_its_answer(
        tmp_path: Path, journals: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    leaky, clean = journals
    assert main(["compare", leaky.name, clean.name, "--name", "leaky build", "--name", "fixed build"]) == 0
    out, err = capsys.readouterr()
    folder = tmp_path / "reports" / "compare-before-vs-after"
    page = folder / "compare_runs.html"
    assert page.is_file() and "reports/compare-before-vs-after/compare_runs.html" in err
    text = page.read_text(encoding="utf-8")
    assert "leaky build" in text and "fixed build" in text and "handle vs handle" not in text
    last = out.strip().splitlines()[-1]
    assert last.startswith("tokdiag compare: leak found (") and "leaky build" in last, out
    # the same target, twice, with no names: the journals' file names tell the runs apart
    assert main(["compare", leaky.name, clean.name, "-o", "unnamed"]) == 0
    capsys.readouterr()
    assert "before" in (tmp_path / "unnamed" / "compare_runs.html").read_text(encoding="utf-8")


@pytest.mark.slow
def test_each_report_gets_its_own_folder_and_another_reports_folder_is_refused(
        tmp_path: Path, journals: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    leaky, clean = journals
    assert main(["report", leaky.name]) == 0
    assert main(["report", leaky.name, clean.name, "--name", "A", "--name", "B"]) == 0
    first = tmp_path / "reports" / "report-before" / "journal_report.html"
    both = tmp_path / "reports" / "report-before+after" / "journal_report.html"
    assert first.is_file() and both.is_file()
    assert "after.jsonl" not in first.read_text(encoding="utf-8")
    capsys.readouterr()
    before = first.read_bytes()
    assert main(["report", clean.name, "-o", "reports/report-before"]) == 2
    err = capsys.readouterr().err
    assert "holds the report of before.jsonl" in err and "-o" in err
    assert first.read_bytes() == before
    assert main(["report", leaky.name]) == 0  # the same journals again: the report is brought up to date
