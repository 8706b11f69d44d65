"""Verdicts on synthetic series: each label, the edge cases, and calibration on both sides."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from tokdiag.analysis import LABELS, Verdict, classify, verdicts
from tokdiag.analysis.verdicts import VERDICT_COLUMNS
from tokdiag.errors import ConfigError
from tokdiag.records import COLUMNS

KB = 1024
MB = 1024 * 1024


def snapshot_steps(steps: int, every: int) -> np.ndarray:
    """First, every k, last: the tracker's schedule."""
    return np.unique(np.r_[np.arange(0, steps, every), steps - 1])


def rss_like(rng: np.random.Generator, truth: np.ndarray, sigma: float = 20 * KB) -> np.ndarray:
    """A true curve seen the way RSS sees it: allocator noise, then rounded to 4 KiB pages."""
    return np.round((300 * MB + truth + rng.normal(0, sigma, truth.shape)) / 4096) * 4096


def timeline(series: dict[tuple[str, str, str, str], tuple[np.ndarray, np.ndarray]], run: str = "r1") -> pd.DataFrame:
    rows = []
    for (probe, subject, metric, unit), (steps, values) in series.items():
        for s, v in zip(steps, values, strict=True):
            rows.append((run, int(s), float(s) * 0.01, probe, subject, metric, float(v), unit))
    return pd.DataFrame(rows, columns=list(COLUMNS))


# ----------------------------------------------------------------------------- the labels


def test_slow_leak_of_1kb_per_step_over_300_steps_is_a_leak():
    steps = snapshot_steps(300, 10)
    for seed in range(20):
        v = classify(steps, rss_like(np.random.default_rng(seed), 1 * KB * steps))
        assert v.verdict == "leak", (seed, v.reason)
        assert v.per_step_low <= 1 * KB <= v.per_step_high
        assert 0.8 * KB < v.per_step < 1.2 * KB
    # exact, noiseless bytes too (a deep size, not RSS)
    v = classify(steps, 5e6 + 1 * KB * steps)
    assert v.verdict == "leak" and v.per_step == pytest.approx(KB)
    assert v.projected == pytest.approx(5e6 + KB * 10_000)


def test_lru_cache_that_fills_then_stops_is_bounded():
    steps = snapshot_steps(300, 10)
    maxsize = 128
    entries = np.minimum(steps + 1, maxsize).astype(float)
    v = classify(steps, entries, unit="entries")
    assert v.verdict == "bounded", v.reason
    assert v.projected == maxsize
    assert v.per_step_low <= 0 <= v.per_step_high
    assert 100 <= v.warmup_steps <= 140
    # its bytes, as the cache probe sees them (2 KiB per entry, a few bytes of jitter)
    rng = np.random.default_rng(3)
    nbytes = 2 * KB * entries + rng.integers(0, 64, entries.shape)
    assert classify(steps, nbytes).verdict == "bounded"
    # and the process RSS of the same workload, with allocator noise
    for seed in range(10):
        v = classify(steps, rss_like(np.random.default_rng(seed), 8 * KB * entries))
        assert v.verdict == "bounded", (seed, v.reason)


def test_one_off_40mb_jump_then_999_flat_steps_is_a_step_not_a_leak():
    steps = snapshot_steps(1000, 10)
    truth = np.where(steps >= 1, 40 * MB, 0.0)
    for seed in range(10):
        v = classify(steps, rss_like(np.random.default_rng(seed), truth))
        assert v.verdict == "step", (seed, v.reason)
        assert v.growth == pytest.approx(40 * MB, rel=0.01)
        assert abs(v.per_step) < 100  # bytes/step after the jump: nothing
        assert v.projected == pytest.approx(340 * MB, rel=0.01)
        assert "between steps 0 and 10" in v.reason


def test_noise_larger_than_a_small_leak_is_inconclusive_and_says_how_many_more_steps():
    steps = snapshot_steps(300, 10)
    for seed in range(10):
        y = rss_like(np.random.default_rng(seed), 200.0 * steps, sigma=600 * KB)
        v = classify(steps, y)
        assert v.verdict == "inconclusive", (seed, v.reason)
        assert "more steps" in v.reason
        assert v.per_step_low < 0 < v.per_step_high
        assert np.isnan(v.projected)


def test_cache_entries_growing_by_one_per_step_is_a_leak_even_when_bytes_are_tiny():
    steps = snapshot_steps(300, 10)
    entries = steps + 1.0
    nbytes = 48.0 * entries  # one small int per key: 14 KiB over the run
    assert classify(steps, entries, unit="entries").verdict == "leak"
    v = classify(steps, nbytes)
    assert v.verdict != "leak", "14 KiB is below the practical minimum for bytes"


