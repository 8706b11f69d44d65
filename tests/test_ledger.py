"""The ledger adds up to RSS growth, and names the right owner."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import tokdiag as td
from tokdiag.analysis import LEDGER_COLUMNS, UNEXPLAINED, ledger
from tokdiag.errors import ConfigError
from tokdiag.records import COLUMNS

KB = 1024
MB = 1024 * 1024


def _tl(rows: list[tuple], run: str = "r") -> pd.DataFrame:
    return pd.DataFrame([(run, s, 0.0, p, subj, m, v, u) for (s, p, subj, m, v, u) in rows], columns=list(COLUMNS))


def _synthetic(run: str = "r", seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows: list[tuple] = []
    for s in range(0, 101, 10):
        rows.append((s, "process", "process", "rss", 300 * MB + 50 * KB * s + float(rng.integers(0, 64)) * 4096,
                     "bytes"))
        rows.append((s, "cache", "enc", "bytes", 1e6 + 8 * KB * s, "bytes"))
        rows.append((s, "cache", "enc", "native_bytes", 24e6 if s else 0.0, "bytes"))
        rows.append((s, "cache", "enc", "entries", float(s), "entries"))
        rows.append((s, "watch", "app.Agent", "bytes", 20 * KB * s, "bytes"))
        rows.append((s, "census", "builtins.dict", "unowned_bytes", 2e6 + 4 * KB * s, "bytes"))
        rows.append((s, "census", "builtins.dict", "bytes", 9e9, "bytes"))  # never used when unowned exists
        rows.append((s, "census", "builtins.tuple", "unowned_bytes", 1e5 + 10.0 * s, "bytes"))
        rows.append((s, "census", "builtins.set", "unowned_bytes", 5e4 + 20.0 * s, "bytes"))
        rows.append((s, "tracker", "tokdiag", "self_bytes", 3e4 + 100.0 * s, "bytes"))
        rows.append((s, "tracker", "tokdiag", "snapshot_s", 0.01, "seconds"))
    return _tl(rows, run)


def _check_sums(tl: pd.DataFrame, led: pd.DataFrame) -> None:
    for run, sub in led.groupby("run"):
        rss = tl[(tl["run"] == run) & (tl["probe"] == "process") & (tl["metric"] == "rss")].set_index("step")["value"]
        sums = sub.groupby("step")["bytes"].sum()
        growth = rss.loc[sums.index] - rss.sort_index().iloc[0]
        np.testing.assert_allclose(sums.to_numpy(), growth.to_numpy(), rtol=1e-12, atol=1e-6)


def test_owners_sum_to_rss_growth_at_every_step():
    tl = _synthetic()
    led = ledger(tl)
    assert list(led.columns) == list(LEDGER_COLUMNS)
    _check_sums(tl, led)
    # one row per (step, owner)
    assert not led.duplicated(["run", "step", "owner"]).any()
    assert led.groupby("step").size().nunique() == 1
    # growth since the first snapshot: every owner is 0 there
    assert (led[led["step"] == 0]["bytes"] == 0).all()


def test_owners_kinds_and_values():
    led = ledger(_synthetic()).query("step == 100").set_index("owner")
    assert led.loc["enc", "kind"] == "cache" and led.loc["enc", "bytes"] == 800 * KB
    assert led.loc["enc (native estimate)", "kind"] == "native"
    assert led.loc["enc (native estimate)", "bytes"] == 24e6
    assert led.loc["app.Agent", "kind"] == "watch" and led.loc["app.Agent", "bytes"] == 2000 * KB
    # census uses unowned bytes (never the shallow total), and only types that grow by a practical amount
    assert led.loc["builtins.dict", "kind"] == "census" and led.loc["builtins.dict", "bytes"] == 400 * KB
    assert "builtins.tuple" not in led.index and "builtins.set" not in led.index
    assert led.loc["other Python objects", "bytes"] == 1000.0 + 2000.0
    assert led.loc["tokdiag", "kind"] == "tokdiag" and led.loc["tokdiag", "bytes"] == 10_000.0
    assert led.loc[UNEXPLAINED, "kind"] == "unexplained"
    assert list(dict.fromkeys(led["kind"])) == ["cache", "native", "watch", "census", "tokdiag", "unexplained"]


def test_unexplained_is_negative_when_rss_falls():
    rows = []
    for s in range(5):
        rows.append((s, "process", "process", "rss", 100 * MB - MB * s, "bytes"))
        rows.append((s, "watch", "app.A", "bytes", 10.0 * KB * s, "bytes"))
    led = ledger(_tl(rows)).query("step == 4").set_index("owner")["bytes"]
    assert led[UNEXPLAINED] == -4 * MB - 40 * KB


def test_each_run_gets_its_own_ledger():
    tl = pd.concat([_synthetic("a", 1), _synthetic("b", 2)], ignore_index=True)
    led = ledger(tl)
    assert set(led["run"]) == {"a", "b"}
    _check_sums(tl, led)


def test_missing_series_count_as_zero_and_steps_follow_rss():
    rows = [(s, "process", "process", "rss", 1e8 + 1e6 * s, "bytes") for s in (0, 10, 20)]
    rows += [(20, "cache", "late", "bytes", 5e5, "bytes"), (15, "cache", "late", "bytes", 1e9, "bytes")]
    led = ledger(_tl(rows))
    assert sorted(led["step"].unique()) == [0, 10, 20]
    late = led[led["owner"] == "late"].set_index("step")["bytes"]
    assert late.to_dict() == {0: 0.0, 10: 0.0, 20: 5e5}
    _check_sums(_tl(rows), led)


def test_no_rss_is_a_config_error():
    rows = [(s, "watch", "app.A", "bytes", 1.0 * s, "bytes") for s in range(3)]
    with pytest.raises(ConfigError, match="no process rss"):
        ledger(_tl(rows))
    with pytest.raises(ConfigError):
        ledger(pd.DataFrame({"x": [1]}))
    with pytest.raises(ConfigError, match="empty"):
        ledger(_tl([]))


# ----------------------------------------------------------------------------- real runs


class Session:
    def __init__(self, i: int) -> None:
        self.i = i
        self.blob = b"s" * (64 * KB) + bytes([i % 256])  # a new 64 KiB object per session


SESSIONS: list[Session] = []
RESPONSES: dict[int, bytes] = {}


def _owner_growth(run: td.Run) -> pd.Series:
    led = run.ledger(since="start")
    last = led[led["step"] == led["step"].max()]
    return last.set_index("owner")["bytes"]


def _run(step, name: str) -> td.Run:
    return td.track(step, steps=40, every=10, watch=["Session"], name=name, progress=False,
                    caches=[td.cache(f"{__name__}:RESPONSES", name="responses")])


def test_real_leak_through_a_watched_class_is_owned_by_the_class():
    SESSIONS.clear()
    RESPONSES.clear()
    try:
        run = _run(lambda i: SESSIONS.append(Session(i)), "class-leak")
    finally:
        SESSIONS.clear()
    _check_sums(run.timeline, run.ledger(since="start"))  # the whole run: what these owners grew by
    g = _owner_growth(run)
    name = f"{__name__}.Session"
    assert g[name] == pytest.approx(40 * 64 * KB, rel=0.05)
    assert abs(g["responses"]) < 4 * KB
    measured = g.drop(UNEXPLAINED)
    assert measured.idxmax() == name


def test_real_leak_through_a_cache_is_owned_by_the_cache():
    SESSIONS.clear()
    RESPONSES.clear()

    def step(i: int) -> None:
        RESPONSES[i] = b"r" * (64 * KB) + bytes([i % 256])
        Session(i)  # made and dropped: the class must not own anything

    try:
        run = _run(step, "cache-leak")
    finally:
        RESPONSES.clear()
    _check_sums(run.timeline, run.ledger(since="start"))  # the whole run: what these owners grew by
    g = _owner_growth(run)
    assert g["responses"] == pytest.approx(40 * 64 * KB, rel=0.05)
    assert abs(g[f"{__name__}.Session"]) < 4 * KB
    assert g.drop(UNEXPLAINED).idxmax() == "responses"


# ----------------------------------------------------------------------------- allocator, file and native owners


def _with_owners(glibc_missing_at: tuple[int, ...] = ()) -> pd.DataFrame:
    rows: list[tuple] = []
    for s in range(0, 51, 10):
        rows.append((s, "process", "process", "rss", 300 * MB + 100 * KB * s, "bytes"))
        rows.append((s, "watch", "app.Agent", "bytes", 10 * KB * s, "bytes"))
        rows.append((s, "native", "ssl.SSLContext", "native_bytes", 1.5 * MB + 40 * KB * s, "bytes"))
        rows.append((s, "native", "ssl.SSLContext", "count", 2.0 + s, "objects"))
        rows.append((s, "native", "ssl.SSLContext", "certificates", 100.0 * s, "entries"))
        rows.append((s, "cache", "enc", "native_bytes", 24e6, "bytes"))
        if s not in glibc_missing_at:
            rows.append((s, "allocator", "glibc", "free", 2 * MB + 20 * KB * s, "bytes"))
            rows.append((s, "allocator", "glibc", "in_use", 90 * MB + 70 * KB * s, "bytes"))  # never an owner
        rows.append((s, "allocator", "pymalloc", "free", 1 * MB + 10 * KB * s, "bytes"))
        rows.append((s, "allocator", "pymalloc", "arenas", 50 * MB + 10 * KB * s, "bytes"))
        rows.append((s, "allocator", "pages", "anon", 250 * MB + 95 * KB * s, "bytes"))
        rows.append((s, "allocator", "pages", "file", 50 * MB + 5 * KB * s, "bytes"))
        rows.append((s, "allocator", "pages", "shmem", 0.0, "bytes"))
    return _tl(rows)


def test_allocator_file_and_native_type_owners():
    tl = _with_owners()
    led = ledger(tl)
    _check_sums(tl, led)
    last = led.query("step == 50").set_index("owner")
    assert last.loc["ssl.SSLContext (native)", "kind"] == "native"
    assert last.loc["ssl.SSLContext (native)", "bytes"] == 2000 * KB
    assert last.loc["enc (native estimate)", "bytes"] == 0.0
    assert last.loc["glibc free (kept by malloc)", "kind"] == "allocator"
    assert last.loc["glibc free (kept by malloc)", "bytes"] == 1000 * KB
    assert last.loc["pymalloc free (kept by Python)", "bytes"] == 500 * KB
    assert last.loc["file-backed pages (RssFile)", "kind"] == "file"
    assert last.loc["file-backed pages (RssFile)", "bytes"] == 250 * KB
    assert last.loc["shared memory (RssShmem)", "bytes"] == 0.0
    # in-use heap, arenas and anonymous pages contain the other owners' bytes: never owners themselves
    assert not last.index.str.contains("in_use|arenas|anon").any()
    assert last.loc[UNEXPLAINED, "bytes"] == 5000 * KB - (500 + 2000 + 1000 + 500 + 250) * KB
    assert list(dict.fromkeys(led["kind"])) == ["native", "watch", "allocator", "file", "unexplained"]


def test_glibc_free_read_every_kth_snapshot_is_carried_forward():
    tl = _with_owners(glibc_missing_at=(20, 30, 50))
    led = ledger(tl)
    _check_sums(tl, led)
    glibc = led[led["owner"] == "glibc free (kept by malloc)"].set_index("step")["bytes"]
    assert glibc.to_dict() == {0: 0.0, 10: 200 * KB, 20: 200 * KB, 30: 200 * KB, 40: 800 * KB, 50: 800 * KB}


def test_a_journal_without_the_new_probes_gets_the_same_owners_as_before():
    led = ledger(_synthetic())
    assert set(led["kind"]) == {"cache", "native", "watch", "census", "tokdiag", "unexplained"}
    assert set(led[led["kind"] == "native"]["owner"]) == {"enc (native estimate)"}


# ----------------------------------------------------------------------------- the baseline: end of warm-up


def _loaded_once(run: str = "r") -> pd.DataFrame:
    """A 36 MiB vocabulary loaded at step 50, then a watched class leaking 20 KiB per step, RSS in pages."""
    rng = np.random.default_rng(3)
    rows: list[tuple] = []
    for s in range(0, 301, 10):
        loaded = s >= 50
        rows.append((s, "process", "process", "rss",
                     200 * MB + 40 * MB * loaded + 20 * KB * s + float(rng.integers(0, 8)) * 4096, "bytes"))
        rows.append((s, "cache", "vocab", "bytes", 12 * MB * loaded, "bytes"))
        rows.append((s, "cache", "vocab", "native_bytes", 24 * MB * loaded, "bytes"))
        rows.append((s, "watch", "app.Job", "bytes", 20 * KB * s, "bytes"))
    return _tl(rows, run)


def _check_sums_from(tl: pd.DataFrame, led: pd.DataFrame) -> None:
    """For every step from the baseline: the owners add up to rss(step) - rss(baseline), exactly."""
    for run, sub in led.groupby("run"):
        base = led.attrs["baseline"][run]
        rss = tl[(tl["run"] == run) & (tl["probe"] == "process") & (tl["metric"] == "rss")].set_index("step")["value"]
        sums = sub.groupby("step")["bytes"].sum()
        assert sums.index.min() == base
        np.testing.assert_allclose(sums.to_numpy(), (rss.loc[sums.index] - rss.loc[base]).to_numpy(), rtol=1e-12,
                                   atol=1e-6)


def test_the_ledger_starts_at_the_end_of_warm_up_so_a_vocabulary_loaded_once_does_not_bury_the_leak():
    tl = _loaded_once()
    led = ledger(tl)
    assert led.attrs["baseline"] == {"r": 50} and led.attrs["since"] == "warmup"
    assert led["step"].min() == 50  # no rows before the baseline
    assert (led[led["step"] == 50]["bytes"] == 0).all()
    _check_sums_from(tl, led)
    last = led[led["step"] == 300].set_index("owner")["bytes"]
    assert last["app.Job"] == 250 * 20 * KB  # the leak since step 50
    assert last["vocab"] == 0 and last["vocab (native estimate)"] == 0  # loaded before the baseline
    assert last.drop(UNEXPLAINED).idxmax() == "app.Job"
    # from the first snapshot, the vocabulary is the largest owner, as before
    whole = ledger(tl, since="start")
    assert whole.attrs["baseline"] == {"r": 0}
    _check_sums(tl, whole)
    first = whole[whole["step"] == 300].set_index("owner")["bytes"]
    assert first.drop(UNEXPLAINED).idxmax() == "vocab (native estimate)"


def test_since_a_step_is_the_first_snapshot_at_or_after_it_and_bad_values_say_what_to_pass():
    tl = _loaded_once()
    assert ledger(tl, since=100).attrs["baseline"] == {"r": 100}
    led = ledger(tl, since=75)
    assert led.attrs["baseline"] == {"r": 80}
    _check_sums_from(tl, led)
    with pytest.raises(ConfigError, match="no snapshot at or after step 5000"):
        ledger(tl, since=5000)
    for bad in ("warm", -1, 2.5, True):
        with pytest.raises(ConfigError, match="since="):
            ledger(tl, since=bad)


def test_startup_costs_are_what_the_ledger_leaves_out_and_add_up_to_rss_over_warm_up():
    from tokdiag.analysis import startup_costs

    tl = _loaded_once()
    start = startup_costs(tl)
    assert set(start["step"]) == {50}
    rss = tl[(tl["probe"] == "process") & (tl["metric"] == "rss")].set_index("step")["value"]
    assert start["bytes"].sum() == pytest.approx(rss[50] - rss[0], rel=1e-12)
    owners = start.set_index("owner")["bytes"]
    assert owners["vocab (native estimate)"] == 24 * MB and owners["vocab"] == 12 * MB
    assert owners["app.Job"] == 50 * 20 * KB
    # together the two halves are the ledger from the start
    whole = ledger(tl, since="start")
    at_end = whole[whole["step"] == 300].set_index("owner")["bytes"]
    after = ledger(tl)[lambda d: d["step"] == 300].set_index("owner")["bytes"]
    assert at_end["app.Job"] == owners["app.Job"] + after["app.Job"]


def test_a_run_without_warm_up_keeps_its_first_snapshot_as_baseline():
    tl = _synthetic()  # RSS grows along one line from the start
    assert ledger(tl).attrs["baseline"] == {"r": 0}
    from tokdiag.analysis import startup_costs

    start = startup_costs(tl)
    assert set(start["step"]) == {0} and (start["bytes"] == 0).all()


def test_glibc_free_is_carried_across_the_baseline():
    tl = _with_owners(glibc_missing_at=(20, 30, 50))
    led = ledger(tl, since=20)  # glibc was last read at step 10
    _check_sums_from(tl, led)
    glibc = led[led["owner"] == "glibc free (kept by malloc)"].set_index("step")["bytes"]
    assert glibc.to_dict() == {20: 0.0, 30: 0.0, 40: 600 * KB, 50: 600 * KB}
