"""Time ``tokdiag.why_alive`` against ``objgraph.find_backref_chain`` on a ~1M-object heap; measure its memory.

The heap: a module-level ``bus`` (an ``EventBus``) whose ``_history`` list
holds 20,000 ``Message`` objects, each with a small payload dict and the
``agent`` that sent it (100 ``Agent`` objects, 200 messages each: the
AWorld shape, where every ``MemoryEventMessage`` holds its agent), plus
filler (dicts, lists, tuples, instances) up to ~1M gc-tracked objects.

Two questions, the two shapes of issue 11:

1. why is this ``Agent`` alive? One object held by many:
   ``module __main__ -> bus -> EventBus._history[i] -> Message.agent -> Agent``
   (the agent is referred to by its 200 messages);
2. why is this ``Note`` alive? A thin chain, one reference per hop:
   ``module __main__ -> bus -> EventBus.pinned -> Message.note -> Note``.

Timing: ``rounds`` rounds on one heap, in this process; each round asks
both tools the thin-chain question (and the first 3 rounds the other one:
objgraph takes ~10 s on it), the tool that goes first alternating between
rounds (so drift in the machine's load hits both alike). Prints the median
wall time of each tool per question, the ratio of the medians and the range
of the per-round ratios. objgraph is given its documented root predicate,
``objgraph.is_proper_module``; ``why_alive`` runs with its defaults (up to
3 chains; ``collect=True``). The instance is passed through a weak
reference so neither tool sees a local variable of this script as the
nearest root. ``find_backref_chain`` starts with a full ``gc.collect()``;
``why_alive`` collects the young generations only (it tells garbage from
live objects itself), so the time of one full collection is printed too.

Memory: why_alive answers each question once more in a fresh interpreter
(``--memory TOOL QUESTION``) on the same heap, objgraph the thin-chain one: the peak of ``tracemalloc``
during the call (Python objects and ``PyMem_Raw*`` blocks: the search's C
tables, its lists), and the rise of the peak RSS (``VmHWM``, reset through
``/proc/self/clear_refs`` just before the call).

``--walk=list`` makes the C walk read a ``gc.get_objects()`` list (as on
Pythons where it cannot read the collector's lists), ``--walk=python`` runs
the Python walk used when the extension was not built.

Run: ``.venv/bin/python bench/why_alive.py [n_objects=1000000] [rounds=5] [--walk=list|python]``
"""

from __future__ import annotations

import gc
import os
import statistics
import subprocess
import sys
import time
import tracemalloc
import weakref

import objgraph

from tokdiag.analysis.retention import walk as heapwalk
from tokdiag.analysis.retention import why_alive

GOAL = 5.0


class Agent:
    def __init__(self, i: int) -> None:
        self.i = i
        self.memory: list[str] = []


class Note:
    pass


class Message:
    def __init__(self, agent: Agent, i: int) -> None:
        self.agent = agent
        self.payload = {"role": "user", "n": i}


class EventBus:
    def __init__(self) -> None:
        self._history: list[Message] = []
        self.pinned: Message | None = None


class Filler:
    def __init__(self, i: int) -> None:
        self.i = i
        self.tags = [i]


bus = EventBus()
FILLER: list[object] = []


def build(n_objects: int) -> dict[str, weakref.ref]:
    agents = [Agent(i) for i in range(100)]
    for i in range(20_000):
        bus._history.append(Message(agents[i % 100], i))
    pinned = Message(Agent(-1), -1)
    pinned.note = Note()  # type: ignore[attr-defined]
    bus.pinned = pinned
    base = len(gc.get_objects())
    k = 0
    while base + len(FILLER) * 2 < n_objects:  # ~2 tracked objects per filler item
        FILLER.append({"k": k, "v": [k]} if k % 3 == 0 else Filler(k) if k % 3 == 1 else (k, [k]))
        k += 1
    return {"agent": weakref.ref(agents[37]), "note": weakref.ref(pinned.note)}  # type: ignore[attr-defined]


QUESTIONS = {"agent": "1. an Agent held by its 200 messages in the bus history",
             "note": "2. a Note on a single chain of references"}


def ask(tool: str, ref: weakref.ref) -> str:
    if tool == "why_alive":
        chains = why_alive(ref())
        return chains[0].text if chains else "no chain"
    chain = objgraph.find_backref_chain(ref(), objgraph.is_proper_module)
    return " -> ".join(type(o).__name__ for o in chain)