def test_series_that_goes_down_is_not_a_leak():
    steps = snapshot_steps(300, 10)
    v = classify(steps, rss_like(np.random.default_rng(1), -3 * KB * steps))
    assert v.verdict == "bounded" and v.per_step < 0 and "released" in v.reason
    drop = classify(steps, np.where(steps >= 150, 10 * MB, 50 * MB))
    assert drop.verdict == "step" and drop.growth == -40 * MB


def test_warm_up_then_leak_is_a_leak_with_the_warm_up_detected():
    steps = snapshot_steps(300, 10)
    truth = 5 * MB * (1 - np.exp(-steps / 20.0)) + 1 * KB * steps
    v = classify(steps, rss_like(np.random.default_rng(0), truth))
    assert v.verdict == "leak", v.reason
    assert 30 <= v.warmup_steps <= 150
    assert v.per_step_low <= 1 * KB <= v.per_step_high


def test_lazy_load_in_the_middle_of_a_leak_is_still_a_leak():
    steps = snapshot_steps(300, 10)
    truth = np.where(steps >= 100, 40 * MB, 0.0) + 1 * KB * steps
    v = classify(steps, rss_like(np.random.default_rng(0), truth))
    assert v.verdict == "leak" and v.warmup_steps == 100


# ----------------------------------------------------------------------------- edge cases


def test_two_snapshots_are_inconclusive():
    v = classify([0, 10], [100.0, 5e6])
    assert v.verdict == "inconclusive" and v.n_snapshots == 2
    assert "need at least 4" in v.reason
    assert np.isnan(v.per_step_low) and np.isnan(v.projected)


def test_constant_series_is_flat():
    v = classify(range(0, 100, 10), [42.0] * 10, unit="objects")
    assert (v.verdict, v.per_step, v.per_step_low, v.per_step_high, v.growth, v.projected) == (
        "flat", 0.0, 0.0, 0.0, 0.0, 42.0)


def test_nans_are_ignored_and_reported():
    steps = snapshot_steps(300, 10).astype(float)
    y = 1 * KB * steps + 1e6
    y[[3, 7, 20]] = np.nan
    v = classify(steps, y)
    assert v.verdict == "leak" and v.n_snapshots == steps.size - 3
    assert "3 non-finite values ignored" in v.reason
    assert classify([0, 1, 2], [np.nan] * 3).verdict == "inconclusive"
    assert classify([], []).verdict == "inconclusive"


def test_unsorted_and_duplicate_steps_are_handled():
    steps = np.array([30, 0, 10, 20, 10, 40, 50])
    y = steps * 100.0
    v = classify(steps, y, unit="objects")
    assert v.verdict == "leak" and v.n_snapshots == 6


def test_mismatched_lengths_raise_a_config_error():
    with pytest.raises(ConfigError, match="one value per step"):
        classify([0, 1, 2], [1.0, 2.0])


def test_verdict_is_a_frozen_dataclass_with_a_known_label():
    v = classify(range(10), np.arange(10.0), unit="objects")  # one more object at every step, no noise
    assert type(v) is Verdict and v.verdict in LABELS
    assert (v.verdict, v.per_step, v.per_step_low, v.per_step_high) == ("leak", 1.0, 1.0, 1.0)
    assert (v.growth, v.warmup_steps, v.n_snapshots, v.unit, v.noise) == (9.0, 0, 10, "objects", 0.0)
    assert v.projected == pytest.approx(10_000.0)  # y = step, read at the default horizon
    assert v.reason.startswith("grows 1 object/step")
    with pytest.raises(dataclasses.FrozenInstanceError):
        v.verdict = "flat"  # type: ignore[misc]


# ----------------------------------------------------------------------------- calibration


def null_series(rng: np.random.Generator, kind: int, n: int) -> tuple[np.ndarray, str]:
    """Series with no trend at all, in the shapes real measurements take."""
    if kind == 0:  # allocator noise on RSS, page-rounded
        return np.round((3e8 + rng.normal(0, 30 * KB, n)) / 4096) * 4096, "bytes"
    if kind == 1:  # heavy-tailed noise
        return 3e8 + rng.standard_t(2, n) * 20 * KB, "bytes"
    if kind == 2:  # one spike
        y = 3e8 + rng.normal(0, 10 * KB, n)
        y[rng.integers(1, n)] += 5 * MB
        return y, "bytes"
    if kind == 3:  # exact counts jittering by a few objects
        return 5000 + rng.integers(-3, 4, n).astype(float), "objects"
    # a count that moves by one a few times and stays (lazily created singletons)
    y = np.full(n, 5000.0)
    for at in rng.integers(1, n, 3):
        y[at:] += 1
    return y, "objects"


