"""A verdict per series: leak, bounded, step, flat or inconclusive.

Every numeric series of a timeline (one ``(run, probe, subject, metric)``)
gets a label, a growth per step with an uncertainty interval, and a
projection. :func:`classify` judges one series; :func:`verdicts` runs it
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
   tail, it would amount to at least :data:`PRACTICAL_MIN` for the unit
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

   - the run does not end on a *pause*: its last :data:`MIN_SNAPSHOTS` or
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

Fewer than :data:`MIN_SNAPSHOTS` snapshots are always ``inconclusive``: two
points cannot tell a leak from a step.

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
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, NamedTuple

import numpy as np
import pandas as pd

from tokdiag.errors import ConfigError
from tokdiag.records import COLUMNS

__all__ = [
    "LABELS",
    "MIN_SNAPSHOTS",
    "NOISE_METRICS",
    "PRACTICAL_MIN",
    "Verdict",
    "VERDICT_COLUMNS",
    "classify",
    "format_rate",
    "format_value",
    "verdicts",
]

LABELS: tuple[str, ...] = ("leak", "bounded", "step", "flat", "inconclusive")
"""Every label :func:`classify` can return."""

MIN_SNAPSHOTS = 4
"""Fewer snapshots than this are ``inconclusive``.

With three points a jump and a trend fit equally well; the fourth is the
first that can contradict one of them.
"""

PRACTICAL_MIN: dict[str, float] = {
    "bytes": 64 * 1024,
    "objects": 8.0,
    "entries": 8.0,
    "blocks": 16.0,
    "calls": 8.0,
    "files": 8.0,
}
"""Least total growth over the judged window (the tail) that can be a leak, per unit.

Why these numbers:

- ``bytes``, 64 KiB: RSS moves by 4 KiB pages, pymalloc hands out 16 KiB
  pools and glibc grows and trims the heap top in 128 KiB steps, and an
  interpreter warming up (type attribute caches, interned strings, code
  caches) adds tens of KB on its own. Growth below 64 KiB over a whole
  window is what the allocator and the interpreter do by themselves; a real
  1 KB/step leak passes it after 64 steps.
- ``objects`` / ``entries``, 8: counts are exact, so noise is handled by the
  interval; the minimum only keeps one or two lazily created singletons
  (the second call of something creating one more helper object) from
  being called a leak. A cache fed a new key every step passes it after 8
  steps.
- ``blocks``, 16: tracemalloc block counts per site are exact but churn
  more than type counts.
- ``calls``, 8: cumulative counters (only judged with ``counters=True``).
- ``files``, 8: files under a directory (the disk probe), exact like objects.

Units not listed get 0: only the interval decides.

One exception for exact counts (objects, entries, blocks, files): when the count
rose at *every* snapshot of the judged window (at least five snapshots),
the minimum drops to that rise. Six agents kept by six tasks are a leak
even though six is below eight: a singleton rises once, not every time.
"""

NOISE_METRICS: frozenset[tuple[str, str]] = frozenset(
    {("process", "gc_gen0"), ("process", "gc_gen1"), ("process", "gc_gen2")})
"""``(probe, metric)`` series that are judged like any other but are not memory.

The collector's per-generation counters count allocations since the last
collection of that generation: they climb and reset with the allocation
pattern, so a ``leak`` on them says nothing about what is kept. Headlines
(:mod:`tokdiag.report.summary`) leave them out.
"""

CONFIDENCE_Z = 2.5758293035489004
"""Two-sided 99% normal quantile: the reported interval, and the one a leak must clear."""

TOST_Z = 1.6448536269514722
"""90% interval for "practically flat": two one-sided 5% tests against the practical band (TOST)."""

STEP_SHARE = 0.8
"""A change is a ``step`` when one snapshot interval holds at least this share of it."""

SLOWDOWN = 0.5
"""Growth has slowed when the last half of the tail is surely below this share of the tail slope."""

RESOLUTION = 1e-3
"""Share of the practical minimum below which wiggles cannot start a new regime (66 B for bytes).

