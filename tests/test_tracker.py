"""The tracker on workloads that really leak and really don't."""

from __future__ import annotations

import functools
import gc
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import weakref
from pathlib import Path

import pandas as pd
import pytest

import tokdiag as td
from tokdiag.records import COLUMNS


class LeakyAgent:
    def __init__(self, i: int) -> None:
        self.i = i
        self.payload = bytes(4096)  # a new object per agent (a literal b"p" * 4096 would be one shared constant)


class Message:
    def __init__(self, agent: LeakyAgent) -> None:
        self.agent = agent
        self.text = "hello " * 50


_RETAINED: list[LeakyAgent] = []


def _values(run: td.Run, probe: str, subject: str, metric: str) -> list[float]:
    return run.series(probe, subject, metric).tolist()


def test_timeline_columns_and_first_last_snapshots():
    run = td.track(lambda i: None, steps=25, every=10, progress=False, census=False)
    assert list(run.timeline.columns) == list(COLUMNS)
    assert run.steps == [0, 10, 20, 25]
    assert run.status == "completed"
    assert set(run.timeline["probe"]) >= {"process", "tracker"}


def test_leaking_workload_shows_growth_under_the_right_owner():
    _RETAINED.clear()
    name = f"{__name__}.LeakyAgent"

    def leak(i: int) -> None:
        _RETAINED.append(LeakyAgent(i))

    try:
        run = td.track(leak, steps=60, every=10, watch=["LeakyAgent"], progress=False)
    finally:
        _RETAINED.clear()
    counts = _values(run, "watch", name, "count")
    assert counts == [0, 10, 20, 30, 40, 50, 60]
    sizes = _values(run, "watch", name, "bytes")
    per_agent = (sizes[-1] - sizes[1]) / 50
    assert 4096 < per_agent < 4096 + 1024  # the payload plus the instance, nothing more
    # the census writes the class once its count has moved by the practical minimum (8 objects)
    assert run.series("census", name, "count").tolist() == [10, 20, 30, 40, 50, 60]


def test_bounded_cache_fills_then_stops():
    @functools.lru_cache(maxsize=20)
    def lookup(i: int) -> bytes:
        return bytes(2048)

    def work(i: int) -> None:
        lookup(i)

    run = td.track(work, steps=100, every=10, caches=[td.cache(lookup, name="lookup")], progress=False)
    entries = _values(run, "cache", "lookup", "entries")
    assert entries[:3] == [0, 10, 20]
    assert entries[2:] == [20] * (len(entries) - 2)  # full at step 20, then nothing more
    size = _values(run, "cache", "lookup", "bytes")
    assert size[-1] == size[3]  # bytes settle too
    assert size[-1] > 20 * 2048


def test_watch_partition_counts_a_shared_agent_once_under_the_first_owner():
    agents = [LeakyAgent(i) for i in range(10)]
    messages = [Message(a) for a in agents]
    a_name, m_name = f"{__name__}.LeakyAgent", f"{__name__}.Message"

    run = td.track(lambda i: None, steps=1, watch=["Message", "LeakyAgent"], census=False, progress=False)
    m_bytes = _values(run, "watch", m_name, "bytes")[-1]
    a_bytes = _values(run, "watch", a_name, "bytes")[-1]
    assert a_bytes == 0  # every agent is reachable from a message, listed first
    assert m_bytes > 10 * 4096

    run2 = td.track(lambda i: None, steps=1, watch=["LeakyAgent", "Message"], census=False, progress=False)
    a2 = _values(run2, "watch", a_name, "bytes")[-1]
    m2 = _values(run2, "watch", m_name, "bytes")[-1]
    assert a2 > 10 * 4096 and m2 < 10 * 4096
    assert abs((a2 + m2) - (a_bytes + m_bytes)) <= 64  # the same bytes, split differently

    # a cache comes before every watched class
    cache = {i: a for i, a in enumerate(agents)}
    run3 = td.track(lambda i: None, steps=1, watch=["LeakyAgent"], caches=[td.cache(cache, name="c")],
                    census=False, progress=False)
    assert _values(run3, "watch", a_name, "bytes")[-1] == 0
    assert _values(run3, "cache", "c", "bytes")[-1] > 10 * 4096
    del messages, agents, cache


