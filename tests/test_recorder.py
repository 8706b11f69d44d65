"""The in-process recorder (td.record), the middleware's counting, service journals read as one, attach's checks."""

from __future__ import annotations

import asyncio
import atexit
import gc
import os
import sys
import threading
import time
import weakref
from pathlib import Path
from types import SimpleNamespace

import pytest

import tokdiag as td
from tokdiag.errors import AttachError, ConfigError, JournalError
from tokdiag.recording.attach import _check_versions, parse_duration
from tokdiag.recording.journal import JournalWriter, make_header
from tokdiag.recording.middleware import ASGIMiddleware, WSGIMiddleware
from tokdiag.recording.recorder import Recorder
from tokdiag.recording.service import journal_for, load_service
from tokdiag.records import Record


class _Kept:
    def __init__(self) -> None:
        self.payload = bytearray(1000)


def _tokdiag_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("tokdiag")]


def _until(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_record_per_request_finds_a_leak_and_leaves_no_thread_nor_atexit_hook(tmp_path, monkeypatch):
    hooks: list[object] = []
    register, unregister = atexit.register, atexit.unregister
    monkeypatch.setattr(atexit, "register", lambda f, *a, **k: (hooks.append(f), register(f, *a, **k))[1])
    monkeypatch.setattr(atexit, "unregister", lambda f: (hooks.remove(f), unregister(f))[1])
    kept: list[_Kept] = []
    rec = td.record(tmp_path / "svc.jsonl", per="request", every_s=3600, every_requests=10, watch=["_Kept"],
                    census=False)
    assert _tokdiag_threads() == ["tokdiag-recorder"] and hooks == [rec._at_exit]
    for i in range(120):
        kept.append(_Kept())
        rec.count_request()
        if i % 10 == 9:
            _until(lambda want=(i + 1) // 10 + 1: rec.snapshots >= want)
    rec.stop()
    assert rec.status == "stopped" and not rec.running
    assert _tokdiag_threads() == [] and hooks == []
    run = td.load(tmp_path / "svc.jsonl")
    assert run.status == "stopped" and run.params["step_unit"] == "request"
    assert run.steps == list(range(0, 121, 10))
    assert run.series("recorder", "service", "requests").iloc[-1] == 120
    v = run.verdicts()
    row = v[(v.probe == "watch") & (v.metric == "count")].iloc[0]
    assert row.verdict == "leak" and row.per_step == pytest.approx(1.0)
    # each snapshot's pause (CPU time of the recorder's thread, holding the GIL) is journaled
    assert (run.series("tracker", "tokdiag", "snapshot_cpu_s") > 0).all()


def test_the_recorder_keeps_nothing_it_measured(tmp_path):
    obj = _Kept()
    ref = weakref.ref(obj)
    with td.record(tmp_path / "j.jsonl", per="request", every_s=3600, every_requests=1, watch=["_Kept"]) as rec:
        rec.count_request()
        _until(lambda: rec.snapshots >= 2)
        del obj
        gc.collect()
        assert ref() is None  # measured at two snapshots, and still free to go while the recorder runs


def test_record_stops_by_itself_after_for_s(tmp_path):
    rec = td.record(tmp_path / "j.jsonl", every_s=1, for_s=1, census=False)
    _until(lambda: rec.status is not None)
    assert rec.status == "completed" and "for_s" in rec.message
    _until(lambda: not _tokdiag_threads(), 10)
    run = td.load(tmp_path / "j.jsonl")
    assert run.status == "completed" and run.steps[0] == 0 and run.steps[-1] == 1


def test_the_journal_cap_stops_recording_and_keeps_every_snapshot(tmp_path):
    path = tmp_path / "j.jsonl"
    cap_mb = 0.05
    # census=False: a census line's size follows the test process's heap (a whole suite's types can pass 50 KiB in
    # one line); process-only lines are ~1 KiB, so the cap falls after several snapshots whatever ran before
    rec = td.record(path, per="request", every_s=3600, every_requests=1, max_mb=cap_mb, census=False)
    try:
        for _ in range(10_000):
            if rec.status is not None:
                break
            rec.count_request()
            time.sleep(0.005)
        _until(lambda: rec.status is not None)
    finally:
        rec.stop()
    assert rec.status == "cap" and "max_mb=0.05" in rec.message
    assert path.stat().st_size <= cap_mb * 2**20 * 1.2  # the end line and why-alive records may pass it slightly
    run = td.load(path)
    assert run.status == "cap" and len(run.steps) == rec.snapshots >= 2


def test_the_budget_stops_recording_not_the_service(tmp_path):
    rec = td.record(tmp_path / "j.jsonl", every_s=3600, budget_mb=1, census=False)
    _until(lambda: rec.status is not None)
    assert rec.status == "budget" and "budget_mb=1" in rec.message
    assert td.load(tmp_path / "j.jsonl").status == "budget"


def test_pid_in_the_journal_name(tmp_path):
    with td.record(str(tmp_path / "svc-{pid}.jsonl"), census=False) as rec:
        pass
    assert rec.journal == tmp_path / f"svc-{os.getpid()}.jsonl" and rec.journal.exists()


@pytest.mark.parametrize("kwargs, message", [
    ({"per": "minute"}, "per='minute'"),
    ({"every_s": 0.5}, "every_s=0.5: with per='second'"),
    ({"every_requests": 10}, "every_requests=10 needs per='request'"),
    ({"for_s": -1}, "for_s=-1"),
    ({"max_mb": 0}, "max_mb=0"),
    ({"overhead": 1.5}, "overhead=1.5"),
])
def test_bad_recorder_options_name_the_value(tmp_path, kwargs, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        td.record(tmp_path / "j.jsonl", **kwargs)
    assert _tokdiag_threads() == []


def test_an_existing_journal_is_refused_in_the_caller(tmp_path):
    (tmp_path / "j.jsonl").write_text("")
    with pytest.raises(ConfigError, match="already exists"):
        td.record(tmp_path / "j.jsonl")
    assert _tokdiag_threads() == []


def test_td_record_stays_the_function_after_every_submodule_is_imported():
    import importlib
    import pkgutil

    import tokdiag.recording
    from tokdiag.recording.recorder import record

    for mod in pkgutil.iter_modules(tokdiag.recording.__path__, "tokdiag.recording."):
        importlib.import_module(mod.name)  # importing a submodule must not rebind td.record
    assert td.record is record
    assert "record" in td.__all__ and "load_service" in td.__all__


# -- middleware ---------------------------------------------------------------------------------------

def _idle_recorder(tmp_path: Path, per: str = "request") -> Recorder:
    return Recorder(tmp_path / "j.jsonl", per=per)  # never started: counting works without the thread


def test_asgi_middleware_counts_http_requests_only_and_failed_ones_too(tmp_path):
    rec = _idle_recorder(tmp_path)

    async def app(scope, receive, send):
        if scope["path"] == "/boom":
            raise RuntimeError("boom")

    mw = ASGIMiddleware(app, rec)
    asyncio.run(mw({"type": "http", "path": "/"}, None, None))
    asyncio.run(mw({"type": "lifespan", "path": "/"}, None, None))
    with pytest.raises(RuntimeError):
        asyncio.run(mw({"type": "http", "path": "/boom"}, None, None))
    assert rec.requests == 2


def test_wsgi_middleware_counts_when_the_server_closes_the_response(tmp_path):
    rec = _idle_recorder(tmp_path)
    closed = []

    class Body(list):
        def close(self):
            closed.append(True)

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/boom":
            raise RuntimeError("boom")
        return Body([b"ok"])

    mw = WSGIMiddleware(app, rec)
    body = mw({"PATH_INFO": "/"}, None)
    assert list(body) == [b"ok"] and rec.requests == 0  # not done until the server closes it
    body.close()
    body.close()
    assert rec.requests == 1 and closed == [True]
    with pytest.raises(RuntimeError):
        mw({"PATH_INFO": "/boom"}, None)
    assert rec.requests == 2


def test_middleware_needs_a_recorder_counting_requests(tmp_path):
    with pytest.raises(ConfigError, match="per='request'"):
        ASGIMiddleware(lambda *a: None, _idle_recorder(tmp_path, per="second"))
    with pytest.raises(ConfigError, match="pass the recorder"):
        WSGIMiddleware(lambda *a: None, "service.jsonl")


# -- a service's journals as one ----------------------------------------------------------------------

def _journal(path: Path, pid: int, counts: dict[int, float], status: str = "completed") -> None:
    header = make_header(path.stem, {"step_unit": "second"})
    header["pid"] = pid
    with JournalWriter(path, header) as w:
        for step, n in counts.items():
            w.snapshot(step, float(step), [Record("watch", "app.Job", "count", n, "objects"),
                                           Record("cache", "app:C", "fingerprint", 7.0 * n, "hash")])
        w.write({"kind": "end", "reason": status, "step": max(counts), "elapsed_s": 1.0, "message": "m"})


def test_load_service_gives_each_process_and_their_sum(tmp_path):
    _journal(journal_for(tmp_path / "svc.jsonl", 11, True), 11, {0: 1, 2: 3, 4: 5, 6: 7})
    _journal(journal_for(tmp_path / "svc.jsonl", 12, True), 12, {0: 10, 2: 10, 4: 10, 6: 10, 8: 10}, "detached")
    svc = load_service(tmp_path / "svc.jsonl")
    assert svc.name == "svc" and svc.status == "detached"
    assert [p["pid"] for p in svc.header["processes"]] == [11, 12]
    tl = svc.timeline
    total = tl[(tl.run == "svc (total)") & (tl.metric == "count")].set_index("step").value
    assert total.to_dict() == {0: 11.0, 2: 13.0, 4: 15.0, 6: 17.0}  # step 8: not every process has it
    assert tl[(tl.run == "svc (total)") & (tl.unit == "hash")].empty  # fingerprints are not summed
    assert set(tl.run) == {"svc pid 11", "svc pid 12", "svc (total)"}
    assert load_service(str(tmp_path / "svc.pid*.jsonl")).timeline.shape == tl.shape
    with pytest.raises(JournalError, match="no journal at"):
        load_service(tmp_path / "other.jsonl")


def test_the_total_counts_each_process_with_its_latest_snapshot(tmp_path):
    _journal(tmp_path / "a.pid0000001.jsonl", 1, {0: 1, 2: 2, 4: 3, 6: 4})
    _journal(tmp_path / "a.pid0000002.jsonl", 2, {1: 10, 3: 20, 6: 30, 9: 40})
    tl = load_service(tmp_path / "a.jsonl").timeline
    total = tl[(tl.run == "a (total)") & (tl.metric == "count")].set_index("step").value
    # from step 1 (the later first snapshot) to step 6 (the earlier last one)
    assert total.to_dict() == {1: 11.0, 2: 12.0, 3: 22.0, 4: 23.0, 6: 34.0}


# -- attach's checks -------------------------------------------------------------------------------------

def test_parse_duration_names_a_bad_value():
    assert parse_duration("2h") == 7200.0
    with pytest.raises(ConfigError, match="'ten minutes'"):
        parse_duration("ten minutes", "--for")


def test_attach_needs_python_3_11_to_3_13_on_both_sides(monkeypatch):
    here = tuple(sys.version_info[:3])
    target = SimpleNamespace(pid=42, python=(3, 14, 0), exe="/usr/bin/python3.14")
    with pytest.raises(AttachError, match=r"pid 42 runs Python 3\.14\.0; tokdiag attach supports 3\.11-3\.13"):
        _check_versions(target)
    target.python = None
    with pytest.raises(AttachError, match="older than 3.11"):
        _check_versions(target)
    target.python = here
    _check_versions(target)
    monkeypatch.setattr(sys, "version_info", (3, 14, 0, "final", 0))
    with pytest.raises(AttachError, match=r"tokdiag attach runs on Python 3\.14; it needs 3\.11-3\.13 for now"):
        _check_versions(target)


def test_attach_command_line_errors_are_one_line(capsys, tmp_path):
    from tokdiag.cli import main

    assert main(["attach", "not-a-pid", "-o", str(tmp_path / "x.jsonl")]) == 2
    assert "PID 'not-a-pid'" in capsys.readouterr().err
    assert main(["attach", str(os.getpid()), "--every", "1s", "--for", "5s"]) == 2
    assert "this tokdiag process itself" in capsys.readouterr().err
    assert main(["attach", "1", "--every", "0.5s"]) == 2
    assert "at least 1 s apart" in capsys.readouterr().err


def test_a_thread_id_is_not_a_process(tmp_path):
    from tokdiag.recording._inject import inspect_target

    if sys.platform != "linux":
        pytest.skip("reads /proc")
    ready, done = threading.Event(), threading.Event()
    tid: list[int] = []

    def body() -> None:
        tid.append(threading.get_native_id())
        ready.set()
        done.wait(10)

    t = threading.Thread(target=body)
    t.start()
    ready.wait(10)
    try:
        with pytest.raises(AttachError, match=f"{tid[0]} is a thread of process {os.getpid()}"):
            inspect_target(tid[0])
    finally:
        done.set()
        t.join()


def test_a_forked_child_does_not_wait_for_the_parents_recorder_at_exit(tmp_path):
    with td.record(tmp_path / "j.jsonl", every_s=3600, census=False) as rec:
        child = os.fork()
        if child == 0:  # pragma: no cover - the forked child
            t = time.monotonic()
            rec._at_exit()  # the hook the child inherited; its recorder thread did not survive the fork
            os._exit(0 if time.monotonic() - t < 5 else 1)
        _, status = os.waitpid(child, 0)
    assert os.WEXITSTATUS(status) == 0


def test_tracker_hooks_for_a_recorder_that_counts_its_own_steps(tmp_path):
    run = td.track(lambda i: None, steps=3, every=1, census=False, progress=False)
    assert len(run.series("tracker", "tokdiag", "snapshot_cpu_s")) == 4  # every snapshot journals its pause
    tracker = td.Tracker(census=False, progress=False, journal=tmp_path / "j.jsonl")
    tracker.start()
    tracker.snapshot(0)
    tracker.snapshot(7)
    tracker.event("interval", "a note")
    tracker.finish("stopped", "by the test", load=False)
    assert tracker.run is None  # nothing loaded back into the service's memory
    run = td.load(tmp_path / "j.jsonl")
    assert run.steps == [0, 7] and run.status == "stopped" and run.events[0]["event"] == "interval"