def test_no_false_leaks_on_series_without_a_trend():
    rng = np.random.default_rng(2024)
    labels = []
    for n_snap in (10, 31, 50, 100):
        steps = snapshot_steps(10 * n_snap, 10)
        for trial in range(100):
            y, unit = null_series(rng, trial % 5, steps.size)
            labels.append(classify(steps, y, unit=unit).verdict)
    counts = pd.Series(labels).value_counts()
    assert counts.get("leak", 0) == 0, counts.to_dict()
    assert counts.get("flat", 0) >= 0.8 * len(labels), counts.to_dict()


def test_no_missed_leaks_at_realistic_noise():
    rng = np.random.default_rng(7)
    misses = []
    for n_snap in (31, 50, 100):
        steps = snapshot_steps(10 * n_snap, 10)
        for trial in range(50):
            y = rss_like(rng, 1 * KB * steps, sigma=(10 * KB, 20 * KB, 40 * KB)[trial % 3])
            v = classify(steps, y)
            if v.verdict != "leak":
                misses.append(v.reason)
            counts = steps + 1.0  # one object per step, exact
            assert classify(steps, counts, unit="objects").verdict == "leak"
    assert misses == []


# ----------------------------------------------------------------------------- verdicts()


def test_verdicts_gives_one_row_per_numeric_series_with_the_documented_columns():
    steps = snapshot_steps(300, 10)
    tl = timeline({
        ("process", "process", "rss", "bytes"): (steps, 3e8 + KB * steps),
        ("cache", "app:CACHE", "entries", "entries"): (steps, np.minimum(steps, 50)),
        ("cache", "app:CACHE", "fingerprint", "hash"): (steps, np.arange(steps.size) * 7919.0),
        ("cache", "app:CACHE", "hits", "calls"): (steps, steps * 3.0),
        ("tracker", "tokdiag", "snapshot_s", "seconds"): (steps, np.full(steps.shape, 0.01)),
        ("tracker", "tokdiag", "self_bytes", "bytes"): (steps, np.full(steps.shape, 1e5)),
        ("watch", "app.RewardAgent", "count", "objects"): (steps, steps / 10.0),
    })
    v = verdicts(tl)
    assert list(v.columns) == list(VERDICT_COLUMNS)
    got = {(r.probe, r.metric): r.verdict for r in v.itertuples()}
    assert got == {
        ("process", "rss"): "leak",
        ("cache", "entries"): "bounded",
        ("tracker", "self_bytes"): "flat",
        ("watch", "count"): "leak",
    }
    assert v["n_snapshots"].eq(steps.size).all()
    assert v.loc[v.metric == "rss", "projected"].item() == pytest.approx(3e8 + KB * 10_000)
    assert verdicts(tl, project_to=1000).loc[lambda d: d.metric == "rss", "projected"].item() == pytest.approx(
        3e8 + KB * 1000)
    with_counters = verdicts(tl, counters=True)
    assert "hits" in set(with_counters.metric)


def test_verdicts_keeps_runs_apart_and_filters_probes():
    steps = snapshot_steps(100, 5)
    a = timeline({("process", "process", "rss", "bytes"): (steps, 3e8 + 2 * KB * steps)}, run="a")
    b = timeline({("process", "process", "rss", "bytes"): (steps, np.full(steps.shape, 3e8)),
                  ("watch", "app.X", "count", "objects"): (steps, np.full(steps.shape, 3.0))}, run="b")
    v = verdicts(pd.concat([a, b], ignore_index=True))
    assert sorted(zip(v.run, v.probe, v.verdict, strict=True)) == [
        ("a", "process", "leak"), ("b", "process", "flat"), ("b", "watch", "flat")]
    only = verdicts(pd.concat([a, b]), probes=["watch"])
    assert list(only.probe) == ["watch"]


def test_verdicts_rejects_bad_input_with_the_fix_in_the_message():
    tl = timeline({("process", "process", "rss", "bytes"): (np.arange(5), np.arange(5.0))})
    with pytest.raises(ConfigError, match="probes present"):
        verdicts(tl, probes=["censsu"])
    with pytest.raises(ConfigError, match="project_to=0"):
        verdicts(tl, project_to=0)
    with pytest.raises(ConfigError, match="lacks column"):
        verdicts(tl.drop(columns=["unit"]))
    with pytest.raises(ConfigError, match="timeline DataFrame"):
        verdicts([1, 2, 3])  # type: ignore[arg-type]


def test_verdicts_on_an_empty_timeline_is_an_empty_frame():
    v = verdicts(pd.DataFrame(columns=list(COLUMNS)))
    assert v.empty and list(v.columns) == list(VERDICT_COLUMNS)


def test_verdicts_accepts_an_object_with_a_timeline_attribute():
    class FakeRun:
        timeline = timeline({("process", "process", "rss", "bytes"): (np.arange(0, 50, 5), np.full(10, 1e8))})

    assert verdicts(FakeRun()).verdict.tolist() == ["flat"]  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- real tracked workloads