def test_tracker_holds_no_reference_to_what_it_measured():
    refs: list[weakref.ref] = []

    def make(i: int) -> None:
        obj = LeakyAgent(i)
        refs.append(weakref.ref(obj))
        _RETAINED.append(obj)

    try:
        run = td.track(make, steps=20, every=5, watch=["LeakyAgent"], progress=False)
    finally:
        _RETAINED.clear()
    assert _values(run, "watch", f"{__name__}.LeakyAgent", "count")[-1] == 20
    gc.collect()
    assert all(r() is None for r in refs)


def test_noop_workload_is_flat_and_tokdiag_retains_little():
    run = td.track(lambda i: None, steps=1000, progress=False)
    tl = run.timeline
    gc_objects = run.series("process", "process", "gc_objects")
    # after the first snapshot warms tokdiag's own caches, the heap does not grow
    assert gc_objects.iloc[-1] - gc_objects.iloc[1] < 200
    counts = tl[(tl.probe == "census") & (tl.metric == "count")].pivot_table(
        index="step", columns="subject", values="value"
    )
    growth = (counts.iloc[-1] - counts.iloc[1]).abs()
    assert growth.max() < 100, growth.sort_values().tail()
    rss = run.series("process", "process", "rss")
    assert rss.iloc[-1] - rss.iloc[1] < 2 * 2**20
    assert run.series("tracker", "tokdiag", "self_bytes").max() < 2**20


def test_loop_form_and_early_break(tmp_path: Path):
    with td.Tracker(journal=tmp_path / "loop.jsonl", census=False, progress=False, every=2) as tr:
        for i in tr.steps(100):
            if i == 7:
                break
    assert tr.run is not None
    assert tr.run.status == "completed"
    assert "7 steps" in tr.run.message


def test_error_in_step_is_journalled_and_raised(tmp_path: Path):
    path = tmp_path / "err.jsonl"

    def boom(i: int) -> None:
        if i == 5:
            raise RuntimeError("model server went away")

    with pytest.raises(RuntimeError, match="went away"):
        td.track(boom, steps=50, every=2, journal=path, census=False, progress=False)
    run = td.load(path)
    assert run.status == "error"
    assert "RuntimeError: model server went away" in run.message
    assert run.steps[-1] == 5  # the state when it broke was snapshotted


def test_budget_guard_stops_a_runaway_workload(tmp_path: Path):
    hog: list[bytearray] = []
    start_mb = td.Tracker()._probes.process.rss() / 2**20
    path = tmp_path / "budget.jsonl"

    def runaway(i: int) -> None:
        hog.append(bytearray(8 * 2**20))  # 8 MiB per step, touched
        hog[-1][::4096] = b"x" * len(hog[-1][::4096])

    run = td.track(runaway, steps=1000, every=5, budget_mb=start_mb + 120, journal=path, census=False,
                   progress=False)
    hog.clear()
    assert run.status == "budget"
    assert run.steps[-1] < 40
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    events = [x for x in lines if x["kind"] == "event"]
    assert events and events[0]["event"] == "budget" and "passed budget_mb" in events[0]["message"]
    assert lines[-1]["kind"] == "end" and lines[-1]["reason"] == "budget"


