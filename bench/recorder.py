"""The in-process recorder's cost: its pause per snapshot, and a service's throughput with and without it.

Part 1, the pause. Builds a heap of about N gc-tracked objects (agent-like
message dicts and instances holding lists), starts ``td.record`` with every
option at its default but a long interval (its first snapshot is taken at
once), stops it (a second snapshot), and reads both snapshots' wall time
(``snapshot_s``) and CPU time (``snapshot_cpu_s``: the recorder's thread
holding the GIL, so the time every other thread of a service waits) from
the journal. The goal (issue 13): a pause under 1% of wall time at the
default schedule (one snapshot per ``every_s=60`` s) on a 1M-object heap.

Part 2, a service under load. A threaded standard-library WSGI service
holding a heap of M objects answers ``GET /`` (each request builds a small
dict and a JSON body) to one client sending requests back to back, for D
seconds, without a recorder (A) and with ``td.record(every_s=E)`` (B),
alternating A B A B A B A B in fresh processes (medians of the four runs'
rates, so one burst of another job on the machine moves them less). Prints requests per second, median,
p99 and worst latency per arm, the ratio B/A, and the pauses journaled in
B. With E=5 the recorder snapshots 12 times as often as by default, so the
cost is visible in a short run; the default's share is the pause / 60 s.

Part 3, attach. ``tokdiag attach --for 5s --every 1s`` on an idle service
with no heap of its own: the CPU time the service spent on it (importing
tokdiag and its dependencies, the snapshots), and its RSS and thread count
before and after (the imported modules stay; no thread does).

Run: ``.venv/bin/python bench/recorder.py [heaps=1000000] [service_heap=1000000] [duration_s=10] [every_s=5]``
(``heaps`` is comma-separated, e.g. ``1000000,10000000``; a 10M-object heap
needs about 3 GB and a minute to build.)
"""

from __future__ import annotations

import gc
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

import tokdiag as td

GOAL = 0.01
ROUNDS = 4
DEFAULT_EVERY_S = 60.0

_SERVICE = r'''
import json, sys, threading
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

class Message:
    def __init__(self, i):
        self.turns = [i]

heap_size, journal, every_s = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
HEAP = [Message(i) for i in range(heap_size // 2)]  # an instance and its list: two gc-tracked objects each
import gc

def app(environ, start_response):
    body = json.dumps({"ok": True, "items": [{"i": i} for i in range(20)]}).encode()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]

class Quiet(WSGIRequestHandler):
    def log_message(self, *a):
        pass

class Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True

rec = None
if journal != "-":
    import tokdiag as td
    rec = td.record(journal, every_s=every_s)
server = make_server("127.0.0.1", 0, app, server_class=Server, handler_class=Quiet)
def _until_stdin_closes():
    sys.stdin.readline()  # the bench closes stdin when done
    server.shutdown()

threading.Thread(target=_until_stdin_closes, daemon=True).start()
print(server.server_port, len(gc.get_objects()), flush=True)
server.serve_forever(poll_interval=0.5)  # the main thread runs Python code now and then, as servers do
if rec is not None:
    rec.stop()
'''


def _load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


class Message:
    def __init__(self, i: int) -> None:
        self.turns = [i, {"tokens": i}]


