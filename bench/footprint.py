"""tokdiag's own memory per snapshot on large heaps, side by side with the process's RSS (issue 9, E15).

Each scenario runs in a *fresh* Python process (so one scenario's freed
pages cannot lend room to the next) that builds a heap, then takes tracker
snapshots. Before each snapshot the kernel's high-water mark of the process
is reset (``echo 5 > /proc/self/clear_refs``), so ``VmHWM`` after it minus
the RSS before it is the snapshot's true peak above the process: what the
snapshot would add to an OOM-killer's view of the service. Printed per
snapshot: the process's RSS before it, that peak, the peak as a share of the
RSS, tokdiag's own figure for it (``tracker/tokdiag/snapshot_peak_bytes``,
read at checkpoints: a lower bound), the RSS left behind after the snapshot,
and the wall time.

Scenarios (the figures of issue 9, E15, and its Done-when):

* ``watch``: 1,500,000 instances of a watched class (an int and a short
  str each: a ~355 MiB process); two snapshots of the default probes
  (process, census) plus ``watch``. Goal: own peak <= 15% of the RSS
  (85% before this work).
* ``heap``: 2,500,000 watched instances, each with a list: ~5M gc-tracked
  objects, ~960 MiB; snapshots of the defaults, the defaults plus ``watch``,
  and those plus a cache over a dict holding every instance. Goal: bounded.
* ``dict``: ``td.deep_size`` of a 5,000,000-entry ``dict[int, str]``.
* ``budget``: a workload that adds 10,000 instances per step under
  ``td.track(watch=..., every=10, budget_mb=470)``: the process's peak RSS
  (``VmHWM`` over the whole run, why_alive at the end included) must stay
  within 10% of the budget (1,252 MiB on a 470 MiB budget before).

``--before DIR`` runs the same scenarios with the tokdiag in ``DIR`` too (a
checkout of an older commit, its ``tokdiag/_speedups`` built), and prints
both side by side; without it only this checkout runs. ``--scale`` shrinks
every population (0.2 for a quick look).

Run: ``.venv/bin/python bench/footprint.py [--scenarios watch,heap,dict,budget] [--before DIR] [--scale 1.0]``
(about 3 minutes at scale 1 on an idle 2-core machine; ``--before`` a
checkout of the commit before this work adds several more).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

_MiB = 2**20
HERE = Path(__file__).resolve().parent.parent
SCENARIOS = ("watch", "heap", "dict", "budget")


# -- in the child -----------------------------------------------------------------------------

def _status() -> dict[str, int]:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) * 1024
    return out


def _reset_hwm() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class Msg:
    """A watched instance: an int and a short str (and a list of two items with ``tags``)."""

    def __init__(self, i: int, text: str, tags: bool) -> None:
        self.i = i
        self.text = text
        if tags:
            self.tags = [i, "x"]


def _build(n: int, tags: bool) -> list[Msg]:
    return [Msg(i + 1000, "m" * (1 + i % 16), tags) for i in range(n)]


def _measure(label: str, fn: Any) -> dict[str, Any]:
    import gc

    gc.collect()
    before = _status()["VmRSS"]
    exact = _reset_hwm()
    t = time.perf_counter()
    own = fn()
    dt = time.perf_counter() - t
    st = _status()
    row = {"label": label, "rss": before, "peak": st["VmHWM"] - before if exact else None,
           "recorded": own, "after": st["VmRSS"] - before, "s": dt}
    print(json.dumps(row), flush=True)
    return row


def _snapshotter(**options: Any) -> Any:
    """A started Tracker and a function taking one snapshot that returns its recorded own peak (None if absent)."""
    import warnings

    import tokdiag as td

    warnings.simplefilter("ignore")
    tracker = td.Tracker(progress=False, why_alive=False, **options)
    tracker.start()
    state = {"step": 0}

    def snap() -> float | None:
        tracker.snapshot(state["step"])
        state["step"] += 1
        return None

    return tracker, snap


def _recorded(tracker: Any) -> list[float]:
    """The snapshot_peak_bytes series of a finished tracker's journal ([] for a tokdiag without it)."""
    path = tracker._journal_path
    out = []
    with open(path) as f:
        for line in f:
            obj = json.loads(line)
            for r in obj.get("records", []):
                if r.get("metric") == "snapshot_peak_bytes":
                    out.append(r["value"])
    return out


def _snapshots(label: str, rows: list[dict[str, Any]], n: int, **options: Any) -> None:
    tracker, snap = _snapshotter(**options)
    mine = [_measure(f"{label} #{k + 1}", snap) for k in range(n)]
    tracker.finish(load=False)
    for row, value in zip(mine, _recorded(tracker), strict=True):
        row["recorded"] = value
        print(json.dumps(row), flush=True)
    Path(tracker._journal_path).unlink(missing_ok=True)
    rows.extend(mine)