def test_sigkill_mid_run_keeps_every_finished_snapshot(tmp_path: Path):
    path = tmp_path / "killed.jsonl"
    script = textwrap.dedent(f"""
        import time, tokdiag as td
        keep = []
        def step(i):
            keep.append(bytearray(100_000))
            time.sleep(0.01)
        td.track(step, steps=100_000, every=5, journal={str(path)!r}, census=False, progress=False)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script])
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            if path.exists() and path.read_text().count('"kind": "snapshot"') >= 4:
                break
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    written = [json.loads(x) for x in path.read_text().splitlines() if x.strip()]
    snapshots = [x for x in written if x["kind"] == "snapshot"]
    assert len(snapshots) >= 4
    run = td.load(path)
    assert run.status == "killed"
    assert run.steps == [s["step"] for s in snapshots]
    rss = run.series("process", "process", "rss")
    assert rss.iloc[-1] > rss.iloc[0]


def test_truncated_last_line_is_tolerated(tmp_path: Path):
    path = tmp_path / "cut.jsonl"
    td.track(lambda i: None, steps=10, every=2, journal=path, census=False, progress=False)
    lines = path.read_text().splitlines(keepends=True)
    # drop the end line and cut the last snapshot mid-write
    body = "".join(lines[:-2]) + lines[-2][: len(lines[-2]) // 2]
    path.write_text(body)
    run = td.load(path)
    assert run.status == "killed" and "cut mid-write" in run.message
    assert run.steps == [0, 2, 4, 6, 8]


def test_journal_is_readable_by_plain_pandas(tmp_path: Path):
    path = tmp_path / "plain.jsonl"
    td.track(lambda i: None, steps=4, every=2, journal=path, census=False, progress=False, params={"who": "test"})
    df = pd.read_json(path, lines=True)
    assert df["kind"].tolist() == ["header", "snapshot", "snapshot", "snapshot", "end"]
    header = df.iloc[0]
    assert header["params"]["who"] == "test" and header["tokdiag"] == td.__version__
    run = td.load(path)
    assert run.params["who"] == "test" and run.params["steps"] == 4


def test_existing_journal_is_not_overwritten(tmp_path: Path):
    path = tmp_path / "once.jsonl"
    td.track(lambda i: None, steps=1, journal=path, census=False, progress=False)
    with pytest.raises(td.ConfigError, match="already exists.*overwrite=True"):
        td.track(lambda i: None, steps=1, journal=path, census=False, progress=False)
    td.track(lambda i: None, steps=1, journal=path, census=False, progress=False, overwrite=True)


# -- bad inputs: each names the value and the fix ------------------------------------------

def test_bad_steps_and_step_callable():
    with pytest.raises(td.ConfigError, match=r"steps=0: must be a positive integer"):
        td.track(lambda i: None, steps=0)
    with pytest.raises(td.ConfigError, match=r"steps=-3"):
        td.track(lambda i: None, steps=-3)
    with pytest.raises(td.ConfigError, match=r"step='run' is not callable; pass a function taking the step index"):
        td.track("run", steps=3)  # type: ignore[arg-type]
    with pytest.raises(td.ConfigError, match=r"cannot be called with the step index"):
        td.track(lambda: None, steps=3)  # type: ignore[arg-type]
    with pytest.raises(td.ConfigError, match=r"every=0"):
        td.Tracker(every=0)
    with pytest.raises(td.ConfigError, match=r"budget_mb=-1"):
        td.Tracker(budget_mb=-1)


def test_unknown_cache_path_names_the_value_and_the_fix():
    with pytest.raises(td.TargetError, match=r"'no_such_pkg_xyz:CACHE'.*cannot be imported"):
        td.cache("no_such_pkg_xyz:CACHE")
    with pytest.raises(td.TargetError, match=r"has no attribute 'ENCODNGS'.*did you mean 'ENCODINGS'"):
        td.cache("tiktoken.registry:ENCODNGS")
    with pytest.raises(td.TargetError, match=r"expected 'package.module:attribute'"):
        td.cache("tiktoken.registry.ENCODINGS")


class RewardAgent:
    pass


def test_unknown_watch_name_warns_with_close_matches(tmp_path: Path):
    keep = RewardAgent()
    path = tmp_path / "typo.jsonl"
    with pytest.warns(td.TokdiagWarning, match=r"no class matches 'RewardAgnet'; did you mean RewardAgent\?"):
        run = td.track(lambda i: None, steps=2, watch=["RewardAgnet"], journal=path, census=False, progress=False)
    assert any("RewardAgnet" in w for w in run.warnings)
    assert any("RewardAgnet" in w for w in td.load(path).warnings)  # it is in the journal too
    del keep


def test_watch_name_of_a_class_without_instances_does_not_warn(recwarn):
    td.track(lambda i: None, steps=1, watch=["RewardAgent"], census=False, progress=False)
    assert not [w for w in recwarn if issubclass(w.category, td.TokdiagWarning)]


def test_appending_to_a_journal_refuses_a_file_that_is_not_one(tmp_path):
    from tokdiag.errors import JournalError
    from tokdiag.recording.journal import JournalWriter

    notes = tmp_path / "notes.jsonl"
    notes.write_text('{"kind": "snapshot"}\n')
    with pytest.raises(JournalError, match="not a tokdiag journal"):
        JournalWriter(notes, None)
    run = td.track(lambda i: None, steps=3, journal=tmp_path / "j.jsonl", progress=False)
    with JournalWriter(tmp_path / "j.jsonl", None) as journal:
        journal.event("note", values={"k": 1})
    back = td.load(tmp_path / "j.jsonl")
    assert back.events[-1] == {"kind": "event", "event": "note", "values": {"k": 1}}
    assert len(back.timeline) == len(run.timeline)


_ONE_CACHE: dict[int, list[int]] = {}


def test_caches_takes_one_module_attr_string_and_refuses_a_bare_dict(tmp_path):
    def step(i: int) -> None:
        _ONE_CACHE[i % 5] = list(range(100))

    run = td.track(step, steps=10, caches=f"{__name__}:_ONE_CACHE", progress=False)
    assert run.series("cache", f"{__name__}:_ONE_CACHE", "entries").iloc[-1] == 5
    with pytest.raises(td.ConfigError, match=r"caches=\[it\]"):
        td.track(step, steps=3, caches=_ONE_CACHE, progress=False)


# -- a step that raises keeps its data, and no step is recorded twice ----------------------------------

def _raises_at(k: int):
    def step(i: int) -> None:
        if i == k:
            raise RuntimeError("model server went away")
    return step


def test_a_failing_step_with_the_default_journal_keeps_the_run_and_names_it_on_the_exception():
    with pytest.raises(RuntimeError, match="went away") as info:
        td.track(_raises_at(5), steps=50, every=2, census=False, progress=False)
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "tokdiag: the run 'run' (error after 5 steps, 4 snapshots) is kept in the journal" in notes
    path = notes.split("td.load(")[1].rstrip(")")
    path = path.strip("'\"")
    try:
        run = td.load(path)
        assert run.status == "error" and run.steps == [0, 2, 4, 5]
    finally:
        Path(path).unlink(missing_ok=True)


def test_an_interrupted_run_keeps_its_default_journal_too():
    def step(i: int) -> None:
        if i == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt) as info:
        td.track(step, steps=10, every=1, census=False, progress=False)
    path = info.value.__notes__[0].split("td.load(")[1].rstrip(")").strip("'\"")
    try:
        assert td.load(path).status == "interrupted"
    finally:
        Path(path).unlink(missing_ok=True)


def test_a_completed_run_leaves_no_temporary_journal_behind():
    tracker = td.Tracker(census=False, progress=False)
    with tracker:
        for _ in tracker.steps(3):
            pass
    assert tracker.run is not None and tracker.run.journal is None
    assert not Path(tracker._journal_path).exists()  # type: ignore[arg-type]


@pytest.mark.parametrize("every", [1, 5])
def test_the_failing_step_is_recorded_once(tmp_path: Path, every: int):
    path = tmp_path / "once.jsonl"
    with pytest.raises(RuntimeError):
        td.track(_raises_at(5), steps=50, every=every, journal=path, census=False, progress=False)
    snapshots = [json.loads(x)["step"] for x in path.read_text().splitlines() if '"snapshot"' in x]
    assert len(snapshots) == len(set(snapshots)) and snapshots[-1] == 5
    assert td.load(path).steps == sorted(set(snapshots))


def test_a_snapshot_asked_for_twice_at_one_step_is_taken_once(tmp_path: Path):
    path = tmp_path / "twice.jsonl"
    with td.Tracker(journal=path, census=False, progress=False, every=1) as tr:
        for _ in tr.steps(3):
            tr.snapshot()
            tr.snapshot()
    assert tr.run is not None and tr.run.steps == [0, 1, 2, 3]
    assert [json.loads(x)["step"] for x in path.read_text().splitlines() if '"snapshot"' in x] == [0, 1, 2, 3]
    assert len(tr.run.timeline) == len(tr.run.timeline.drop_duplicates(["step", "probe", "subject", "metric"]))


# -- steps that are not plain functions (async steps: tests/test_async.py) ------------------------------

def test_a_generator_step_is_refused():
    def step(i: int):
        yield i

    with pytest.raises(td.ConfigError, match=r"generator function.*list\(step\(i\)\)"):
        td.track(step, steps=3, progress=False, census=False)


def test_steps_returning_plain_values_still_run():
    assert td.track(lambda i: i * 2, steps=3, progress=False, census=False).status == "completed"


# -- bad numbers are ConfigErrors naming the value -----------------------------------------------------

@pytest.mark.parametrize(("options", "message"), [
    ({"budget_mb": float("inf")}, r"budget_mb=inf: must be a positive, finite number"),
    ({"budget_mb": float("nan")}, r"budget_mb=nan"),
    ({"params": {"x": float("nan")}}, r"params\['x'\]=nan: the journal is strict JSON"),
    ({"params": {"a": [1, {"b": float("-inf")}]}}, r"params\['a'\]\[1\]\['b'\]=-inf"),
    ({"min_snapshots": float("inf")}, r"min_snapshots=inf: must be a whole number"),
    ({"overhead": float("nan")}, r"overhead=nan"),
])
def test_non_finite_numbers_are_config_errors_at_the_call(options, message):
    with pytest.raises(td.ConfigError, match=message):
        td.track(lambda i: None, steps=2, progress=False, census=False, **options)


def test_a_probes_warning_reaches_the_journal_once(tmp_path: Path) -> None:
    calls = {"n": 0}

    def broken_getter() -> dict[str, int]:
        calls["n"] += 1
        raise RuntimeError("the cache is gone")

    path = tmp_path / "warned.jsonl"
    with pytest.warns(td.TokdiagWarning, match="the cache is gone"):
        run = td.track(lambda i: None, steps=6, every=1, caches=[td.cache(broken_getter, "gone")], census=False,
                       journal=path, progress=False)
    assert calls["n"] == 7  # measured (and failed) at every snapshot
    gone = [w for w in td.load(path).warnings if "the cache is gone" in w]
    assert len(gone) == 1 and gone == [w for w in run.warnings if "the cache is gone" in w]


def test_the_allocator_and_native_owners_are_measured_by_default() -> None:
    run = td.track(lambda i: None, steps=4, every=1, progress=False)
    probes = set(run.timeline["probe"].unique())
    assert {"allocator", "native"} <= probes
    assert "native" not in set(td.track(lambda i: None, steps=2, census=False, progress=False).timeline["probe"])


def test_a_probe_passed_that_tokdiag_adds_by_default_replaces_it_and_is_not_measured_twice():
    # passing NativeProbe() (as the AWorld owners test does) used to add a second one: each type's native bytes were
    # journaled twice per snapshot, the second 0 (the first had claimed the objects), and the ledger read the 0
    import ssl

    from tokdiag.probes import AllocatorProbe, NativeProbe

    kept = []
    run = td.track(lambda i: kept.append(ssl.create_default_context()), steps=20, every=5, progress=False,
                   probes=[AllocatorProbe(), NativeProbe()])
    native = run.timeline[(run.timeline.probe == "native") & (run.timeline.metric == "native_bytes")]
    per_step = native.groupby(["step", "subject"]).size()
    assert (per_step == 1).all(), per_step[per_step > 1]
    ssl_bytes = native[native.subject == "ssl.SSLContext"].set_index("step")["value"]
    assert ssl_bytes.iloc[-1] > ssl_bytes.iloc[0] + 15 * 100_000  # 15 more contexts, each with a CA store
    owners = run.ledger(since="start")
    last = owners[owners.step == owners.step.max()].set_index("owner")["bytes"]
    assert last["ssl.SSLContext (native)"] > 15 * 100_000
