"""The journal on disk: what it refuses by name, what it survives, and one writer at a time."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import tokdiag as td
from tokdiag.errors import ConfigError, JournalError, TokdiagError
from tokdiag.recording.journal import FORMAT, JournalWriter, make_header, read_journal
from tokdiag.recording.timeline import TimelineColumns
from tokdiag.records import COLUMNS


def _journal(tmp_path: Path, name: str = "j.jsonl", **options: object) -> Path:
    path = tmp_path / name
    td.track(lambda i: None, steps=6, every=2, journal=path, progress=False, **options)  # type: ignore[arg-type]
    return path


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def _write_lines(path: Path, lines: list[dict]) -> None:
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))


# -- what it refuses, by name -----------------------------------------------------------------------

def test_a_journal_in_a_newer_format_is_refused_naming_format_version_and_fix(tmp_path: Path) -> None:
    path = _journal(tmp_path, census=False)
    lines = _lines(path)
    lines[0].update(format=99, tokdiag="7.2.0")
    _write_lines(path, lines)
    with pytest.raises(JournalError, match=r"format 99, written by tokdiag 7\.2\.0.*reads format 1 and older: "
                                           r"upgrade tokdiag"):
        td.load(path)
    with pytest.raises(JournalError, match="format 99"):  # nor is a newer journal appended to
        JournalWriter(path, None)


def test_binary_garbage_is_a_journal_error_not_a_decode_error(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.jsonl"
    garbage.write_bytes(b"\x89PNG\r\n\x1a\n\x00\xff\xfe" + bytes(range(256)) * 8)
    with pytest.raises(JournalError, match=r"line 1: not UTF-8 text.*not a tokdiag journal"):
        td.load(garbage)
    one_line = tmp_path / "one.jsonl"
    one_line.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(JournalError, match=r"not a tokdiag journal: its first line is not UTF-8 text"):
        td.load(one_line)


def test_a_snapshot_line_without_step_names_the_line(tmp_path: Path) -> None:
    path = _journal(tmp_path, census=False)
    lines = _lines(path)
    del lines[2]["step"]
    _write_lines(path, lines)
    with pytest.raises(JournalError, match=r"line 3: bad snapshot: no 'step'.*remove or repair it"):
        td.load(path)


@pytest.mark.parametrize(("edit", "message"), [
    (lambda s: s.update(step="3"), r"'step' is '3', not a number of steps"),
    (lambda s: s.update(step=True), r"'step' is True"),
    (lambda s: s.update(records={"a": 1}), r"'records' is dict"),
    (lambda s: s["records"].append([1, 2]), r"record \d+ is \[1, 2\], not a \{probe"),
    (lambda s: s["records"][0].update(value="12"), r"record 0 has value '12', not a number"),
    (lambda s: s["records"][1].pop("metric"), r"record 1 has no 'metric'"),
    (lambda s: s["records"][0].update(subject=["x"]), r"record 0 has subject \['x'\], not text"),
    (lambda s: s.update(elapsed_s=None), r"'elapsed_s' is None"),
])
def test_malformed_snapshot_lines_are_journal_errors_naming_the_problem(tmp_path: Path, edit, message) -> None:
    path = _journal(tmp_path, census=False)
    lines = _lines(path)
    edit(lines[2])
    _write_lines(path, lines)
    with pytest.raises(JournalError, match=rf"line 3: bad snapshot: {message}"):
        td.load(path)


def test_a_journal_path_that_is_a_folder_is_named_when_writing_and_reading(tmp_path: Path) -> None:
    with pytest.raises(JournalError, match="is a folder"):
        td.load(tmp_path)
    with pytest.raises(ConfigError, match=r"is a folder; pass the path of a file in it"):
        td.track(lambda i: None, steps=2, journal=tmp_path, overwrite=True, progress=False, census=False)
    with pytest.raises(ConfigError, match="is a folder"):
        JournalWriter(tmp_path, None)


def test_a_damaged_line_before_the_end_is_refused_with_its_line_number(tmp_path: Path) -> None:
    path = _journal(tmp_path, census=False)
    text = path.read_text().splitlines(keepends=True)
    text[2] = text[2][:40] + "\n"
    path.write_text("".join(text))
    with pytest.raises(JournalError, match=r"line 3: not JSON.*damaged before its end"):
        td.load(path)


def test_missing_and_empty_journals_say_so(tmp_path: Path) -> None:
    with pytest.raises(JournalError, match="does not exist"):
        td.load(tmp_path / "nope.jsonl")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(JournalError, match="is empty"):
        td.load(tmp_path / "empty.jsonl")


# -- crash safety -------------------------------------------------------------------------------------

def test_a_last_line_cut_inside_a_utf8_character_is_tolerated(tmp_path: Path) -> None:
    path = tmp_path / "utf8.jsonl"  # tokdiag writes ASCII; a journal copied through other tools may hold UTF-8
    lines = [{"kind": "header", "format": FORMAT, "run": "utf8"}] + [
        {"kind": "snapshot", "step": step, "elapsed_s": 0.1 * step, "records": [
            {"probe": "watch", "subject": "app.Caf\u00e9\u2603", "metric": "count", "value": step, "unit": "objects"}]}
        for step in range(3)]
    raw = "".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines).encode()
    cut = raw.rindex("\u2603".encode()) + 1  # in the middle of the last snowman's three bytes
    path.write_bytes(raw[:cut])
    run = td.load(path)
    assert run.status == "killed" and "cut mid-write" in run.message
    assert run.steps == [0, 1]
    assert set(run.timeline["subject"]) == {"app.Caf\u00e9\u2603"}


def test_a_journal_without_a_trailing_newline_keeps_its_last_line(tmp_path: Path) -> None:
    path = _journal(tmp_path, census=False)
    path.write_text(path.read_text().rstrip("\n"))
    run = td.load(path)
    assert run.status == "completed" and run.steps == [0, 2, 4, 6]


def test_each_line_reaches_the_file_when_it_is_written(tmp_path: Path) -> None:
    path = tmp_path / "live.jsonl"
    with JournalWriter(path, make_header("live", {})) as journal:
        journal.event("one")
        assert [x["kind"] for x in _lines(path)] == ["header", "event"]  # nothing waits in a buffer
        journal.event("two")
        assert len(_lines(path)) == 3


# -- the timeline it builds -----------------------------------------------------------------------------

def _reference_timeline(path: Path) -> pd.DataFrame:
    """The timeline built the plain way: every record a dict, columns from lists (how tokdiag did it before)."""
    lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    run = lines[0]["run"]
    rows = [(run, s["step"], s["elapsed_s"], r["probe"], r["subject"], r["metric"],
             math.nan if r["value"] is None else float(r["value"]), r["unit"])
            for s in lines if s["kind"] == "snapshot" for r in s["records"]]
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    return df.astype({"run": "string", "step": "int64", "elapsed_s": "float64", "probe": "string",
                      "subject": "string", "metric": "string", "value": "float64", "unit": "string"})


def test_the_streamed_timeline_equals_the_plain_one_value_for_value_and_dtype_for_dtype(tmp_path: Path) -> None:
    class Box:  # gc-tracked, so the watch probe counts it (an untracked class gets no watch series)
        def __init__(self) -> None:
            self.payload = bytearray(100)

    keep = [Box() for _ in range(3)]
    path = tmp_path / "census.jsonl"
    run = td.track(lambda i: keep.append(Box()), steps=12, every=3, journal=path, progress=False, watch=["Box"])
    assert run.timeline["probe"].nunique() >= 4  # process, census, watch, tracker
    pd.testing.assert_frame_equal(td.load(path).timeline, _reference_timeline(path), check_exact=True)
    pd.testing.assert_frame_equal(run.timeline, _reference_timeline(path), check_exact=True)


def test_an_empty_run_has_the_timeline_columns_and_dtypes(tmp_path: Path) -> None:
    path = tmp_path / "header_only.jsonl"
    JournalWriter(path, make_header("h", {})).close()
    tl = td.load(path).timeline
    assert list(tl.columns) == list(COLUMNS) and len(tl) == 0
    assert tl.dtypes.astype(str).tolist() == ["string", "int64", "float64", "string", "string", "string", "float64",
                                              "string"]


def test_timeline_columns_keep_the_text_of_a_series_once_and_roll_back_a_bad_snapshot() -> None:
    cols = TimelineColumns()
    rec = {"probe": "census", "subject": "builtins.dict", "metric": "count", "value": 1.0, "unit": "objects"}
    for step in range(100):
        cols.add(step, step * 0.5, [dict(rec), dict(rec, metric="bytes", value=None, unit="bytes")])
    with pytest.raises(ValueError, match="record 1 has value"):
        cols.add(100, 50.0, [dict(rec), dict(rec, value="x")])
    assert len(cols) == 200 and cols.snapshots == 100  # the bad snapshot left nothing behind
    tl = cols.frame("r")
    subjects = tl["subject"].array._ndarray  # one str object for the 200 rows, not 200 copies
    assert len({id(s) for s in subjects}) == 1
    assert np.isnan(tl["value"].iloc[1]) and tl["step"].iloc[-1] == 99 and tl["elapsed_s"].iloc[-1] == 49.5


# -- one writer at a time ----------------------------------------------------------------------------

def test_a_second_writer_with_overwrite_is_refused_while_the_first_writes(tmp_path: Path) -> None:
    path = tmp_path / "shared.jsonl"
    first = JournalWriter(path, make_header("first", {}))
    first.event("a")
    with pytest.raises(ConfigError, match=r"is being written by run 'first' \(pid \d+, this process\); two runs "
                                          r"cannot share one journal"):
        JournalWriter(path, make_header("second", {}), overwrite=True)
    first.event("b")
    first.close()
    assert [x.get("event") for x in _lines(path)] == [None, "a", "b"]  # the first run is whole
    JournalWriter(path, make_header("second", {}), overwrite=True).close()  # free once it is closed
    assert _lines(path)[0]["run"] == "second"


@pytest.mark.slow
def test_two_processes_writing_one_journal_with_overwrite_lose_no_run(tmp_path: Path) -> None:
    path = tmp_path / "two.jsonl"
    script = textwrap.dedent(f"""
        import time, tokdiag as td
        td.track(lambda i: time.sleep(0.02), steps=150, every=10, journal={str(path)!r}, overwrite=True,
                 census=False, progress=False, name="first")
    """)
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.time() + 60
        while time.time() < deadline and (not path.exists() or '"snapshot"' not in path.read_text()):
            time.sleep(0.05)
        with pytest.raises(ConfigError, match=rf"being written by run 'first' \(pid {proc.pid}\)"):
            td.track(lambda i: None, steps=3, journal=path, overwrite=True, census=False, progress=False)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    run = td.load(path)
    assert run.name == "first" and run.status == "completed" and run.steps[-1] == 150


# -- fork() inside a step ----------------------------------------------------------------------------

_FORK_SCRIPT = """
import json, os, sys, tokdiag as td

