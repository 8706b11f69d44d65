"""The statistics under a verdict: robust noise, Theil-Sen with Sen's interval, warm-up splits, the last half.

Building blocks of :mod:`tokdiag.analysis.classification`, which documents
how they are combined into a verdict and why. Every function takes the
snapshot steps ``x`` and values ``y`` of one series as float arrays.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import NamedTuple

import numpy as np

__all__ = [
    "CONFIDENCE_Z", "TOST_Z", "Half", "autocorrelation_inflation", "constant_end", "last_half", "more_steps",
    "TINY", "robust_noise", "split_point", "theil_sen",
]

CONFIDENCE_Z = 2.5758293035489004
"""Two-sided 99% normal quantile: the reported interval, and the one a leak must clear."""

TOST_Z = 1.6448536269514722
"""90% interval for "practically flat": two one-sided 5% tests against the practical band (TOST)."""

TINY = 1e-12



def robust_noise(y: np.ndarray) -> float:
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


def theil_sen(x: np.ndarray, y: np.ndarray) -> tuple[float, float, float, float, float, float]:
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
            sse = np.where(cxx > TINY, cyy - cxy * cxy / np.where(cxx > TINY, cxx, 1.0), cyy)
        return np.maximum(sse, 0.0)

    pre = run(x, y)  # pre[k-1] = SSE of x[:k]
    suf = run(x[::-1], y[::-1])[::-1]  # suf[k] = SSE of x[k:]
    return pre, suf


def autocorrelation_inflation(resid: np.ndarray) -> float:
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


def split_point(x: np.ndarray, y: np.ndarray, noise: float, min_tail: int) -> int:
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


class Half(NamedTuple):
    """The last half of the tail judged alone (see :func:`last_half`)."""

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


def last_half(xt: np.ndarray, yt: np.ndarray, minimum: float) -> Half:
    """The last half of the tail judged alone: slope, 99% interval, 90% lower bound, practically flat.

    Both intervals are widened for autocorrelated residuals. Practically flat
    is the TOST test of step 5 on the half: its 90% interval inside the
    practical band for the half's own span.
    """
    h = xt.size // 2
    xf, yf = xt[-h:], yt[-h:]
    s_f, lo_f, hi_f, lo90_f, hi90_f, ic_f = theil_sen(xf, yf)
    inf_f = autocorrelation_inflation(yf - ic_f - s_f * xf)
    lo_f, hi_f = s_f - inf_f * (s_f - lo_f), s_f + inf_f * (hi_f - s_f)
    lo90_f, hi90_f = s_f - inf_f * (s_f - lo90_f), s_f + inf_f * (hi90_f - s_f)
    span_f = float(xf[-1] - xf[0])
    band_f = minimum / span_f if span_f > 0 else math.inf
    return Half(h, xf, yf, s_f, lo_f, hi_f, lo90_f, bool(-band_f < lo90_f and hi90_f < band_f))


def constant_end(xt: np.ndarray, yt: np.ndarray) -> tuple[int, float, float]:
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


def more_steps(slope: float, lo: float, hi: float, span: float, minimum: float) -> float | None:
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
        if (a - h > 0 and a * t >= minimum) or (a + h < minimum / t if minimum > 0 else a + h <= TINY):
            return t - span
    return None