def _heap(n: int) -> list[object]:
    """About ``n`` gc-tracked objects: message dicts, and instances holding a list and a dict."""
    out: list[object] = []
    while len(gc.get_objects()) < n:
        out.extend({"role": "user", "n": i} if i % 2 else Message(i) for i in range(n // 8))
    return out


def _two_snapshots(**options: object) -> tuple[list[float], list[float]]:
    """Wall and CPU seconds of a recorder's first snapshot and its last (at stop)."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pause.jsonl"
        td.record(path, every_s=3600, **options).stop()
        run = td.load(path)
    return (run.series("tracker", "tokdiag", "snapshot_s").tolist(),
            run.series("tracker", "tokdiag", "snapshot_cpu_s").tolist())


def pause_on_heap(n: int) -> None:
    heap = _heap(n)
    objects = len(gc.get_objects())
    for label, options in (("defaults", {}), ("census=False", {"census": False}),
                           ("census=False, collect=False", {"census": False, "collect": False})):
        wall, cpu = _two_snapshots(**options)
        pause = statistics.median(cpu)
        share = pause / DEFAULT_EVERY_S
        goal = ""
        if label == "defaults" and n <= 2_000_000:
            goal = f" (goal < {GOAL:.0%} on 1M objects: {'met' if share < GOAL else 'NOT met'})"
        print(f"heap {objects:,} gc-tracked objects, {label}: snapshot wall {', '.join(f'{w:.2f}' for w in wall)} s, "
              f"pause (CPU, GIL held) {', '.join(f'{c:.2f}' for c in cpu)} s; at every_s=60 the pause is "
              f"{share:.2%} of wall time{goal}")
    del heap
    gc.collect()


def _serve(heap: int, journal: str, every_s: float, duration: float) -> tuple[list[float], int]:
    """Latencies (s) of back-to-back requests to a fresh service for ``duration`` seconds, and its heap size."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-c", _SERVICE, str(heap), journal, str(every_s)], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        port, objects = map(int, proc.stdout.readline().split())
        latencies = []
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            client.get("/")
            end = time.perf_counter() + duration
            while (t := time.perf_counter()) < end:
                client.get("/")
                latencies.append(time.perf_counter() - t)
        return latencies, objects
    finally:
        proc.stdin.close()
        proc.wait(120)
        proc.stdout.close()


def service_under_load(heap: int, duration: float, every_s: float) -> None:
    arms: dict[str, list[list[float]]] = {"A": [], "B": []}
    pauses: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(ROUNDS):
            latencies, objects = _serve(heap, "-", every_s, duration)
            arms["A"].append(latencies)
            journal = os.path.join(tmp, f"b{round_}.jsonl")
            arms["B"].append(_serve(heap, journal, every_s, duration)[0])
            pauses += td.load(journal).series("tracker", "tokdiag", "snapshot_cpu_s").tolist()
    print(f"  (the service's heap: {objects:,} gc-tracked objects)")
    rate = {}
    for arm, runs in arms.items():
        lat = sorted(x for r in runs for x in r)
        rate[arm] = statistics.median(len(r) / duration for r in runs)
        label = "no recorder" if arm == "A" else f"td.record(every_s={every_s:g})"
        print(f"  {arm} {label:<24} {rate[arm]:8.0f} req/s   median {statistics.median(lat) * 1e3:6.2f} ms   "
              f"p99 {lat[int(len(lat) * 0.99)] * 1e3:6.2f} ms   worst {lat[-1] * 1e3:7.1f} ms")
    in_window = max(1, len(pauses) - 2 * ROUNDS)  # each run also snapshots at its start and its stop, outside it
    lost = (1 - rate["B"] / rate["A"]) * duration * ROUNDS / in_window
    print(f"  the service lost {lost:.2f} s of serving per snapshot: {lost / DEFAULT_EVERY_S:.1%} of its throughput at "
          f"the default every_s=60")
    print(f"  throughput B/A = {rate['B'] / rate['A']:.3f}; {len(pauses)} snapshots in B, pause median "
          f"{statistics.median(pauses) * 1e3:.0f} ms (max {max(pauses) * 1e3:.0f} ms): "
          f"{statistics.median(pauses) / every_s:.1%} of wall time at every_s={every_s:g}, "
          f"{statistics.median(pauses) / DEFAULT_EVERY_S:.2%} at the default every_s=60")


def attach_leaves() -> None:
    """``tokdiag attach`` on an idle service with no heap of its own: its CPU cost and what stays afterwards."""
    import psutil

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-c", _SERVICE, "0", "-", "60"], env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        proc.stdout.readline()
        service = psutil.Process(proc.pid)
        rss0, cpu0, threads0 = service.memory_info().rss, sum(service.cpu_times()[:2]), service.num_threads()
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            subprocess.run([sys.executable, "-m", "tokdiag", "attach", str(proc.pid), "--for", "5s", "--every", "1s",
                            "-o", os.path.join(tmp, "a.jsonl")], env=env, check=True, capture_output=True)
            wall = time.perf_counter() - t
            snapshots = len(td.load(os.path.join(tmp, "a.jsonl")).steps)
        time.sleep(0.5)
        rss1, cpu1, threads1 = service.memory_info().rss, sum(service.cpu_times()[:2]), service.num_threads()
    finally:
        proc.stdin.close()
        proc.wait(60)
        proc.stdout.close()
    print(f"  tokdiag attach --for 5s --every 1s took {wall:.1f} s; {snapshots} snapshots; the service spent "
          f"{cpu1 - cpu0:.2f} s of CPU on it (importing tokdiag, numpy, pandas, psutil, and the snapshots); its RSS "
          f"went {rss0 / 2**20:.1f} -> {rss1 / 2**20:.1f} MiB (the imported modules stay); OS threads {threads0} -> "
          f"{threads1} (numpy's OpenBLAS pool, started by its import, stays; no Python thread does)")


def main() -> None:
    heaps = [int(x) for x in (sys.argv[1] if len(sys.argv) > 1 else "1000000").split(",")]
    service_heap = int(sys.argv[2]) if len(sys.argv) > 2 else 1_000_000
    duration = float(sys.argv[3]) if len(sys.argv) > 3 else 10.0
    every_s = float(sys.argv[4]) if len(sys.argv) > 4 else 5.0
    print(f"bench/recorder.py: {_load()}")
    print("Part 1: the pause of one snapshot (td.record defaults: census, gc.collect)")
    for n in heaps:
        pause_on_heap(n)
    print(f"Part 2: a threaded WSGI service with a {service_heap:,}-object heap, one client back to back, "
          f"{duration:g} s per run, A B x {ROUNDS}")
    service_under_load(service_heap, duration, every_s)
    print("Part 3: what tokdiag attach costs an idle service and leaves in it")
    attach_leaves()
    print(f"bench/recorder.py: {_load()}")


if __name__ == "__main__":
    main()