A near-exact series (bytes on disk, deep sizes) has a robust noise of 0,
and a warm-up split would then be believed for a few bytes of difference
(JSON records of unequal length), leaving a short tail judged alone.
"""

_TINY = 1e-12


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


VERDICT_COLUMNS: tuple[str, ...] = (
    "run", "probe", "subject", "metric", "unit", "verdict", "per_step", "per_step_low",
    "per_step_high", "growth", "warmup_steps", "projected", "n_snapshots", "reason",
)
"""Columns of :func:`verdicts`, in order."""


# --------------------------------------------------------------------------- formatting

_COUNT_UNITS = frozenset({"objects", "entries", "blocks", "files"})
"""Units of exact counts (not sizes): see the every-interval rule in :func:`_classify`."""

_SINGULAR = {"objects": "object", "entries": "entry", "calls": "call", "blocks": "block", "files": "file"}


def format_value(value: float | None, unit: str) -> str:
    """A figure in its series' unit, for people: ``1.21 MiB``, ``512 B``, ``1,500 objects``, ``1 entry``.

    Bytes in binary units to three significant figures; counts as integers
    with thousands separators (fractions to three figures); ``n/a`` for
    None or a non-finite value. Verdict reasons and charts both use it.
    """
    if value is None or not math.isfinite(float(value)):
        return "n/a"
    v = float(value)
    if unit == "bytes":
        a = abs(v)
        for div, suffix in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
            if a >= div:
                return f"{v / div:.3g} {suffix}"
        return f"{v:.3g} B"
    a = abs(v)
    if a >= 1000:
        number = f"{v:,.0f}"
    elif a == int(a):
        number = f"{v:.0f}"
    else:
        number = f"{v:.3g}"
    if number in ("1", "-1"):  # "1 object", not "1 objects"
        unit = _SINGULAR.get(unit, unit)
    return f"{number} {unit}" if unit else number


def format_rate(value: float | None, unit: str) -> str:
    """:func:`format_value` per step: ``42.6 MiB/step``; ``n/a`` stays ``n/a``."""
    text = format_value(value, unit)
    return text if text == "n/a" else f"{text}/step"


# --------------------------------------------------------------------------- statistics

def _robust_noise(y: np.ndarray) -> float:
    """Robust sigma of the values around their local trend (see module docstring)."""
    if y.size < 3:
        return 0.0
    d2 = np.diff(y, 2)
    med = np.median(d2)
    return float(1.4826 * np.median(np.abs(d2 - med)) / math.sqrt(6.0))


@lru_cache(maxsize=256)
def _pairs(m: int) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs ``i < j`` for ``m`` points (cached per size: a few KB each)."""
    i, j = np.triu_indices(m, 1)
    return i, j


def _theil_sen(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float, float, float]:
    """Theil-Sen slope, Sen's 99% and 90% rank intervals, and the intercept.

    Returns ``(slope, lo99, hi99, lo90, hi90, intercept)``. An interval is
    the order statistics of the pairwise slopes at ranks
    ``(N -/+ z*sqrt(Var S)) / 2`` with ``Var S = m(m-1)(2m+5)/18`` (Kendall's
    S, normal approximation, no ties correction: ties only make it narrower,
    so leaving it out is conservative). When ``m`` is too small for that
    rank to exist (fewer than 7 points for 99%, fewer than 5 for 90%), the
    bound comes from the least-squares standard error of the slope instead:
    ``slope +/- t(m-2) * se`` with Student's t for ``m - 2`` degrees of
    freedom (:data:`_T_QUANTILES`), so a short run of a few snapshots that
    grows 40 MB per step with kilobytes of noise is still decided, while two
    or three noisy points stay wide. With no degrees of freedom left the
    bound is infinite (say so rather than pretend), except when every
    pairwise slope is the same (an exact line, e.g. exact counts).
    """
    m = x.size
    nan = float("nan")
    if m < 2:
        return 0.0, nan, nan, nan, nan, float(y[0]) if m else nan
    i, j = _pairs(m)
    slopes = (y[j] - y[i]) / (x[j] - x[i])
    slopes.sort()
    n_pairs = slopes.size
    half = n_pairs // 2
    slope = float(slopes[half]) if n_pairs % 2 else float(0.5 * (slopes[half - 1] + slopes[half]))
    exact = slopes[0] == slopes[-1]
    sd = math.sqrt(m * (m - 1) * (2 * m + 5) / 18.0)
    bounds: list[float] = []
    for z in (CONFIDENCE_Z, TOST_Z):
        c = z * sd
        lo_rank = int(math.floor((n_pairs - c) / 2.0))  # 1-based
        hi_rank = int(math.ceil((n_pairs + c) / 2.0)) + 1
        if lo_rank >= 1 and hi_rank <= n_pairs:
            lo, hi = float(slopes[lo_rank - 1]), float(slopes[hi_rank - 1])
        elif exact:
            lo, hi = float(slopes[0]), float(slopes[-1])
        else:
            half_width = _ols_half_width(x, y, z)
            lo, hi = slope - half_width, slope + half_width
        bounds += [lo, hi]
    intercept = float(np.median(y - slope * x))
    return slope, bounds[0], bounds[1], bounds[2], bounds[3], intercept


