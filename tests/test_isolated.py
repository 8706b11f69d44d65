"""track_isolated: a workload tracked in a child process, its Run loaded back from the journal."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

import tokdiag
import tokdiag as td
from tokdiag.errors import ConfigError, TargetError, TokdiagError
from tokdiag.recording.isolated import track_isolated
from tokdiag.recording.isolated_child import CHILD_TIMEOUT_MARGIN_S

_ROOT = str(Path(tokdiag.__file__).resolve().parent.parent)  # the tokdiag under test, for every child process


@pytest.fixture()
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An importable module for the child (found through PYTHONPATH, which the child inherits)."""
    (tmp_path / "iso_user_mod.py").write_text(textwrap.dedent("""
        import os
        import sys
        import time

        KEPT = []

        class Blob:
            def __init__(self):
                self.payload = bytearray(64 * 1024)

        def leaking():
            def step(i):
                KEPT.append(Blob())
            step.kept = KEPT
            return step

        def broken(message="boom"):
            def step(i):
                if i == 3:
                    raise RuntimeError(message)
            return step

        def dies(code=9):
            def step(i):
                if i == 3:
                    os._exit(code)
            return step

        def exits(code=3):
            def step(i):
                if i == 3:
                    sys.exit(code)
            return step

        def sleeps(delay=0.05):
            def step(i):
                time.sleep(delay)
            return step

        def breaks_when_made():
            raise RuntimeError("the factory broke")
    """))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), _ROOT]))
    return "iso_user_mod"


def test_a_leak_in_the_child_is_seen_from_the_parent(user_module: str, tmp_path: Path) -> None:
    run = track_isolated(f"{user_module}:leaking", steps=30, every=1, watch=["Blob"], census=False,
                         journal=tmp_path / "leak.jsonl", report=["kept"])
    assert run.status == "completed"
    v = run.verdicts().set_index(["probe", "metric"])
    assert v.loc[("watch", "count"), "verdict"] == "leak"
    assert v.loc[("watch", "count"), "per_step"] == pytest.approx(1.0)
    assert run.events[-1]["event"] == "workload"
    assert len(run.events[-1]["values"]["kept"]) == 30  # a list of reprs, JSON-safe


def test_nothing_of_the_child_stays_in_the_parent(user_module: str, tmp_path: Path) -> None:
    track_isolated(f"{user_module}:leaking", steps=3, every=1, census=False, journal=tmp_path / "j.jsonl")
    assert user_module not in sys.modules


def test_a_workload_error_is_raised_with_the_child_traceback(user_module: str, tmp_path: Path) -> None:
    with pytest.raises(TokdiagError, match="RuntimeError: kaboom"):
        track_isolated(f"{user_module}:broken", {"message": "kaboom"}, steps=10, every=1, census=False,
                       journal=tmp_path / "err.jsonl")


def test_a_child_that_dies_keeps_its_snapshots_and_says_how_it_ended(user_module: str, tmp_path: Path) -> None:
    run = track_isolated(f"{user_module}:dies", steps=10, every=1, census=False, journal=tmp_path / "die.jsonl")
    assert run.status == "killed"
    assert "exit code 9" in run.message
    assert run.steps[:3] == [0, 1, 2]


def test_bad_factory_and_non_json_options_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="'nocolon'.*package.module:function"):
        track_isolated("nocolon", steps=3, journal=tmp_path / "x.jsonl")
    with pytest.raises(ConfigError, match="JSON"):
        track_isolated("tokdiag_workloads.agents:agent_workload", {"x": object()}, steps=3,
                       journal=tmp_path / "x.jsonl")


def test_a_factory_that_cannot_be_found_says_so(tmp_path: Path) -> None:
    with pytest.raises(TargetError, match="has no attribute 'agent_workloadd' .did you mean 'agent_workload'"):
        track_isolated("tokdiag_workloads.agents:agent_workloadd", steps=3, journal=tmp_path / "x.jsonl")


def test_a_step_function_passed_as_the_factory_is_named_as_the_mistake(tmp_path: Path) -> None:
    # count_tokens(text) is a step-like function, not a factory: called with no kwargs it cannot run
    with pytest.raises(TargetError, match=r"not step\(i\) itself"):
        track_isolated("tokdiag_workloads.agents:count_tokens", steps=3, journal=tmp_path / "a.jsonl")
    # a factory that returns no step function
    with pytest.raises(TargetError, match="returned NoneType, not a step function"):
        track_isolated("tokdiag_workloads.tokenizers:reset_caches", steps=3, journal=tmp_path / "b.jsonl")


# -- how the child ended comes from its status report, never from its exit code ---------------------------

def test_sys_exit_in_the_workload_is_a_workload_error_that_keeps_the_journal(user_module: str, tmp_path: Path) -> None:
    path = tmp_path / "exit.jsonl"
    with pytest.raises(TokdiagError, match=r"the workload called sys.exit\(3\) in the child process, after 3 steps "
                                           r"\(the journal .*exit.jsonl' keeps the snapshots") as info:
        track_isolated(f"{user_module}:exits", {"code": 3}, steps=10, every=1, census=False, journal=path)
    assert not isinstance(info.value, TargetError)
    run = td.load(path)
    assert run.steps == [0, 1, 2, 3] and run.status == "error" and "SystemExit: 3" in run.message


