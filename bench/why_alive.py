"""Time ``tokdiag.why_alive`` against ``objgraph.find_backref_chain`` on a ~1M-object heap.

The heap: a module-level ``bus`` (an ``EventBus``) whose ``_history`` list
holds 20,000 ``Message`` objects; every message holds its ``agent`` (one of
1,000 ``Agent`` objects, 20 messages each) and a small payload dict; plus
filler (dicts, lists, tuples, instances) up to ~1M gc-tracked objects. The
question asked of both tools: why is one ``Agent`` alive? The known chain is
``module <bench> -> bus -> EventBus._history[i] -> Message.agent -> Agent``.

objgraph is given its documented root predicate, ``objgraph.is_proper_module``
(a module in ``sys.modules``); ``why_alive`` is asked for one chain of that
instance. Both run in this process, one after the other, on the same heap,
and the ratio of wall times is printed.

Run: ``.venv/bin/python bench/why_alive.py [n_objects]``
"""

from __future__ import annotations

import gc
import sys
import time

import objgraph

from tokdiag.retention import why_alive


class Agent:
    def __init__(self, i: int) -> None:
        self.i = i
        self.memory: list[str] = []


class Message:
    def __init__(self, agent: Agent, i: int) -> None:
        self.agent = agent
        self.payload = {"role": "user", "n": i}


class EventBus:
    def __init__(self) -> None:
        self._history: list[Message] = []


class Filler:
    def __init__(self, i: int) -> None:
        self.i = i
        self.tags = [i]


bus = EventBus()
FILLER: list[object] = []


def build(n_objects: int) -> Agent:
    agents = [Agent(i) for i in range(1000)]
    for i in range(20_000):
        bus._history.append(Message(agents[i % 1000], i))
    base = len(gc.get_objects())
    k = 0
    while base + len(FILLER) * 2 < n_objects:  # each filler round adds ~2 tracked objects per item
        FILLER.append({"k": k, "v": [k]} if k % 3 == 0 else Filler(k) if k % 3 == 1 else (k, [k]))
        k += 1
    target = agents[123]
    del agents
    return target


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    target = build(n)
    gc.collect()
    heap = len(gc.get_objects())
    print(f"heap: {heap:,} gc-tracked objects")

    t = time.perf_counter()
    chains = why_alive(target, max_chains=1)
    ours = time.perf_counter() - t
    print(f"tokdiag.why_alive        {ours:7.2f} s  {chains[0].text if chains else 'no chain'}")

    t = time.perf_counter()
    chain = objgraph.find_backref_chain(target, objgraph.is_proper_module)
    theirs = time.perf_counter() - t
    kinds = " -> ".join(type(o).__name__ for o in chain)
    print(f"objgraph.find_backref_chain {theirs:7.2f} s  {kinds}")
    del chain
    print(f"ratio (objgraph / why_alive): {theirs / ours:.1f}x")


if __name__ == "__main__":
    main()
