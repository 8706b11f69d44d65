"""Time ``tokdiag.analysis.verdicts`` on a census-sized timeline.

3,000 series x 50 snapshots (150,000 rows): a mix of flat, noisy, leaking,
bounded and stepping series, the shapes a real census holds. Prints the
wall time of ``verdicts`` and, measured in the same run, the time of a bare
``groupby(...).value.agg(["first", "last"])`` over the same rows, as the
floor any per-series analysis pays for touching every row.

Run: ``.venv/bin/python bench/verdicts.py [n_series] [n_snapshots]``
"""

from __future__ import annotations

import sys
import time

import numpy as np
import pandas as pd

from tokdiag.analysis import verdicts


def make_timeline(n_series: int, n_snap: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    every = 10
    steps = np.r_[np.arange(0, every * (n_snap - 1), every), every * (n_snap - 1) - 1]
    cols: dict[str, list] = {c: [] for c in ("run", "step", "elapsed_s", "probe", "subject", "metric", "value", "unit")}
    for i in range(n_series):
        kind = i % 5
        base = rng.uniform(1e3, 1e7)
        if kind == 0:
            y = np.full(steps.shape, base)
        elif kind == 1:
            y = base + rng.normal(0, base * 0.01, steps.shape)
        elif kind == 2:
            y = base + 1024.0 * steps + rng.normal(0, 2e4, steps.shape)
        elif kind == 3:
            y = base + np.minimum(steps, 120) * 500.0
        else:
            y = base + np.where(steps > 40, 4e6, 0.0)
        unit, metric = ("objects", "count") if i % 2 else ("bytes", "bytes")
        if unit == "objects":
            y = np.round(y / 1000)
        cols["run"] += ["bench"] * steps.size
        cols["step"] += steps.tolist()
        cols["elapsed_s"] += (steps * 0.01).tolist()
        cols["probe"] += ["census"] * steps.size
        cols["subject"] += [f"pkg.mod.Type{i}"] * steps.size
        cols["metric"] += [metric] * steps.size
        cols["value"] += y.tolist()
        cols["unit"] += [unit] * steps.size
    return pd.DataFrame(cols)


def main() -> None:
    n_series = int(sys.argv[1]) if len(sys.argv) > 1 else 3000
    n_snap = int(sys.argv[2]) if len(sys.argv) > 2 else 50
    tl = make_timeline(n_series, n_snap)
    t0 = time.perf_counter()
    tl.groupby(["run", "probe", "subject", "metric", "unit"])["value"].agg(["first", "last"])
    floor = time.perf_counter() - t0
    t0 = time.perf_counter()
    v = verdicts(tl)
    took = time.perf_counter() - t0
    print(f"timeline: {n_series} series x {n_snap} snapshots = {len(tl):,} rows")
    print(f"verdicts():                {took:8.3f} s  ({took / n_series * 1e6:.0f} us per series)")
    print(f"groupby first/last floor:  {floor:8.3f} s  (ratio {took / floor:.1f}x)")
    print("labels:", v["verdict"].value_counts().to_dict())


if __name__ == "__main__":
    main()
