"""Edge cases of verdicts: short runs, exact counts, RSS that settles unevenly."""

from __future__ import annotations

import numpy as np

from tokdiag.analysis import classify

MB = 1024 * 1024


def test_six_snapshots_of_a_40mb_per_step_leak_with_kilobytes_of_noise_is_a_leak():
    # what per_instance_load(keep=True) looks like over 6 steps: Sen's rank interval needs 7 points
    rng = np.random.default_rng(1)
    steps = np.arange(6)
    v = classify(steps, 300 * MB + 42 * MB * steps + rng.normal(0, 15_000, 6))
    assert v.verdict == "leak"
    assert 41 * MB < v.per_step_low <= v.per_step <= v.per_step_high < 43 * MB


def test_five_snapshots_too_noisy_for_their_slope_stay_inconclusive():
    rng = np.random.default_rng(2)
    steps = np.arange(5)
    y = 300 * MB + 100_000 * steps + rng.normal(0, 2 * MB, 5)
    v = classify(steps, y)
    assert v.verdict == "inconclusive"
    assert np.isfinite(v.per_step_low) and v.per_step_low < 0 < v.per_step_high


def test_short_flat_series_with_noise_is_flat_not_inconclusive():
    rng = np.random.default_rng(3)
    steps = np.arange(6)
    v = classify(steps, 300 * MB + rng.normal(0, 4096, 6))
    assert v.verdict == "flat"


def test_an_exact_count_line_has_no_invented_warm_up():
    # the tracker's "auto" schedule: 0, 1, then every 15 steps; a leak of one object per task
    steps = np.r_[0, 1, np.arange(16, 300, 15), 300].astype(float)
    v = classify(steps, steps.copy(), unit="objects")
    assert v.verdict == "leak"
    assert v.warmup_steps == 0


def test_rss_that_jumps_creeps_then_stays_flat_is_bounded_not_inconclusive():
    # measured: the fixed agent app over 300 tasks (page-granular RSS, KiB since the first snapshot)
    steps = np.r_[0, 1, np.arange(16, 300, 15), 300].astype(float)
    kib = [0, 45864, 53828, 53968, 54992, 55744, 54720, 54992] + [55748] * 14
    v = classify(steps, 71 * MB + np.array(kib, float) * 1024)
    assert v.verdict == "bounded"
    assert v.per_step == 0


def test_a_slow_leak_under_page_noise_is_never_called_bounded():
    rng = np.random.default_rng(5)
    steps = np.r_[0, 1, np.arange(16, 300, 15), 300].astype(float)
    for _ in range(50):
        y = np.round((100 * MB + 2048 * steps + rng.normal(0, 30_000, steps.size)) / 4096) * 4096
        assert classify(steps, y).verdict in ("leak", "inconclusive")


def test_a_count_that_rises_at_every_snapshot_is_a_leak_below_the_practical_minimum():
    # six AWorld tasks, a new agent each, every agent kept: 0..6
    steps = np.arange(7.0)
    assert classify(steps, steps.copy(), unit="objects").verdict == "leak"
    # a reused agent: created once, then the same one: not a leak
    assert classify(steps, np.minimum(steps, 1.0), unit="objects").verdict != "leak"
    # a lazy helper created twice, irregularly, stays under the minimum: not a leak
    assert classify(steps, np.array([0, 1, 1, 1, 2, 2, 2.0]), unit="objects").verdict != "leak"