def step(i):
    if i == 3:
        pid = os.fork()
        if pid == 0:
            {child}
        else:
            os.waitpid(pid, 0)

journal = {journal!r}
run = td.track(step, steps=8, every=1, census=False, progress=False, **({{"journal": journal}} if journal else {{}}))
print(json.dumps({{"status": run.status, "steps": run.steps, "pid": os.getpid()}}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("child", [
    "raise SystemExit(0)",             # the child ends by raising through td.track
    "raise RuntimeError('in child')",  # the child fails
    "pass",                            # the child returns into td.track's loop and runs the remaining steps
])
@pytest.mark.parametrize("named", [True, False])
def test_a_fork_inside_a_step_never_writes_to_the_parents_journal(tmp_path: Path, child: str, named: bool) -> None:
    path = tmp_path / "fork.jsonl"
    script = _FORK_SCRIPT.format(child=child, journal=str(path) if named else "")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])  # the parent's line: the child prints none
    assert result["status"] == "completed"
    assert result["steps"] == list(range(9))  # each step once: no snapshot from the child
    if named:
        kinds = [x["kind"] for x in _lines(path)]
        assert kinds.count("end") == 1 and kinds.count("snapshot") == 9
        assert all(x["reason"] == "completed" for x in _lines(path) if x["kind"] == "end")
    if child == "pass":  # the child was told why it recorded nothing
        assert "is a fork() made during a step" in out.stderr


def test_a_writer_refuses_to_write_from_a_forked_child(tmp_path: Path) -> None:
    path = tmp_path / "parent.jsonl"
    with JournalWriter(path, make_header("parent", {})) as journal:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child reports through the pipe and leaves with os._exit
            try:
                journal.event("from the child")
                os.write(w, b"wrote")
            except JournalError as exc:
                os.write(w, str(exc).encode())
            finally:
                os._exit(0)
        os.close(w)
        os.waitpid(pid, 0)
        said = os.read(r, 4096).decode()
        os.close(r)
        journal.event("from the parent")  # the parent's copy still writes, and holds the lock
        with pytest.raises(ConfigError, match="being written"):
            JournalWriter(path, make_header("other", {}), overwrite=True)
    assert "a forked child never writes to its parent's journal" in said or "is closed" in said
    assert [x.get("event") for x in _lines(path)] == [None, "from the parent"]


def test_format_constant_is_what_the_header_says(tmp_path: Path) -> None:
    assert read_journal(_journal(tmp_path, census=False)).header["format"] == FORMAT
    assert issubclass(JournalError, TokdiagError)