def timed(tool: str, ref: weakref.ref) -> tuple[float, str]:
    t = time.perf_counter()
    text = ask(tool, ref)
    return time.perf_counter() - t, text


def _status(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return -1


def memory(tool: str, question: str, n: int) -> None:
    """In a fresh interpreter: the peak memory of one call (printed as 'tracemalloc_peak rss_peak_rise')."""
    refs = build(n)
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
        rss_before = _status("VmRSS")
    except OSError:
        rss_before = -1
    tracemalloc.start()
    tracemalloc.reset_peak()
    ask(tool, refs[question])
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    rise = _status("VmHWM") - rss_before if rss_before >= 0 else -1
    print(peak, rise)


def _choose_walk(args: list[str]) -> list[str]:
    """Apply ``--walk=list|python`` (see the module docstring); the other arguments."""
    for a in args:
        if a.startswith("--walk="):
            how = a.split("=", 1)[1]
            if how not in ("list", "python"):
                raise SystemExit(f"--walk={how}: pass --walk=list or --walk=python")
            heapwalk.DIRECT = False
            if how == "python":
                heapwalk._heapwalk = None
    return [a for a in args if not a.startswith("--walk=")]


def main() -> None:
    walk_args = [a for a in sys.argv[1:] if a.startswith("--walk=")]
    args = _choose_walk(sys.argv[1:])
    if args[:1] == ["--memory"]:
        memory(args[1], args[2], int(args[3]))
        return
    n = int(args[0]) if len(args) > 0 else 1_000_000
    rounds = int(args[1]) if len(args) > 1 else 5
    print(
        f"load average before: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs (other processes inflate all timings)"
    )
    refs = build(n)
    gc.collect()
    how = ("the Python walk (as without the C extension)" if heapwalk._heapwalk is None else
           "the C walk on the collector's lists" if heapwalk.DIRECT else "the C walk on a gc.get_objects() list")
    print(f"heap: {len(gc.get_objects()):,} gc-tracked objects; why_alive runs {how}")
    times: dict[tuple[str, str], list[float]] = {}
    texts: dict[tuple[str, str], str] = {}
    collect: list[float] = []
    for r in range(rounds):
        t = time.perf_counter()
        gc.collect()
        collect.append(time.perf_counter() - t)
        for question, ref in refs.items():
            if question == "agent" and r >= 3:
                continue
            for tool in (("why_alive", "objgraph") if r % 2 == 0 else ("objgraph", "why_alive")):
                dt, texts[tool, question] = timed(tool, ref)
                times.setdefault((tool, question), []).append(dt)
    print(f"one full gc.collect(): median {statistics.median(collect):.3f} s (objgraph's call starts with one)")
    met = True
    for question, title in QUESTIONS.items():
        ours, theirs = times["why_alive", question], times["objgraph", question]
        ratio = statistics.median(theirs) / statistics.median(ours)
        per_round = sorted(b / a for a, b in zip(ours, theirs, strict=True))
        met &= ratio >= GOAL
        print(title)
        print(f"  tokdiag.why_alive            median {statistics.median(ours):6.3f} s  {texts['why_alive', question]}")
        print(
            f"  objgraph.find_backref_chain  median {statistics.median(theirs):6.3f} s  {texts['objgraph', question]}"
        )
        print(f"  ratio (objgraph / why_alive): {ratio:.1f}x (rounds: {per_round[0]:.1f}x-{per_round[-1]:.1f}x, "
              f"{len(ours)} rounds)")
    for question, tool in (("agent", "why_alive"), ("note", "why_alive"), ("note", "objgraph")):
        if True:
            out = subprocess.run([sys.executable, __file__, "--memory", tool, question, str(n), *walk_args],
                                 capture_output=True, text=True, check=True).stdout.split()
            peak, rise = int(out[-2]), int(out[-1])
            print(f"  memory, {question}, {tool:9s}: tracemalloc peak {peak / 2**20:6.1f} MiB, "
                  f"peak RSS rise {rise / 2**20:6.1f} MiB (fresh interpreter)")
    print(f"goal: why_alive >= {GOAL:.0f}x faster than objgraph.find_backref_chain on both shapes -> "
          f"{'met' if met else 'NOT met'}")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