class SlowLeak:
    def __init__(self, i: int) -> None:
        self.payload = bytes(1000) + bytes([i % 256])  # ~1 KB of new memory per step


_SLOW: list[SlowLeak] = []
_VOCAB: dict[str, bytes] = {}


def _judged(run, probe: str, metric: str, subject: str | None = None) -> pd.Series:
    v = verdicts(run.timeline)
    sel = v[(v.probe == probe) & (v.metric == metric)]
    if subject is not None:
        sel = sel[sel.subject == subject]
    assert len(sel) == 1, sel
    return sel.iloc[0]


def test_real_slow_leak_of_1kb_per_step_over_300_steps_is_a_leak():
    import tokdiag as td

    _SLOW.clear()
    try:
        run = td.track(lambda i: _SLOW.append(SlowLeak(i)), steps=300, every=10, watch=["SlowLeak"],
                       census=False, why_alive=False, progress=False)
    finally:
        _SLOW.clear()
    name = f"{__name__}.SlowLeak"
    nbytes = _judged(run, "watch", "bytes", name)
    assert nbytes.verdict == "leak", nbytes.reason
    assert 1000 <= nbytes.per_step <= 1500  # the 1 KB payload plus the instance holding it
    count = _judged(run, "watch", "count", name)
    assert count.verdict == "leak" and count.per_step == pytest.approx(1.0)


def test_real_lru_cache_that_fills_then_stops_is_bounded_in_entries():
    import functools

    import tokdiag as td

    @functools.lru_cache(maxsize=64)
    def render(i: int) -> str:
        return f"prompt {i} " * 20

    run = td.track(lambda i: render(i), steps=300, every=10, caches=[td.cache(render, name="render")],
                   census=False, progress=False)
    entries = _judged(run, "cache", "entries", "render")
    assert entries.verdict == "bounded", entries.reason
    assert entries.projected == 64
    assert _judged(run, "cache", "bytes", "render").verdict != "leak"


def test_real_one_off_vocabulary_load_then_cached_calls_is_a_step_not_a_leak():
    import tokdiag as td

    def encoding_for_model(name: str) -> bytes:
        # like tiktoken: the first call loads ~40 MB, every later call is served from the cache
        if name not in _VOCAB:
            _VOCAB[name] = b"\x01" * (40 * MB)
        return _VOCAB[name]

    try:
        run = td.track(lambda i: encoding_for_model("gpt-4o"), steps=200, every=10, census=False,
                       caches=[td.cache(lambda: _VOCAB, name="vocab")], progress=False)
    finally:
        _VOCAB.clear()
    vocab = _judged(run, "cache", "bytes", "vocab")
    assert vocab.verdict == "step", vocab.reason
    assert vocab.growth == pytest.approx(40 * MB, rel=0.01)
    rss = _judged(run, "process", "rss")
    assert rss.verdict == "step", rss.reason
    assert rss.growth == pytest.approx(40 * MB, rel=0.2)


_REGEX_RUN = """
import json, re, sys
import tokdiag as td

KEEP = sys.argv[1] == "keep"
kept = []  # with "keep", every pattern ever compiled stays alive: what re evicts is not freed

def step(i):
    # ~8 KiB each (tracemalloc)
    pattern = re.compile(f"pattern_{i}_[a-z]+(?:x|y){{2,5}}" + "(?:abcdefgh|ijklmnop)" * 40)
    if KEEP:
        kept.append(pattern)

# re keeps the last 512 compiled patterns: fill it so that it is full after 200 of the 300 steps, as
# in a process whose libraries compiled a few hundred patterns before
re.purge()
for k in range(re._MAXCACHE - 200):
    step(-1 - k)
run = td.track(step, steps=300, every=15, progress=False)
v = run.verdicts()
row = v[(v.probe == "process") & (v.metric == "rss")].iloc[0]
print(json.dumps({"verdict": row.verdict, "reason": row.reason, "cached": len(re._cache)}))
"""


def _regex_rss_verdict(mode: str) -> dict:
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    out = subprocess.run([sys.executable, "-c", _REGEX_RUN, mode], capture_output=True, text=True, env=env,
                         timeout=300, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_real_regex_cache_that_fills_and_stops_is_not_a_leak_and_keeping_every_pattern_is():
    # each run in a fresh process: a process reuses memory an earlier workload freed
    for _ in range(3):
        stops = _regex_rss_verdict("cache")
        assert stops["cached"] == 512 and stops["verdict"] != "leak", stops["reason"]
    keeps = _regex_rss_verdict("keep")
    assert keeps["verdict"] == "leak", keeps["reason"]