_T_QUANTILES: dict[float, tuple[float, ...]] = {
    CONFIDENCE_Z: (math.inf, 63.657, 9.925, 5.841, 4.604, 4.032, 3.707, 3.499, 3.355, 3.250, 3.169),
    TOST_Z: (math.inf, 6.314, 2.920, 2.353, 2.132, 2.015, 1.943, 1.895, 1.860, 1.833, 1.812),
}
"""Student's t quantiles (0.995 and 0.95) by degrees of freedom 0-10, for :func:`_ols_half_width`."""


def _ols_half_width(x: np.ndarray, y: np.ndarray, z: float) -> float:
    """Half width of the least-squares slope interval at the level of normal quantile ``z``.

    Used only where Sen's rank interval does not exist (few points). Infinite
    with fewer than three points.
    """
    m = x.size
    df = m - 2
    if df < 1:
        return math.inf
    xc = x - x.mean()
    sxx = float(np.dot(xc, xc))
    if sxx <= 0:
        return math.inf
    b = float(np.dot(xc, y - y.mean())) / sxx
    resid = y - y.mean() - b * xc
    se = math.sqrt(float(np.dot(resid, resid)) / df / sxx)
    table = _T_QUANTILES[z]
    t = table[df] if df < len(table) else z * (1 + 1 / df)  # beyond the table rank intervals are used anyway
    return t * se


