"""Time ``tokdiag.why_alive`` against ``objgraph.find_backref_chain`` on a ~1M-object heap.

The heap: a module-level ``bus`` (an ``EventBus``) whose ``_history`` list
holds 20,000 ``Message`` objects, each with a small payload dict and the
``agent`` that sent it (100 ``Agent`` objects, 200 messages each: the
AWorld shape, where every ``MemoryEventMessage`` holds its agent), plus
filler (dicts, lists, tuples, instances) up to ~1M gc-tracked objects.

Two questions, each asked of both tools on the same heap, one after the
other, in this process:

1. why is this ``Agent`` alive? Known chain:
   ``module <bench> -> bus -> EventBus._history[i] -> Message.agent -> Agent``
   (the agent is referred to by its 200 messages);
2. why is this ``Note`` alive? Known chain, one reference per hop:
   ``module <bench> -> bus -> EventBus.pinned -> Message.note -> Note``.

objgraph is given its documented root predicate, ``objgraph.is_proper_module``
(a module in ``sys.modules``). ``why_alive`` is called with its defaults
(``gc.collect()`` first, up to 3 chains). The instance is passed through a
weak reference so neither tool sees a local variable of this script as the
nearest root. Prints each wall time and the ratio objgraph / why_alive.

objgraph calls ``gc.get_referrers`` (a scan of the whole heap) for every node
its breadth-first search pops, so its cost grows with the number of objects
on the way to the root; ``why_alive`` reads the heap once, so its cost is
nearly the same for both questions.

Run: ``.venv/bin/python bench/why_alive.py [n_objects]``
"""

from __future__ import annotations

import gc
import sys
import time
import weakref

import objgraph

from tokdiag.analysis.retention import why_alive


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


def build(n_objects: int) -> tuple[weakref.ref[Agent], weakref.ref[Note]]:
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
    return weakref.ref(agents[37]), weakref.ref(pinned.note)  # type: ignore[attr-defined]


def race(question: str, ref: weakref.ref) -> float:
    t = time.perf_counter()
    chains = why_alive(ref())
    ours = time.perf_counter() - t
    print(f"  tokdiag.why_alive            {ours:7.2f} s  {chains[0].text if chains else 'no chain'}")
    del chains
    t = time.perf_counter()
    chain = objgraph.find_backref_chain(ref(), objgraph.is_proper_module)
    theirs = time.perf_counter() - t
    print(f"  objgraph.find_backref_chain  {theirs:7.2f} s  {' -> '.join(type(o).__name__ for o in chain)}")
    del chain
    ratio = theirs / ours
    print(f"  ratio (objgraph / why_alive): {ratio:.1f}x  [{question}]")
    return ratio


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
    agent, note = build(n)
    gc.collect()
    print(f"heap: {len(gc.get_objects()):,} gc-tracked objects")
    print("1. an Agent held by its 200 messages in the bus history")
    race("agent", agent)
    print("2. a Note on a single chain of references")
    race("note", note)


if __name__ == "__main__":
    main()
