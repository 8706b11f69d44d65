"""track_isolated: a workload tracked in a child process, its Run loaded back from the journal."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from tokdiag.errors import ConfigError, TargetError, TokdiagError
from tokdiag.isolated import track_isolated


@pytest.fixture()
def user_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """An importable module for the child (found through PYTHONPATH, which the child inherits)."""
    (tmp_path / "iso_user_mod.py").write_text(textwrap.dedent("""
        import os

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

        def dies():
            def step(i):
                if i == 3:
                    os._exit(9)
            return step
    """))
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
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