def _segment_sse(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares line SSE of every prefix ``[:k]`` and suffix ``[k:]``, via running sums."""

    def run(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        k = np.arange(1, xs.size + 1, dtype=float)
        sx, sy = np.cumsum(xs), np.cumsum(ys)
        sxx, sxy, syy = np.cumsum(xs * xs), np.cumsum(xs * ys), np.cumsum(ys * ys)
        cxx = sxx - sx * sx / k
        cxy = sxy - sx * sy / k
        cyy = syy - sy * sy / k
        with np.errstate(divide="ignore", invalid="ignore"):
            sse = np.where(cxx > _TINY, cyy - cxy * cxy / np.where(cxx > _TINY, cxx, 1.0), cyy)
        return np.maximum(sse, 0.0)

    pre = run(x, y)  # pre[k-1] = SSE of x[:k]
    suf = run(x[::-1], y[::-1])[::-1]  # suf[k] = SSE of x[k:]
    return pre, suf


def _autocorrelation_inflation(resid: np.ndarray) -> float:
    """Factor widening an interval for positively autocorrelated residuals.

    Rank intervals assume independent noise. A series that wanders (a
    random walk of object counts, a saturating curve fitted by a line) has
    residuals correlated from one snapshot to the next, and fewer
    independent snapshots than it seems: the effective count is
    ``m (1 - rho) / (1 + rho)`` for lag-1 autocorrelation ``rho``, so the
    interval widens by ``sqrt((1 + rho) / (1 - rho))`` (``rho`` clipped to
    ``[0, 0.9]``, at most 4.4x). White noise and exact lines are left alone.
    """
    if resid.size < 3:
        return 1.0
    r = resid - resid.mean()
    denom = float(r @ r)
    if denom <= 0:
        return 1.0
    rho = min(max(float(r[1:] @ r[:-1]) / denom, 0.0), 0.9)
    return math.sqrt((1.0 + rho) / (1.0 - rho))


def _split_price(n: int) -> float:
    """Least gain (in units of noise variance) for which a warm-up split is believed.

    Calibrated by simulation of the actual split search on straight lines
    plus noise (Gaussian, Student-t with 3 degrees of freedom, and values
    rounded like RSS pages): the largest gain over all splits exceeds
    ``50 + 2000 / n**2`` noise variances in about 0.1% of series for 10 to
    200 snapshots (a false split would only shorten the judged window; a
    real warm-up or jump gains hundreds to millions of variances).
    """
    return 50.0 + 2000.0 / (n * n)


def _split(x: np.ndarray, y: np.ndarray, noise: float, min_tail: int) -> int:
    """Index where the final regime starts (0 when one line explains the series).

    Two-phase regression, the phases not joined (a jump fits exactly). The
    noise variance the gain is measured against is the larger of the robust
    ``noise`` and the split model's own residual variance, so a noisy
    estimate of one does not let noise through.
    """
    n = x.size
    if n < min_tail + 1:
        return 0
    # Normalise so sums of squares are well conditioned whatever the unit.
    xs = (x - x[0]) / max(float(x[-1] - x[0]), 1.0)
    scale = float(np.max(y) - np.min(y))
    if scale <= 0:
        return 0
    ys = (y - float(np.median(y))) / scale
    pre, suf = _segment_sse(xs, ys)
    one_line = float(suf[0])
    ks = np.arange(1, n - min_tail + 1)  # tail = [k:], head = [:k]
    cost = pre[ks - 1] + suf[ks]
    best = int(np.argmin(cost))
    gain = one_line - float(cost[best])
    var = max((noise / scale) ** 2, float(cost[best]) / max(n - 4, 1))
    # Floor: the running-sum SSEs carry rounding errors of ~1e-15 per point on this normalised
    # scale; an exact line (exact counts) must not be split by them.
    price = max(_split_price(n) * var, 1e-9 * one_line, 1e-10 * n)
    return int(ks[best]) if gain > price else 0


class _Half(NamedTuple):
    """The last half of the tail judged alone (see :func:`_last_half`)."""

    h: int
    x: np.ndarray
    y: np.ndarray
    slope: float
    lo: float
    hi: float
    lo90: float
    flat: bool

    @property
    def span(self) -> float:
        return float(self.x[-1] - self.x[0])


def _last_half(xt: np.ndarray, yt: np.ndarray, minimum: float) -> _Half:
    """The last half of the tail judged alone: slope, 99% interval, 90% lower bound, practically flat.

    Both intervals are widened for autocorrelated residuals. Practically flat
    is the TOST test of step 5 on the half: its 90% interval inside the
    practical band for the half's own span.
    """
    h = xt.size // 2
    xf, yf = xt[-h:], yt[-h:]
    s_f, lo_f, hi_f, lo90_f, hi90_f, ic_f = _theil_sen(xf, yf)
    inf_f = _autocorrelation_inflation(yf - ic_f - s_f * xf)
    lo_f, hi_f = s_f - inf_f * (s_f - lo_f), s_f + inf_f * (hi_f - s_f)
    lo90_f, hi90_f = s_f - inf_f * (s_f - lo90_f), s_f + inf_f * (hi90_f - s_f)
    span_f = float(xf[-1] - xf[0])
    band_f = minimum / span_f if span_f > 0 else math.inf
    return _Half(h, xf, yf, s_f, lo_f, hi_f, lo90_f, bool(-band_f < lo90_f and hi90_f < band_f))


def _constant_end(xt: np.ndarray, yt: np.ndarray) -> tuple[int, float, float]:
    """The run of equal values that ends the series: ``(snapshots, span in steps, longest earlier pause)``.

    The longest earlier pause is the longest span (in steps) over which the
    values before that run stayed exactly equal: how long the series could
    sit still while it was still growing (RSS moves a page or a pool at a
    time, so a slow leak seen through RSS pauses between its rises).
    """
    m = yt.size
    j = 1
    while j < m and yt[m - j - 1] == yt[-1]:
        j += 1
    head = m - j
    pause = 0.0
    start = 0
    for i in range(1, head):
        if yt[i] != yt[start]:
            pause = max(pause, float(xt[i - 1] - xt[start]))
            start = i
    if head > 0:
        pause = max(pause, float(xt[head - 1] - xt[start]))
    return j, float(xt[-1] - xt[-j]), pause


def _more_steps(slope: float, lo: float, hi: float, span: float, minimum: float) -> float | None:
    """Extra steps (same snapshot interval) after which the interval would decide, or None."""
    if span <= 0:
        return None
    half = max(slope - lo, hi - slope)
    if not math.isfinite(half):
        return None
    a = abs(slope)
    for k in range(1, 200):
        factor = 1.08 ** k
        t = span * factor
        h = half * factor ** -1.5
        if (a - h > 0 and a * t >= minimum) or (a + h < minimum / t if minimum > 0 else a + h <= _TINY):
            return t - span
    return None


def _advice(extra: float | None, dx: float) -> str:
    if extra is None:
        return "more steps alone will not decide: reduce the noise (gc before snapshots, fewer concurrent jobs) or snapshot more often"
    extra = max(extra, dx)
    snaps = int(math.ceil(extra / dx)) if dx > 0 else 0
    return f"about {int(math.ceil(extra))} more steps (~{snaps} more snapshots at this interval) would decide"


# --------------------------------------------------------------------------- classify

def classify(steps: Iterable[float] | np.ndarray, values: Iterable[float] | np.ndarray, *,
             unit: str = "bytes", project_to: int = 10_000) -> Verdict:
    """Judge one series: ``leak``, ``bounded``, ``step``, ``flat`` or ``inconclusive``.

    ``steps`` are snapshot steps (any spacing), ``values`` the series in
    ``unit``. See the module docstring for the method and
    :data:`PRACTICAL_MIN` for the thresholds.

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
    return _classify(x, y, unit, project_to)


def _classify(x: np.ndarray, y: np.ndarray, unit: str, project_to: int) -> Verdict:
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

    noise = _robust_noise(y)
    b = 0
    while True:  # the final regime: split again while the tail still has a warm-up of its own
        k = _split(x[b:], y[b:], max(noise, RESOLUTION * minimum), MIN_SNAPSHOTS)
        if k == 0:
            break
        b += k
    xt, yt = x[b:], y[b:]
    m = int(xt.size)
    span = float(xt[-1] - xt[0])
    slope, lo, hi, lo90, hi90, intercept = _theil_sen(xt, yt)
    inflate = _autocorrelation_inflation(yt - intercept - slope * xt)
    if inflate > 1.0:
        lo, hi = slope - inflate * (slope - lo), slope + inflate * (hi - slope)
        lo90, hi90 = slope - inflate * (slope - lo90), slope + inflate * (hi90 - slope)
    if unit in _COUNT_UNITS and m > MIN_SNAPSHOTS and bool((np.diff(yt) > 0).all()):
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
        j, span_j, pause = _constant_end(xt, yt)
        paused = j >= MIN_SNAPSHOTS and span_j > pause
        if paused and slope * span_j >= minimum and span_j > 2.0 * pause:
            level = float(yt[-1])
            return Verdict(
                "bounded", 0.0, 0.0, 0.0, level - start, int(round(float(xt[-j] - x[0]))), level, n,
                f"grew {format_rate(slope, unit)} {where}, then constant at {format_value(level, unit)} over the "
                f"last {j} snapshots ({int(span_j)} steps, in which that rate would have added "
                f"{format_value(slope * span_j, unit)}): it stopped" + note, unit, noise)
        half = _last_half(xt, yt, minimum) if m >= 2 * MIN_SNAPSHOTS else None
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
                "inconclusive", end_fit - start, math.nan,
                f"grows {format_rate(slope, unit)} ({ci}) {where}, but the last {j} snapshots ({int(span_j)} steps) are "
                f"all equal, a longer pause than any while it grew ({int(pause)} steps at most): it may have "
                f"stopped; about {int(max(span_j, dx))} more steps would tell")
        # The half's window grows by half of every extra step of the run.
        extra = _more_steps(half.slope, half.lo90, half.hi, half.span, minimum * half.span / span)
        return verdict(
            "inconclusive", end_fit - start, math.nan,
            f"grows {format_rate(slope, unit)} ({ci}) {where}, but the last {half.h} snapshots ({int(half.span)} steps) "
            f"do not show whether it still grows: {format_rate(half.slope, unit)} there (90% CI from "
            f"{format_value(half.lo90, unit)}); {_advice(None if extra is None else 2.0 * extra, dx)}")
    if hi < 0 and -slope * span >= minimum:
        return verdict(
            "bounded", end_fit - start, end_fit,
            f"shrinks {format_rate(slope, unit)} ({ci}) {where}: memory is being released, not accumulated")
    if -band < lo90 and hi90 < band:  # practically flat tail (TOST)
        change = plateau - start
        if b == 0 or abs(change) < max(minimum, 3.0 * noise, _TINY):
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
        half = _last_half(xt, yt, minimum)
        if half.flat:
            level = float(np.median(half.y))
            change = level - start
            label = "bounded" if abs(change) >= max(minimum, 3.0 * noise, _TINY) else "flat"
            return Verdict(
                label, half.slope, half.lo, half.hi, change, int(round(float(half.x[0] - x[0]))), level, n,
                f"changed {format_value(change, unit)} in all, the last part unevenly, then flat at {format_value(level, unit)} "
                f"over the last {half.h} snapshots ({int(half.span)} steps)" + note, unit, noise)
    # Undecided: the interval straddles zero, or the band, or both.
    extra = _more_steps(slope, lo, hi, span, minimum)
    since = f" ({m} snapshots since step {int(xt[0])})" if b else ""
    if lo > 0:
        why = (f"grows {format_rate(slope, unit)} but only {format_value(slope * span, unit)} over the last {int(span)} "
               f"steps{since}, below the practical minimum of {format_value(minimum, unit)}")
    else:
        hides = (f"the noise ({format_value(noise, unit)} per snapshot)" if noise > 0
                 else "a few irregular jumps between otherwise equal snapshots")
        why = (f"slope {format_rate(slope, unit)} ({ci}){since}: {hides} "
               f"hide{'s' if noise > 0 else ''} whether it grows by the practical minimum of {format_value(minimum, unit)} over "
               f"{int(span)} steps")
    return verdict("inconclusive", end_fit - start, math.nan, f"{why}; {_advice(extra, dx)}")