@pytest.mark.parametrize("code", [2, 3])
def test_os_exit_in_the_workload_is_a_killed_run_whatever_the_code(user_module: str, tmp_path: Path,
                                                                  code: int) -> None:
    run = track_isolated(f"{user_module}:dies", {"code": code}, steps=10, every=1, census=False,
                         journal=tmp_path / "die.jsonl")
    assert run.status == "killed"
    assert f"ended with exit code {code} before reporting" in run.message
    assert run.steps == [0, 1, 2, 3]


def test_a_factory_that_raises_names_its_traceback_and_no_stale_journal_is_loaded(user_module: str,
                                                                                   tmp_path: Path) -> None:
    path = tmp_path / "stale.jsonl"
    track_isolated(f"{user_module}:leaking", steps=2, every=1, census=False, journal=path)  # an earlier run
    with pytest.raises(TokdiagError, match=r"(?s)wrote no journal.*RuntimeError: the factory broke"):
        track_isolated(f"{user_module}:breaks_when_made", steps=2, census=False, journal=path)


def test_a_file_that_is_not_a_journal_is_not_replaced(user_module: str, tmp_path: Path) -> None:
    notes = tmp_path / "notes.jsonl"
    notes.write_text("my notes\n")
    with pytest.raises(ConfigError, match="exists and is not a tokdiag journal"):
        track_isolated(f"{user_module}:leaking", steps=2, census=False, journal=notes)
    assert notes.read_text() == "my notes\n"
    with pytest.raises(ConfigError, match="is a folder"):
        track_isolated(f"{user_module}:leaking", steps=2, census=False, journal=tmp_path)


_PARENT = """
import json, sys, tokdiag as td
from tokdiag.recording.isolated import track_isolated
journal = sys.argv[1]
try:
    run = track_isolated("iso_user_mod:sleeps", {{"delay": 0.05}}, steps=100000, every=5, census=False,
                         journal=journal, timeout={timeout})
    print("RESULT " + json.dumps({{"returned": run.status}}), flush=True)
except KeyboardInterrupt as exc:
    print("RESULT " + json.dumps({{"interrupt": td.load(journal).status, "notes": getattr(exc, "__notes__", [])}}),
          flush=True)
"""


def _start_parent(tmp_path: Path, timeout: float = 300) -> tuple[subprocess.Popen[str], Path]:
    journal = tmp_path / "parent.jsonl"
    parent = subprocess.Popen([sys.executable, "-c", _PARENT.format(timeout=timeout), str(journal)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                              env={**os.environ, "TMPDIR": str(tmp_path)})  # a killed parent's status file lands here
    deadline = time.time() + 60
    while time.time() < deadline:
        if journal.exists() and journal.read_text().count('"snapshot"') >= 2:
            return parent, journal
        time.sleep(0.05)
    parent.kill()
    raise AssertionError(f"the child wrote no snapshots: {parent.communicate()[1][-2000:]}")


def _result(parent: subprocess.Popen[str]) -> dict:
    out, err = parent.communicate(timeout=60)
    lines = [x for x in out.splitlines() if x.startswith("RESULT ")]
    assert lines, err[-3000:]
    return json.loads(lines[-1][len("RESULT "):])


def _gone(pid: int, within: float) -> bool:
    deadline = time.time() + within
    while time.time() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


@pytest.mark.slow
def test_two_ctrl_c_in_a_terminal_end_the_run_as_interrupted(user_module: str, tmp_path: Path) -> None:
    parent, _ = _start_parent(tmp_path)
    try:
        os.killpg(parent.pid, signal.SIGINT)  # a terminal's Ctrl-C reaches the parent and the child
        time.sleep(0.4)
        os.killpg(parent.pid, signal.SIGINT)
        result = _result(parent)
    finally:
        if parent.poll() is None:
            os.killpg(parent.pid, signal.SIGKILL)
    assert result["interrupt"] == "interrupted"
    assert any("kept in the journal" in n for n in result["notes"])


@pytest.mark.slow
def test_ctrl_c_in_the_parent_alone_is_forwarded_to_the_child(user_module: str, tmp_path: Path) -> None:
    parent, _ = _start_parent(tmp_path)
    try:
        parent.send_signal(signal.SIGINT)  # how a notebook kernel is interrupted
        result = _result(parent)
    finally:
        if parent.poll() is None:
            os.killpg(parent.pid, signal.SIGKILL)
    assert result["interrupt"] == "interrupted"


@pytest.mark.slow
def test_the_child_dies_with_its_parent(user_module: str, tmp_path: Path) -> None:
    parent, journal = _start_parent(tmp_path)
    child = td.load(journal).header["pid"]
    try:
        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=30)
        assert _gone(child, within=10), "the child outlived its SIGKILLed parent"
    finally:
        if psutil.pid_exists(child):
            os.kill(child, signal.SIGKILL)


@pytest.mark.slow
def test_the_child_enforces_the_timeout_itself_when_the_parent_cannot(user_module: str, tmp_path: Path) -> None:
    timeout = 20.0  # room for the child to start on a busy machine before the parent is stopped
    parent, journal = _start_parent(tmp_path, timeout=timeout)
    child = td.load(journal).header["pid"]
    try:
        parent.send_signal(signal.SIGSTOP)  # alive, but unable to kill its child at the timeout
        assert parent.poll() is None, "the parent ended before it could be stopped"
        assert _gone(child, within=timeout + CHILD_TIMEOUT_MARGIN_S + 15), "the child ran past its timeout"
    finally:
        parent.send_signal(signal.SIGCONT)
        os.killpg(parent.pid, signal.SIGKILL)
        parent.wait(timeout=30)
        if psutil.pid_exists(child):
            os.kill(child, signal.SIGKILL)
