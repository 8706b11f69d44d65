"""A verdict per series: leak, bounded, step, flat or inconclusive.

Every numeric series of a timeline (one ``(run, probe, subject, metric)``)
gets a label, a growth per step with an uncertainty interval, and a
projection. :func:`classify` judges one series; :func:`tokdiag.analysis.verdicts` runs it
over a whole timeline.

How a series is judged
----------------------
1. **Clean.** Non-finite values are dropped, snapshots sorted by step
   (duplicate steps averaged).
2. **Noise.** ``noise`` is a robust standard deviation of the snapshot
   values around their local trend: the median absolute deviation of the
   second differences, scaled by ``1.4826 / sqrt(6)`` (a second difference
   of white noise has variance ``6 sigma**2``; a linear trend cancels out,
   and a one-off jump only spoils two of them, which the median ignores).
3. **Warm-up.** A two-phase regression picks where the final regime starts:
   for every split the head and the tail each get their own least-squares
   line (not joined, so a jump fits exactly), and the split with the least
   total squared error wins when it beats one straight line by more than
   ``50 + 2000 / n**2`` noise variances (:func:`_split_price`: calibrated by
   simulation so that noise alone invents a warm-up in about 0.1% of
   series), the variance being the larger of ``noise**2`` and the split
   model's own residual variance. The warm-up is detected, never a fixed
   count.
4. **Tail slope.** On the tail: the Theil-Sen slope (median of pairwise
   slopes: one outlier moves it not at all) with Sen's rank-based 99%
   interval (Kendall's S, normal approximation, no ties correction, which
   only widens it). 99% rather than 95% because a census has thousands of
   series and a false leak costs as much as a miss.
5. **Decision.** Growth is *practically* significant only when, over the
   tail, it would amount to at least :data:`~tokdiag.analysis.thresholds.PRACTICAL_MIN` for the unit
   (``band = PRACTICAL_MIN[unit] / tail_span`` per step):

   - growing: interval above 0 and ``per_step * tail_span >= PRACTICAL_MIN``;
     then step 6 decides between ``leak``, ``bounded`` and ``inconclusive``;
   - settled: the whole interval inside ``(-band, band)``: then the change
     from the first snapshot to the plateau decides ``flat`` (below the
     practical minimum and below ``3 * noise``), ``step`` (at least 80% of
     it happened between two consecutive snapshots) or ``bounded``
     (spread over several);
   - shrinking through the end: ``bounded`` (memory is being released);
   - otherwise ``inconclusive``: the interval straddles both zero and
     the practical band; ``reason`` estimates how many more steps would
     decide, assuming the interval narrows like ``span ** -1.5`` (Theil-Sen
     on evenly spaced snapshots at the same interval).

6. **A leak is shown, never the default.** Growth over the tail is not yet
   a leak: the end of the run must still grow. A curve that rose and then
   stopped inside the tail (RSS while ``re``'s 512-pattern cache fills, then
   exactly flat for the last third of the run) grows over the tail, yet its
   last half can be shown neither flat (the rise and the plateau together
   make its residuals autocorrelated, which widens the interval) nor slower.
   Falling through to ``leak`` there called 201 of 300 such series a leak
   (flat for the last 6 of 21 snapshots, risen in 32 KiB allocator pools);
   growth is shown at the end only when both hold:

   - the run does not end on a *pause*: its last
     :data:`~tokdiag.analysis.thresholds.MIN_SNAPSHOTS` or
     more snapshots exactly equal, over a longer span than any pause the
     tail took while it grew. RSS moves a page or an allocator pool at a
     time, so a slow leak pauses between rises; a pause at the end no longer
     than those is no evidence of a stop, a longer one is;
   - with at least ``2 * MIN_SNAPSHOTS`` snapshots in the tail, its last half
     judged alone grows: the lower bound of its 90% interval (autocorrelation
     inflated) is above 0, and its slope would add the practical minimum over
     the tail's span. 90%, not 99%: the tail is already shown to grow at 99%,
     this asks whether that growth reaches the end, and half the tail has
     half the snapshots over half the span. A 1 KiB/step leak under 20 KiB of
     RSS noise with 20 snapshots after a lazy load is shown at 99% in 58 of
     100 seeds, at 90% in 94. A shorter tail is its own end.

   Otherwise the series is ``bounded`` when the stop is proven: a pause at
   the end longer than twice any earlier one and long enough for the tail's
   rate to have added the practical minimum (it grew, then nothing moved), or
   a practically flat last half (TOST, as in step 5); ``inconclusive`` when
   the last half is surely slower (below half the tail slope) but not flat,
   when the run ends on a pause too short to prove a stop, or when the last
   half cannot show growth (noise); the reason says which and how many more
   steps would tell.

Fewer than :data:`~tokdiag.analysis.thresholds.MIN_SNAPSHOTS` snapshots are
always ``inconclusive``: two points cannot tell a leak from a step. The
thresholds, and why they are what they are, are in
:mod:`tokdiag.analysis.thresholds`.

>>> import numpy as np
>>> steps = np.arange(0, 301, 10)
>>> classify(steps, 1_000_000 + 1024.0 * steps).verdict
'leak'
>>> classify(steps, np.minimum(steps, 120) * 1.0, unit="entries").verdict
'bounded'
>>> classify(steps, np.where(steps >= 1, 40e6, 0.0)).verdict
'step'
>>> classify(steps, np.full(steps.shape, 7.0), unit="objects").verdict
'flat'
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from tokdiag.analysis.format import COUNT_UNITS, format_rate, format_value
from tokdiag.analysis.stats import (
    TINY,
    autocorrelation_inflation,
    constant_end,
    last_half,
    more_steps,
    robust_noise,
    split_point,
    theil_sen,
)
from tokdiag.analysis.thresholds import MIN_SNAPSHOTS, PRACTICAL_MIN, RESOLUTION, SLOWDOWN, STEP_SHARE
from tokdiag.errors import ConfigError

__all__ = ["LABELS", "SEVERITY", "SEVERITY_RANK", "Verdict", "classify", "classify_arrays"]

LABELS: tuple[str, ...] = ("leak", "bounded", "step", "flat", "inconclusive")
"""Every label :func:`classify` can return."""

SEVERITY: tuple[str, ...] = ("leak", "inconclusive", "step", "bounded", "flat")
"""The labels, most alarming first: the order of every table and list of verdicts (an undecided series
comes before a settled one, because it may still be a leak)."""

SEVERITY_RANK: dict[str, int] = {label: i for i, label in enumerate(SEVERITY)}
"""A label's place in :data:`SEVERITY` (sort by ``SEVERITY_RANK.get(v, len(SEVERITY))``)."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """The judgement of one series, in the series' own unit.

    ``per_step`` is the Theil-Sen slope after warm-up with its 99% interval
    ``[per_step_low, per_step_high]``; ``growth`` is the change from the
    first snapshot to the end level (the tail fit at the last step, or the
    plateau); ``warmup_steps`` is how many steps passed before the final
    regime began; ``projected`` is the value expected at ``project_to``
    steps (tail fit for a leak, plateau otherwise, NaN when inconclusive);
    ``noise`` is the robust snapshot-to-snapshot noise.
    """

    verdict: str
    per_step: float
    per_step_low: float
    per_step_high: float
    growth: float
    warmup_steps: int
    projected: float
    n_snapshots: int
    reason: str
    unit: str = "bytes"
    noise: float = float("nan")



def _advice(extra: float | None, dx: float) -> str:
    if extra is None:
        return ("more steps alone will not decide: reduce the noise (gc before snapshots, fewer concurrent jobs) "
                "or snapshot more often")
    extra = max(extra, dx)
    snaps = int(math.ceil(extra / dx)) if dx > 0 else 0
    return f"about {int(math.ceil(extra))} more steps (~{snaps} more snapshots at this interval) would decide"




def classify(steps: Iterable[float] | np.ndarray, values: Iterable[float] | np.ndarray, *,
             unit: str = "bytes", project_to: int = 10_000) -> Verdict:
    """Judge one series: ``leak``, ``bounded``, ``step``, ``flat`` or ``inconclusive``.

    ``steps`` are snapshot steps (any spacing), ``values`` the series in
    ``unit``. See the module docstring for the method and
    :mod:`tokdiag.analysis.thresholds` for the thresholds.

    >>> classify([0, 10], [0.0, 5e6]).verdict
    'inconclusive'
    >>> v = classify(range(0, 301, 10), [float(i) for i in range(31)], unit="entries")
    >>> v.verdict, round(v.per_step, 2), v.projected
    ('leak', 0.1, 1000.0)
    """
    x = np.asarray(steps, dtype=float).ravel()
    y = np.asarray(values, dtype=float).ravel()
    if x.shape != y.shape:
        raise ConfigError(f"steps has {x.size} items but values has {y.size}; pass one value per step")
    return classify_arrays(x, y, unit, project_to)


def classify_arrays(x: np.ndarray, y: np.ndarray, unit: str, project_to: int) -> Verdict:
    """:func:`classify` on float arrays already checked to be of one length.

    What :func:`tokdiag.analysis.verdicts` calls per series.
    """
    ok = np.isfinite(x) & np.isfinite(y)
    n_raw = int(x.size)
    if not ok.all():
        x, y = x[ok], y[ok]
    if x.size > 1 and not (np.diff(x) > 0).all():
        order = np.argsort(x, kind="stable")
        x, y = x[order], y[order]
        if not (np.diff(x) > 0).all():
            ux, inv = np.unique(x, return_inverse=True)
            y = np.bincount(inv, weights=y) / np.bincount(inv)
            x = ux
    n = int(x.size)
    nan = float("nan")
    dropped = n_raw - int(ok.sum())
    note = f" ({dropped} non-finite values ignored)" if dropped else ""
    minimum = PRACTICAL_MIN.get(unit, 0.0)

    if n == 0:
        return Verdict("inconclusive", nan, nan, nan, nan, 0, nan, 0,
                       f"no finite values{note}; nothing to judge", unit)
    dx = float(np.median(np.diff(x))) if n > 1 else 0.0
    if n < MIN_SNAPSHOTS:
        rate = float((y[-1] - y[0]) / (x[-1] - x[0])) if n > 1 and x[-1] > x[0] else nan
        more = MIN_SNAPSHOTS - n
        hint = f" (~{int(more * dx)} more steps at this interval)" if dx > 0 else ""
        return Verdict("inconclusive", rate, nan, nan, float(y[-1] - y[0]), 0, nan, n,
                       f"only {n} snapshot{'s' if n != 1 else ''}{note}: need at least {MIN_SNAPSHOTS} "
                       f"to tell a leak from a step; take {more} more{hint}", unit)
    if float(np.max(y)) == float(np.min(y)):
        return Verdict("flat", 0.0, 0.0, 0.0, 0.0, 0, float(y[0]), n,
                       f"constant at {format_value(float(y[0]), unit)} over {n} snapshots{note}", unit, 0.0)

    noise = robust_noise(y)
    b = 0
    while True:  # the final regime: split again while the tail still has a warm-up of its own
        k = split_point(x[b:], y[b:], max(noise, RESOLUTION * minimum), MIN_SNAPSHOTS)
        if k == 0:
            break
        b += k
    xt, yt = x[b:], y[b:]
    m = int(xt.size)
    span = float(xt[-1] - xt[0])
    slope, lo, hi, lo90, hi90, intercept = theil_sen(xt, yt)
    inflate = autocorrelation_inflation(yt - intercept - slope * xt)
    if inflate > 1.0:
        lo, hi = slope - inflate * (slope - lo), slope + inflate * (hi - slope)
        lo90, hi90 = slope - inflate * (slope - lo90), slope + inflate * (hi90 - slope)
    if unit in COUNT_UNITS and m > MIN_SNAPSHOTS and bool((np.diff(yt) > 0).all()):
        # Exact counts that rose at every snapshot of the tail: a singleton or a lazy helper rises
        # once, not at every interval, so the practical minimum is not needed to rule it out.
        minimum = min(minimum, float(yt[-1] - yt[0]))
    band = minimum / span if span > 0 else math.inf
    start = float(y[0])
    warmup = int(round(float(xt[0] - x[0])))
    end_fit = intercept + slope * float(x[-1])
    plateau = float(np.median(yt))
    noise_txt = f"noise {format_value(noise, unit)} per snapshot"
    where = f"after a {warmup}-step warm-up" if b else "over the whole run"
    ci = f"99% CI {format_value(lo, unit)} to {format_value(hi, unit)}"

    def verdict(label: str, growth: float, projected: float, reason: str) -> Verdict:
        return Verdict(label, slope, lo, hi, growth, warmup, projected, n, reason + note, unit, noise)

    if lo > 0 and slope * span >= minimum:  # grows, surely and by a practical amount
        # A leak must also be shown to grow at the end (rule 6 of the module docstring).
        j, span_j, pause = constant_end(xt, yt)
        paused = j >= MIN_SNAPSHOTS and span_j > pause
        if paused and slope * span_j >= minimum and span_j > 2.0 * pause:
            level = float(yt[-1])
            return Verdict(
                "bounded", 0.0, 0.0, 0.0, level - start, int(round(float(xt[-j] - x[0]))), level, n,
                f"grew {format_rate(slope, unit)} {where}, then constant at {format_value(level, unit)} over the "
                f"last {j} snapshots ({int(span_j)} steps, in which that rate would have added "
                f"{format_value(slope * span_j, unit)}): it stopped" + note, unit, noise)
        half = last_half(xt, yt, minimum) if m >= 2 * MIN_SNAPSHOTS else None
        end_grows = half is None or (half.lo90 > 0 and half.slope * span >= minimum)  # a short tail is its own end
        if end_grows and not paused:
            return verdict(
                "leak", end_fit - start, intercept + slope * project_to,
                f"grows {format_rate(slope, unit)} ({ci}) {where}: {format_value(slope * span, unit)} over the last "
                f"{int(span)} steps, still growing at the end; {noise_txt}")
        if half is not None and half.flat:
            level = float(np.median(half.y))
            return Verdict(
                "bounded", half.slope, half.lo, half.hi, level - start, int(round(float(half.x[0] - x[0]))), level, n,
                f"grew {format_rate(slope, unit)} {where}, then flat at {format_value(level, unit)} over "
                f"the last {half.h} snapshots ({int(half.span)} steps)" + note, unit, noise)
        if half is not None and half.hi < SLOWDOWN * slope:
            return verdict(
                "inconclusive", end_fit - start, math.nan,
                f"grows {format_rate(slope, unit)} {where} but only {format_rate(half.slope, unit)} (99% CI up to "
                f"{format_value(half.hi, unit)}) over the last {half.h} snapshots: may be settling; about {int(span)} "
                "more steps would tell")
        if paused or half is None:
            return verdict(
                "inconclusive",
                end_fit - start,
                math.nan,
                f"grows {format_rate(slope, unit)} ({ci}) {where}, but the last {j} snapshots "
                f"({int(span_j)} steps) are all equal, a longer pause than any while it grew "
                f"({int(pause)} steps at most): it may have stopped; "
                f"about {int(max(span_j, dx))} more steps would tell",
            )
        # The half's window grows by half of every extra step of the run.
        extra = more_steps(half.slope, half.lo90, half.hi, half.span, minimum * half.span / span)
        return verdict(
            "inconclusive",
            end_fit - start,
            math.nan,
            f"grows {format_rate(slope, unit)} ({ci}) {where}, but the last {half.h} snapshots "
            f"({int(half.span)} steps) do not show whether it still grows: {format_rate(half.slope, unit)} there "
            f"(90% CI from {format_value(half.lo90, unit)}); {_advice(None if extra is None else 2.0 * extra, dx)}",
        )
    if hi < 0 and -slope * span >= minimum:
        return verdict(
            "bounded", end_fit - start, end_fit,
            f"shrinks {format_rate(slope, unit)} ({ci}) {where}: memory is being released, not accumulated")
    if -band < lo90 and hi90 < band:  # practically flat tail (TOST)
        change = plateau - start
        if b == 0 or abs(change) < max(minimum, 3.0 * noise, TINY):
            return verdict(
                "flat", change, plateau,
                f"no practical change: {format_value(change, unit)} overall, slope within "
                f"+/-{format_rate(band, unit)} (what adds up to {format_value(minimum, unit)} over {int(span)} steps); "
                f"{noise_txt}")
        jumps = np.diff(y[: b + 1]) * np.sign(change)
        at = int(np.argmax(jumps))
        biggest = float(jumps[at])
        if biggest / abs(change) >= STEP_SHARE:
            return verdict(
                "step", change, plateau,
                f"one-off {'jump' if change > 0 else 'drop'} of {format_value(biggest, unit)} between steps "
                f"{int(x[at])} and {int(x[at + 1])}, then flat at {format_value(plateau, unit)} for {int(span)} steps")
        return verdict(
            "bounded", change, plateau,
            f"{'grew' if change > 0 else 'shrank'} {format_value(change, unit)} over the first {warmup} steps, "
            f"then flat at {format_value(plateau, unit)} for {int(span)} steps")
    if m >= 2 * MIN_SNAPSHOTS:  # undecided overall, but has it settled by the end?
        half = last_half(xt, yt, minimum)
        if half.flat:
            level = float(np.median(half.y))
            change = level - start
            label = "bounded" if abs(change) >= max(minimum, 3.0 * noise, TINY) else "flat"
            return Verdict(
                label,
                half.slope,
                half.lo,
                half.hi,
                change,
                int(round(float(half.x[0] - x[0]))),
                level,
                n,
                f"changed {format_value(change, unit)} in all, the last part unevenly, "
                f"then flat at {format_value(level, unit)} over the last {half.h} snapshots "
                f"({int(half.span)} steps)" + note,
                unit,
                noise,
            )
    # Undecided: the interval straddles zero, or the band, or both.
    extra = more_steps(slope, lo, hi, span, minimum)
    since = f" ({m} snapshots since step {int(xt[0])})" if b else ""
    if lo > 0:
        why = (
            f"grows {format_rate(slope, unit)} but only {format_value(slope * span, unit)} over the last {int(span)} "
            f"steps{since}, below the practical minimum of {format_value(minimum, unit)}"
        )
    else:
        hides = (f"the noise ({format_value(noise, unit)} per snapshot)" if noise > 0
                 else "a few irregular jumps between otherwise equal snapshots")
        why = (
            f"slope {format_rate(slope, unit)} ({ci}){since}: {hides} "
            f"hide{'s' if noise > 0 else ''} whether it grows by the practical minimum of "
            f"{format_value(minimum, unit)} over {int(span)} steps"
        )
    return verdict("inconclusive", end_fit - start, math.nan, f"{why}; {_advice(extra, dx)}")