# --------------------------------------------------------------------------- verdicts

_SKIP_UNITS = {"hash", "flag"}
_AT_START = "_at_start"  # a census type's figures at the first snapshot, written once: a baseline, not a series
_REQUIRED = ("run", "step", "probe", "subject", "metric", "value", "unit")


def _check_timeline(timeline: object, what: str = "timeline") -> pd.DataFrame:
    if hasattr(timeline, "timeline") and not isinstance(timeline, pd.DataFrame):
        timeline = getattr(timeline, "timeline")
    if not isinstance(timeline, pd.DataFrame):
        raise ConfigError(
            f"{what} is a {type(timeline).__name__}; pass a timeline DataFrame (run.timeline) "
            f"with columns {', '.join(COLUMNS)}")
    missing = [c for c in _REQUIRED if c not in timeline.columns]
    if missing:
        raise ConfigError(
            f"{what} lacks column(s) {missing}; a tokdiag timeline has columns {', '.join(COLUMNS)} "
            "(load one with td.load(journal).timeline)")
    return timeline


def _series(timeline: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]:
    """Keys of every series, plus group starts and the step/value arrays sorted by (series, step)."""
    keys = ["run", "probe", "subject", "metric", "unit"]
    codes = timeline.groupby(keys, sort=True, dropna=False).ngroup().to_numpy()
    steps = pd.to_numeric(timeline["step"], errors="coerce").to_numpy(dtype=float)
    values = pd.to_numeric(timeline["value"], errors="coerce").to_numpy(dtype=float)
    order = np.lexsort((steps, codes))
    codes, steps, values = codes[order], steps[order], values[order]
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    first = timeline.iloc[order[starts]][keys].reset_index(drop=True)
    bounds = np.r_[starts, codes.size]
    return first, bounds, steps, values


