"""Time and peak memory of ``td.load`` on a large journal, side by side with the old reader.

Writes a realistic journal into a temporary folder, then loads it in a
*fresh* Python process per arm (so one arm's heap cannot lend its free pages
to the next) and prints, per arm: the file size, the load time, the peak RSS
added by the load (``resource.getrusage`` maxrss after the load minus the RSS
before it), that peak as a multiple of the file size, and the RSS still held
once the load returned (the Run itself).

Two journal shapes:

* ``process``: the lines of a run without census (``census=False``): the
  process probe and the tracker's own two records, 7 records and ~785 bytes
  a line. 1,000,000 such lines are the 755 MiB journal of issue #9 (E16).
* ``census``: the lines of a census run: 100 to 700 records a line (process,
  census count/bytes/unowned_bytes per type, a few watch records).

Arms:

* ``load``: ``tokdiag.load`` (streams the file, grows compact columns).
* ``old``: the reader tokdiag had before (``read_bytes().split()``, a dict
  per line kept until the end, then the timeline built from lists), kept
  here verbatim as the reference.
* ``read_json``: ``pd.read_json(path, lines=True)``, a frame of one row per
  *line* (the records stay nested dicts): what plain pandas does.

Goal (issue #9): ``td.load`` of a 1,000,000-line journal peaks under 2x
the file size.

Run: ``.venv/bin/python bench/load.py [--lines-process N] [--lines-census N] [--arms load,old,read_json]``
(defaults: 150,000 process lines, 1,500 census lines, all three arms; about
a minute). The goal's figure: ``--lines-process 1000000 --lines-census 0 --arms load``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

_MiB = 2**20


# -- the journal ----------------------------------------------------------------------------

def _process_records(rng: random.Random, step: int) -> list[dict[str, object]]:
    rss = 80e6 + step * 1024.0 + rng.random() * 4096
    return [
        {"probe": "process", "subject": "process", "metric": "rss", "value": rss, "unit": "bytes"},
        {"probe": "process", "subject": "process", "metric": "gc_objects", "value": float(52_000 + step % 997),
         "unit": "objects"},
        {"probe": "process", "subject": "process", "metric": "gc_gen0", "value": float(rng.randrange(700)),
         "unit": "objects"},
        {"probe": "process", "subject": "process", "metric": "gc_gen1", "value": float(rng.randrange(10)),
         "unit": "objects"},
        {"probe": "process", "subject": "process", "metric": "gc_gen2", "value": 0.0, "unit": "objects"},
        {"probe": "tracker", "subject": "tokdiag", "metric": "snapshot_s", "value": 0.02 + rng.random() / 100,
         "unit": "seconds"},
        {"probe": "tracker", "subject": "tokdiag", "metric": "self_bytes", "value": 576.0, "unit": "bytes"},
    ]


_TYPES = [f"builtins.{t}" for t in ("dict", "list", "tuple", "str", "set", "function", "cell", "type")] + [
    f"app.module{m}.Class{c}" for m in range(40) for c in range(25)]


def _census_records(rng: random.Random, step: int) -> list[dict[str, object]]:
    recs = _process_records(rng, step)
    for name in rng.sample(_TYPES, rng.randrange(31, 231)):  # 3 records per type: 100-700 records a line
        count = float(rng.randrange(1, 200_000))
        recs.append({"probe": "census", "subject": name, "metric": "count", "value": count, "unit": "objects"})
        recs.append({"probe": "census", "subject": name, "metric": "bytes", "value": count * 56, "unit": "bytes"})
        recs.append({"probe": "census", "subject": name, "metric": "unowned_bytes", "value": count * 40,
                     "unit": "bytes"})
    recs.append({"probe": "watch", "subject": "app.agents.RewardAgent", "metric": "count", "value": float(step),
                 "unit": "objects"})
    return recs


def write_journal(path: Path, lines: int, shape: str, seed: int = 0) -> None:
    rng = random.Random(seed)
    make = _process_records if shape == "process" else _census_records
    header = {"kind": "header", "format": 1, "tokdiag": "0.1.0", "python": "3.11.7", "pid": 1, "run": f"bench-{shape}",
              "started_at": "2026-01-01T00:00:00+00:00", "params": {"steps": lines, "census": shape == "census"}}
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(header) + "\n")
        for step in range(lines):
            fh.write(json.dumps({"kind": "snapshot", "step": step, "elapsed_s": round(step * 0.05, 6),
                                 "records": make(rng, step)}) + "\n")
        fh.write(json.dumps({"kind": "end", "reason": "completed", "step": lines, "elapsed_s": lines * 0.05,
                             "message": f"{lines} steps"}) + "\n")


# -- the old reader (tokdiag before issue #9), verbatim apart from names ----------------------

def _old_load(path: Path) -> object:
    import pandas as pd

    raw = path.read_bytes()
    lines = [(i, line) for i, line in enumerate(raw.split(b"\n")) if line.strip()]
    parsed = []
    for n, (_, line) in enumerate(lines):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError:
            if n == len(lines) - 1:
                break
            raise
        parsed.append(obj)
    snapshots = [obj for obj in parsed[1:] if obj["kind"] == "snapshot"]
    run = str(parsed[0].get("run"))
    steps: list[int] = []
    elapsed: list[float] = []
    probe: list[str] = []
    subject: list[str] = []
    metric: list[str] = []
    value: list[float] = []
    unit: list[str] = []
    for snap in snapshots:
        recs = snap.get("records", [])
        n = len(recs)
        steps.extend([int(snap["step"])] * n)
        elapsed.extend([float(snap.get("elapsed_s", 0.0))] * n)
        for r in recs:
            probe.append(r["probe"])
            subject.append(r["subject"])
            metric.append(r["metric"])
            v = r.get("value")
            value.append(float("nan") if v is None else float(v))
            unit.append(r.get("unit", ""))
    return pd.DataFrame({
        "run": pd.Series([run] * len(steps), dtype="string"),
        "step": pd.Series(steps, dtype="int64"),
        "elapsed_s": pd.Series(elapsed, dtype="float64"),
        "probe": pd.Series(probe, dtype="string"),
        "subject": pd.Series(subject, dtype="string"),
        "metric": pd.Series(metric, dtype="string"),
        "value": pd.Series(value, dtype="float64"),
        "unit": pd.Series(unit, dtype="string"),
    })


# -- one measurement, in a fresh process ------------------------------------------------------

def _rss_now() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _measure(arm: str, path: Path) -> None:
    import pandas as pd

    import tokdiag as td

    load = {"load": td.load, "old": _old_load, "read_json": lambda p: pd.read_json(p, lines=True)}[arm]
    before = _rss_now()
    t0 = time.perf_counter()
    result = load(path)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    rows = len(result.timeline) if arm == "load" else len(result)  # type: ignore[attr-defined, arg-type]
    print(json.dumps({"seconds": seconds, "peak_added": peak - before, "kept": _rss_now() - before, "rows": rows}))


def _run_arm(arm: str, path: Path) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--measure", arm, str(path)], capture_output=True, text=True,
                         check=False)
    if out.returncode != 0:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines-process", type=int, default=150_000)
    parser.add_argument("--lines-census", type=int, default=1_500)
    parser.add_argument("--arms", default="load,old,read_json")
    parser.add_argument("--measure", nargs=2, metavar=("ARM", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        _measure(args.measure[0], Path(args.measure[1]))
        return
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="tokdiag-bench-load-") as tmp:
        for shape, lines in (("process", args.lines_process), ("census", args.lines_census)):
            if lines <= 0:
                continue
            path = Path(tmp) / f"{shape}.jsonl"
            t0 = time.perf_counter()
            write_journal(path, lines, shape)
            size = path.stat().st_size
            print(f"\n{shape} journal: {lines:,} snapshot lines, {size / _MiB:,.1f} MiB "
                  f"(written in {time.perf_counter() - t0:.1f} s)")
            print(f"  {'arm':10} {'rows':>11} {'seconds':>8} {'peak MiB':>9} {'peak/file':>9} {'kept MiB':>9}")
            for arm in arms:
                r = _run_arm(arm, path)
                if "error" in r:
                    print(f"  {arm:10} failed: {r['error']}")
                    continue
                print(f"  {arm:10} {r['rows']:>11,} {r['seconds']:>8.1f} {r['peak_added'] / _MiB:>9,.0f} "
                      f"{r['peak_added'] / size:>8.2f}x {r['kept'] / _MiB:>9,.0f}")
            path.unlink()
    print("\ngoal (issue #9, E16): td.load of a 1,000,000-line journal peaks under 2x the file size "
          "(rows 'load', column peak/file)")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