def child(scenario: str, scale: float) -> None:
    import tokdiag as td

    rows: list[dict[str, Any]] = []
    if scenario == "watch":
        keep = _build(int(1_500_000 * scale), tags=False)
        _snapshots(f"defaults + watch ({len(keep):,} instances)", rows, 2, watch=["Msg"])
        del keep
    elif scenario == "heap":
        keep = _build(int(2_500_000 * scale), tags=True)
        cache = {i: m for i, m in enumerate(keep)}
        _snapshots(f"defaults, {2 * len(keep):,} objects", rows, 1)
        _snapshots(f"defaults + watch ({len(keep):,} instances)", rows, 1, watch=["Msg"])
        _snapshots(f"defaults + watch + cache ({len(cache):,} entries)", rows, 1, watch=["Msg"],
                   caches=[td.cache(lambda: cache, name="big")])
        del keep, cache
    elif scenario == "dict":
        big = {i: f"v{i}" for i in range(int(5_000_000 * scale))}
        rows.append(_measure(f"deep_size(dict of {len(big):,} entries)", lambda: (td.deep_size(big), None)[1]))
        del big
    elif scenario == "budget":
        import warnings

        warnings.simplefilter("ignore")
        budget = 470 * scale
        keep: list[Msg] = []

        def step(i: int) -> None:
            keep.extend(_build(int(10_000 * scale), tags=False))

        t = time.perf_counter()
        run = td.track(step, steps=100_000, every=10, watch=["Msg"], budget_mb=budget, progress=False)
        st = _status()
        light = sum(1 for w in run.warnings if w.startswith("budget: the snapshot"))
        why_skipped = any(w.startswith("budget: why_alive") for w in run.warnings)
        print(json.dumps({"label": f"budget_mb={budget:g}", "budget": budget * _MiB, "hwm": st["VmHWM"],
                          "status": run.status, "steps": run.steps[-1], "snapshots": len(run.steps),
                          "light": light, "why_alive": "skipped" if why_skipped else "run",
                          "instances": len(keep), "s": time.perf_counter() - t}), flush=True)


# -- in the parent ------------------------------------------------------------------------------

def _run(scenario: str, scale: float, root: Path) -> list[dict[str, Any]]:
    env = dict(os.environ, PYTHONPATH=str(root), PYTHONHASHSEED="0")
    out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", scenario, "--scale", str(scale)],
                         env=env, capture_output=True, text=True, cwd=str(root))
    if out.returncode != 0:
        print(f"  {scenario} with {root}: exit {out.returncode}\n{out.stderr[-2000:]}")
        return []
    rows: dict[str, dict[str, Any]] = {}
    for line in out.stdout.splitlines():
        if line.startswith("{"):
            row = json.loads(line)
            rows[row["label"]] = row  # the later line (with the recorded peak) wins
    return list(rows.values())


def _fmt_mib(b: float | None) -> str:
    return "n/a" if b is None else f"{b / _MiB:,.0f}"


def _print_snapshots(name: str, rows: list[dict[str, Any]]) -> None:
    for r in rows:
        if "budget" in r:
            ratio = r["hwm"] / r["budget"]
            print(f"  {name:7s} {r['label']:42s} peak RSS (VmHWM) {_fmt_mib(r['hwm'])} MiB = {ratio:.3f}x the budget "
                  f"({'within' if ratio <= 1.10 else 'NOT within'} 10%); {r['status']} after {r['steps']} steps, "
                  f"{r['snapshots']} snapshots ({r['light']} light), why_alive {r.get('why_alive', '?')}, "
                  f"{r['s']:.1f} s")
            continue
        share = "n/a" if r["peak"] is None else f"{r['peak'] / r['rss']:.1%}"
        print(f"  {name:7s} {r['label']:42s} RSS {_fmt_mib(r['rss']):>6s} MiB  own peak {_fmt_mib(r['peak']):>5s} MiB "
              f"({share:>6s})  recorded {_fmt_mib(r['recorded']):>5s} MiB  left {_fmt_mib(r['after']):>4s} MiB  "
              f"{r['s']:6.2f} s")


def _load() -> str:
    return " ".join(f"{x:.1f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    ap.add_argument("--before", type=Path, default=None, help="another tokdiag checkout to run side by side")
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child, args.scale)
        return
    if not _reset_hwm():
        print("note: /proc/self/clear_refs cannot be written here: true peaks are n/a, tokdiag's own figure only")
    arms = [("after", HERE)] + ([("before", args.before.resolve())] if args.before else [])
    print(f"bench/footprint.py, scale {args.scale:g}, load average {_load()}")
    for scenario in args.scenarios.split(","):
        print(f"== {scenario}")
        for name, root in arms:
            _print_snapshots(name, _run(scenario, args.scale, root))
    print(f"load average after: {_load()}")


if __name__ == "__main__":
    main()