def verdicts(timeline: pd.DataFrame, *, project_to: int = 10_000, probes: Iterable[str] | None = None,
             counters: bool = False) -> pd.DataFrame:
    """One verdict per numeric series of ``timeline``; columns :data:`VERDICT_COLUMNS`.

    ``project_to``: the step count at which ``projected`` is given.
    ``probes``: judge only these probes (e.g. ``["process", "watch", "cache"]``).
    ``counters``: also judge cumulative call counters (cache ``hits`` and
    ``misses``, unit ``calls``). Off by default: they grow with traffic, not
    memory, so a ``leak`` on them would be a false alarm; an unbounded cache
    already shows up in its ``entries``.

    Series never judged: unit ``hash`` (payload fingerprints are identifiers,
    not quantities), unit ``flag`` (states, e.g. a capped disk walk),
    timings (unit ``seconds``: the tracker's snapshots, a disk walk) and
    baselines (metrics ending ``_at_start``: a census type's figures at the
    first snapshot, written once when the type is first written late).

    >>> import pandas as pd
    >>> rows = [("a", s, 0.0, "watch", "app.Agent", "count", float(s), "objects") for s in range(0, 50, 5)]
    >>> tl = pd.DataFrame(rows, columns=["run", "step", "elapsed_s", "probe", "subject", "metric", "value", "unit"])
    >>> verdicts(tl)[["subject", "verdict", "per_step"]].to_dict("records")
    [{'subject': 'app.Agent', 'verdict': 'leak', 'per_step': 1.0}]
    """
    timeline = _check_timeline(timeline)
    if isinstance(project_to, bool) or not isinstance(project_to, (int, np.integer)) or project_to <= 0:
        raise ConfigError(f"project_to={project_to!r}: pass a positive number of steps, e.g. project_to=10_000")
    tl = timeline
    baselines = [m for m in tl["metric"].unique() if str(m).endswith(_AT_START)]
    skip = tl["unit"].isin(_SKIP_UNITS) | (tl["unit"] == "seconds") | tl["metric"].isin(baselines)
    if not counters:
        skip |= tl["unit"] == "calls"
    if probes is not None:
        wanted = [probes] if isinstance(probes, str) else list(probes)
        present = set(tl["probe"].unique())
        unknown = [p for p in wanted if p not in present]
        if unknown:
            raise ConfigError(
                f"probes={wanted!r}: {unknown[0]!r} has no rows in this timeline; probes present: "
                f"{sorted(present)}")
        skip |= ~tl["probe"].isin(wanted)
    tl = tl.loc[~skip]
    if tl.empty:
        return pd.DataFrame({c: pd.Series(dtype=_dtype(c)) for c in VERDICT_COLUMNS})
    keys, bounds, steps, values = _series(tl)
    out: dict[str, list] = {c: [] for c in VERDICT_COLUMNS[5:]}
    units = keys["unit"].to_numpy()
    for g in range(len(keys)):
        a, b = bounds[g], bounds[g + 1]
        v = _classify(steps[a:b], values[a:b], str(units[g]), project_to)
        out["verdict"].append(v.verdict)
        out["per_step"].append(v.per_step)
        out["per_step_low"].append(v.per_step_low)
        out["per_step_high"].append(v.per_step_high)
        out["growth"].append(v.growth)
        out["warmup_steps"].append(v.warmup_steps)
        out["projected"].append(v.projected)
        out["n_snapshots"].append(v.n_snapshots)
        out["reason"].append(v.reason)
    df = keys[["run", "probe", "subject", "metric", "unit"]].copy()
    for c, col in out.items():
        df[c] = pd.Series(col, dtype=_dtype(c))
    return df[list(VERDICT_COLUMNS)]


def _dtype(column: str) -> str:
    if column in ("per_step", "per_step_low", "per_step_high", "growth", "projected"):
        return "float64"
    if column in ("warmup_steps", "n_snapshots"):
        return "int64"
    if column == "run":
        return "object"
    return "str"
