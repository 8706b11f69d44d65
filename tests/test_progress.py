"""Progress: a line that moves while a step runs, in a terminal and in a real Jupyter kernel session."""

from __future__ import annotations

import json
import os
import queue
import shutil
import time
from pathlib import Path

import pytest
from late_imports import lazy

import tokdiag as td
from tokdiag.recording.journal import JournalWriter, make_header
from tokdiag.recording.progress import JournalFollower, progress_bar
from tokdiag.records import BYTES, Record

nbformat = lazy("nbformat")  # at first use, not at collection (tests/late_imports.py)

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = Path(__file__).parent / "notebooks"


def test_the_follower_reads_only_the_childs_journal_and_its_new_snapshots(tmp_path: Path) -> None:
    path = tmp_path / "run.jsonl"
    header = make_header("old", {})
    with JournalWriter(path, header) as old:  # an earlier run's journal at the same path
        old.snapshot(7, 0.1, [Record("process", "process", "rss", 1.0, BYTES)])
    follower = JournalFollower(path, pid=-1)
    assert follower.poll() is False and follower.step is None  # not the child's: skipped

    path.unlink()
    with path.open("w") as fh:
        fh.write(json.dumps({"kind": "header", "format": 1, "pid": -1, "run": "child"}) + "\n")
        fh.write(
            json.dumps(
                {
                    "kind": "snapshot",
                    "step": 0,
                    "records": [
                        {
                            "probe": "process",
                            "subject": "process",
                            "metric": "rss",
                            "value": 2.0 * 2**20,
                            "unit": "bytes",
                        }
                    ],
                }
            )
            + "\n"
        )
        fh.write('{"kind": "snapshot", "step": 5, "rec')  # being written
    assert follower.poll() is True
    assert (follower.step, follower.rss, follower.snapshots) == (0, 2.0 * 2**20, 1)
    with path.open("a") as fh:
        fh.write('ords": []}\n')
    assert follower.poll() is True and (follower.step, follower.snapshots) == (5, 2)
    assert follower.poll() is False  # nothing new


def test_progress_can_be_off() -> None:
    assert progress_bar(3, "x", enabled=False) is None
    with pytest.raises(td.ConfigError, match="progress="):
        td.track_isolated("waiter_td:make", {}, steps=1, journal="x.jsonl", progress="yes")


def test_an_isolated_run_shows_its_progress_in_a_terminal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copy(NOTEBOOKS / "waiter_td.py", tmp_path)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), str(tmp_path)]))
    (tmp_path / "go").touch()
    run = td.track_isolated("waiter_td:make", {"release": "go", "at": 1, "wait_s": 30.0}, steps=4, every=1,
                            census=False, journal=tmp_path / "w.jsonl", name="waiter")
    assert run.status == "completed"
    err = capsys.readouterr().err
    assert "waiter" in err and "4/4" in err  # tqdm's line, at the last snapshot


# -- a real kernel session, as JupyterLab drives it --------------------------------------------------------


def _text(msg: dict) -> str:
    content = msg["content"]
    if msg["msg_type"] == "stream":
        return str(content.get("text", ""))
    return str(content.get("data", {}).get("text/plain", ""))


@pytest.mark.slow
def test_progress_reaches_a_jupyter_session_while_the_step_is_still_running(tmp_path: Path) -> None:
    """Each run's step 3 waits for a file that this test creates only once it has seen "3/6 steps" on iopub.

    If the progress line did not arrive while the step ran, the step would give up after ``wait_s`` and the
    notebook would print False: the order is checked, not the time.
    """
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    shutil.copy(NOTEBOOKS / "waiter_td.py", tmp_path)
    nb = nbformat.read(NOTEBOOKS / "progress.ipynb", as_version=4)
    # the native kernelspec (this interpreter), found in an empty kernel folder; tokdiag from this checkout
    km = KernelManager(kernel_name="python3", kernel_spec_manager=KernelSpecManager(kernel_dirs=[str(tmp_path)]))
    km.start_kernel(cwd=str(tmp_path), env={**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path)])})
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=120)
        released: dict[str, str] = {}
        seen: dict[str, list[dict]] = {}
        for cell in nb.cells:
            if cell.cell_type != "code":
                continue
            tag = (cell.metadata.get("tags") or ["?"])[0]
            source = cell.source + ("\nwait_s = 90.0" if tag == "parameters" else "")
            msg_id = kc.execute(source)
            seen[tag] = []
            deadline = time.monotonic() + 240
            while True:
                try:
                    msg = kc.get_iopub_msg(timeout=max(0.1, deadline - time.monotonic()))
                except queue.Empty:
                    pytest.fail(f"cell {tag!r} did not finish")
                if msg["msg_type"] == "status" and msg["parent_header"].get("msg_id") == msg_id \
                        and msg["content"]["execution_state"] == "idle":
                    break
                if msg["msg_type"] in ("display_data", "update_display_data", "stream", "error", "execute_result"):
                    seen[tag].append(msg)
                    if msg["msg_type"] == "error":
                        pytest.fail("\n".join(msg["content"]["traceback"]))
                    name = {"isolated": "release-isolated", "in-process": "release-here"}.get(tag)
                    if name and "3/6 steps" in _text(msg) and tag not in released:
                        (tmp_path / name).touch()  # the step is still waiting for this file
                        released[tag] = msg["msg_type"]
        assert released == {"isolated": "update_display_data", "in-process": "update_display_data"}
        printed = "".join(_text(m) for m in seen["released"] if m["msg_type"] == "stream")
        assert printed.split() == ["True", "True"]  # both steps were let go by this test, not by their timeout
        for tag in ("isolated", "in-process"):
            kinds = {m["msg_type"] for m in seen[tag]}
            assert "stream" not in kinds, f"{tag}: progress went to a stream (drawn as stderr)"
            last = seen[tag][-1]  # a completed run leaves no progress line above what follows
            assert last["msg_type"] == "update_display_data" and _text(last) == ""
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
