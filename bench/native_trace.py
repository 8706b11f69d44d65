"""What ``td.alive_by_site`` costs and how much of the RSS growth it names, on real AWorld.

Four child processes run the same workload (default: AWorld 0.3.2, a new
agent per task against the local stub LLM, ``tokdiag_workloads.aworld:agent_step``)
for ``warmup`` untraced steps and then ``steps`` more, one after the other:

A. RSS: ``track_isolated(..., every=1, census=False)``; growth per step is
   ``(rss[warmup + steps] - rss[warmup]) / steps``. No memray.
B. the same steps without memray (the wall-time baseline; same child code
   as C and D, with the capture left closed).
C. under memray with Python's allocator traced (``python_allocators=True``,
   the default of ``alive_by_site``).
D. under memray seeing only ``malloc``/``mmap`` (``python_allocators=False``:
   pymalloc's 1 MiB arenas instead of each object).

For C and D it prints the wall and CPU time per step (the child process's,
all threads) and their ratios to B, the capture
size per step, the time to read the capture, the bytes still alive per step
(allocator overhead included) and their share of A's RSS growth, the share
named by ``ssl.create_default_context``, the heap growth memray did not see,
and the largest sites. Times are taken in separate processes in turn, not
interleaved: on a loaded machine the wall-time ratio moved from 1.2x to 2.0x
between two runs (a task mostly waits on the stub server and AWorld's
0.1 s polls); CPU time is the steadier measure of what memray adds.
The goal (issue 11, item 6) is a record of the costs and of the share named;
nothing is asserted.

Run: ``.venv/bin/python bench/native_trace.py [steps=25] [warmup=3] [factory]``
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pandas as pd

from tokdiag.analysis.attribution import UNSEEN, by_site
from tokdiag.recording.isolated import spec_json, track_isolated
from tokdiag.recording.native_trace import run_child, trace_native

FACTORY = "tokdiag_workloads.aworld:agent_step"


def untraced(factory: str, steps: int, warmup: int, tmp: Path) -> tuple[float, float]:
    """Wall and CPU seconds of ``steps`` steps after ``warmup``, in the child alive_by_site uses, without memray."""
    result = tmp / "untraced.json"
    spec = {"factory": factory, "kwargs": {}, "steps": steps, "warmup": warmup, "python_allocators": False,
            "native_traces": False, "capture": str(tmp / "unused.bin"), "result": str(result), "trace": False}
    code, stderr = run_child("tokdiag.recording.native_trace", spec_json(spec, "bench"), None)
    if code != 0:
        raise SystemExit(f"untraced child failed ({code}):\n{stderr[-2000:]}")
    import json

    data = json.loads(result.read_text())
    return float(data["traced_s"]), float(data["traced_cpu_s"])


def main() -> None:
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 25
    warmup = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    factory = sys.argv[3] if len(sys.argv) > 3 else FACTORY
    print(f"load average before: {os.getloadavg()}")
    print(f"{factory}: {warmup} warm-up steps, then {steps} steps; Python {sys.version.split()[0]}")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        run = track_isolated(factory, steps=warmup + steps, every=1, census=False, journal=tmp / "rss.jsonl")
        rss = run.series("process", "process", "rss")
        rss_per_step = (rss.loc[warmup + steps] - rss.loc[warmup]) / steps
        print(f"A. RSS growth per step (no memray): {rss_per_step / 1024:.0f} KiB")
        base, base_cpu = untraced(factory, steps, warmup, tmp)
        print(f"B. without memray: {base / steps:.3f} s per step wall, {base_cpu / steps:.3f} s CPU")
        pd.set_option("display.width", 200)
        for label, python_allocators in (("C. python_allocators=True", True), ("D. python_allocators=False", False)):
            trace = trace_native(factory, steps=steps, warmup=warmup, python_allocators=python_allocators)
            table = by_site(trace)
            named = table[table["site"] != UNSEEN]
            unseen = table.loc[table["site"] == UNSEEN, "bytes_per_step"].sum()
            ssl = named.loc[named["site"] == "ssl.create_default_context", "bytes_per_step"].sum()
            alive = named["bytes_per_step"].sum()
            print(f"\n{label} (memray {trace.memray})")
            print(f"  {trace.traced_s / steps:.3f} s per step wall, {trace.traced_s / base:.2f}x without memray; "
                  f"{trace.traced_cpu_s / steps:.3f} s CPU, {trace.traced_cpu_s / base_cpu:.2f}x")
            print(f"  capture: {trace.capture_bytes / steps / 1e6:.2f} MB per step "
                  f"({trace.allocations / steps:,.0f} allocations per step); read in {trace.read_s:.1f} s")
            asked = named["bytes"].sum() / steps
            ssl_rows = named[named["site"] == "ssl.create_default_context"]
            ssl_asked = ssl_rows["bytes"].sum() / steps
            print(f"  alive per step: {alive / 1024:.0f} KiB = {alive / rss_per_step:.0%} of the RSS growth, "
                  f"allocator overhead included ({table.attrs['overhead_per_block']:.1f} B per block); "
                  f"the bytes asked for alone: {asked / 1024:.0f} KiB = {asked / rss_per_step:.0%}")
            print(f"  ssl.create_default_context: {ssl / 1024:.0f} KiB per step = {ssl / rss_per_step:.0%} of it; "
                  f"without overhead {ssl_asked / 1024:.0f} KiB = {ssl_asked / rss_per_step:.0%}, in "
                  f"{ssl_rows['allocations'].sum() / steps:,.0f} blocks per step")
            if trace.heap_growth is not None:
                print(f"  glibc's heap in use grew {trace.heap_growth / steps / 1024:.0f} KiB per step during the "
                      f"capture; minus the blocks memray saw there: {table.attrs['unseen_bytes'] / steps / 1024:.1f} "
                      f"KiB per step (the table's '(not seen by memray)' row: {unseen / 1024:.1f})")
            top = table.head(6)[["site", "owner", "bytes_per_step", "steps", "share"]].copy()
            top["bytes_per_step"] = (top["bytes_per_step"] / 1024).round(1)
            print(top.rename(columns={"bytes_per_step": "KiB/step"}).to_string(index=False))
    print(f"\nload average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
