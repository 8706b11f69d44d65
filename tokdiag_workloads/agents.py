"""A small agent application in pure Python, with every retention path on a switch.

This reproduces the objects argued about in AWorld PR #765 (see
``DESIGN.md``) without importing AWorld: per task a :class:`RewardAgent`
scores a trajectory, publishes :class:`MemoryEventMessage` objects (each holds
its agent in ``.agent``) on an :class:`EventBus` whose :class:`MemoryStore`
keeps them, the app keeps a conversation history of :class:`ChatTurn` s,
counts tokens with one cached ``tiktoken.Encoding``, and a
:class:`BrowserSession` takes a :class:`PageSnapshot` (20-50 KB of bytes) of
the page the agent looked at.

Each retention path is a toggle (all ``True`` by default, ``fixed=True``
turns all four off):

=====================  =================================================  =======================================
toggle                 on: what grows without bound                        off: what the app does instead
=====================  =================================================  =======================================
``keep_agents``        ``app.registry._agents`` keeps every RewardAgent    the agent is dropped after its task
``keep_messages``      ``app.bus.store._messages`` (a list) keeps every    the store is a ``deque(maxlen=
                       MemoryEventMessage, and through ``.agent`` its      store_limit)``
                       RewardAgent
``keep_browser``       ``app.browser._pages[url]`` keeps every             the snapshot is dropped after its task
                       PageSnapshot (20-50 KB each)
``unbounded_history``  ``app.conversation.history`` keeps every ChatTurn   trimmed to the last ``history_limit``
=====================  =================================================  =======================================

:data:`GROUND_TRUTH` names, per toggle, the classes whose live instances grow
with the number of tasks when that toggle alone is on; :data:`BOUNDED` names
the owners that never grow past a constant (the Encoding cache). Note that
``keep_messages`` alone also leaks RewardAgents: a message holds its agent,
which is exactly the author's point in the PR debate. With ``reuse_agent=True``
every task uses one agent, and no toggle leaks agents.

Two ways to drive it::

    app = AgentApp(keep_browser=False)        # an independent app; app.close() or del frees it
    for i in range(100):
        app.run_task(i)

    step = agent_workload(fixed=True)         # a step function for tokdiag.track(step, steps=...)
    step(0); step(1)

``agent_workload`` registers its app in the module-level ``_APPS`` dict, so a
why-alive chain reads ``module tokdiag_workloads.agents -> _APPS["agent-app-1"]
-> AgentApp.bus -> EventBus.store -> MemoryStore._messages[12] ->
MemoryEventMessage.agent -> RewardAgent``; the entry goes away when the step
function is garbage collected or ``step.app.close()`` is called.

Per-task growth, measured by ``python -m tokdiag_workloads.agents`` (each
variant in a fresh interpreter; RSS via psutil over tasks 100-1100, then
tracemalloc over tasks 1100-2100; one run on the 2-core development machine,
Python 3.11.7, identical on a second run):

=========================  ===============  =======================
variant                    RSS KB/task      tracemalloc KB/task
=========================  ===============  =======================
all on (default)           42.4             43.8
``keep_agents`` alone      2.0              3.7
``keep_messages`` alone    4.1              5.5
``keep_browser`` alone     35.4             34.7
``unbounded_history``      3.7              3.7
``fixed=True``             0.1              0.1
=========================  ===============  =======================

RSS is page-granular and reuses freed memory, so small leaks read lower in
RSS than in tracemalloc; the Encoding (about 54 MB of RSS, built once) is not
in these slopes.
"""

from __future__ import annotations

import collections
import itertools
import random
import threading
import time
import weakref
from collections.abc import Callable, MutableSequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, cast

from tokdiag.errors import ConfigError

if TYPE_CHECKING:
    import tiktoken

__all__ = [
    "BOUNDED",
    "GROUND_TRUTH",
    "TOGGLES",
    "AgentApp",
    "AgentRegistry",
    "AgentStep",
    "BrowserSession",
    "ChatTurn",
    "Conversation",
    "EventBus",
    "MemoryEventMessage",
    "MemoryStore",
    "PageSnapshot",
    "RewardAgent",
    "agent_workload",
    "count_tokens",
]

_MOD = __name__  # "tokdiag_workloads.agents"

TOGGLES: tuple[str, ...] = ("keep_agents", "keep_messages", "keep_browser", "unbounded_history")
"""The retention switches of :class:`AgentApp`, in a fixed order."""

GROUND_TRUTH: dict[str, frozenset[str]] = {
    "keep_agents": frozenset({f"{_MOD}.RewardAgent"}),
    "keep_messages": frozenset({f"{_MOD}.MemoryEventMessage", f"{_MOD}.RewardAgent"}),
    "keep_browser": frozenset({f"{_MOD}.PageSnapshot"}),
    "unbounded_history": frozenset({f"{_MOD}.ChatTurn"}),
}
"""Per toggle, the qualified class names whose live instances grow with tasks when it alone is on.

With ``reuse_agent=True``, ``RewardAgent`` leaks under no toggle (one agent serves every task).
"""

BOUNDED: frozenset[str] = frozenset({f"{_MOD}:_ENCODINGS", "tiktoken.core.Encoding"})
"""Owners that hold memory but never grow past a constant: the one cached Encoding."""


# ---------------------------------------------------------------------------
# Token counting: one Encoding for the whole process (a bounded cache).
# ---------------------------------------------------------------------------

_ENCODINGS: dict[str, tiktoken.Encoding] = {}
"""Vocabulary name -> Encoding, filled on first use. At most one entry per vocabulary."""
_ENCODINGS_LOCK = threading.Lock()


def _encoding(name: str = "cl100k_base") -> tiktoken.Encoding:
    enc = _ENCODINGS.get(name)
    if enc is None:
        with _ENCODINGS_LOCK:
            enc = _ENCODINGS.get(name)
            if enc is None:
                from tokdiag_workloads.vocab import encoding

                enc = _ENCODINGS[name] = encoding(name)
    return enc


def count_tokens(text: str, vocabulary: str = "cl100k_base") -> int:
    """Tokens in ``text`` with the app's cached Encoding (built offline on first use)."""
    return len(_encoding(vocabulary).encode(text, disallowed_special=()))


# ---------------------------------------------------------------------------
# The objects of the app.
# ---------------------------------------------------------------------------


@dataclass(eq=False)
class RewardAgent:
    """Scores a trajectory. Holds only its own state: no reference back to the app.

    ``trajectory`` and ``notes`` are per-task scratch (about 2 KB), reset when the
    agent is reused.
    """

    agent_id: str
    name: str = "reward"
    vocabulary: str = "cl100k_base"
    trajectory: list[dict[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    page: PageSnapshot | None = None
    tasks_done: int = 0
    last_score: float = 0.0

    def reset(self) -> None:
        """Forget the previous task's scratch state."""
        self.trajectory = []
        self.notes = []
        self.page = None

    def score(self, task_id: int, trajectory: list[dict[str, str]], page: PageSnapshot,
              emit: Callable[[MemoryEventMessage], None]) -> float:
        """Score ``trajectory``, publishing one message per step and one for the score."""
        self.trajectory = trajectory
        self.page = page
        total = 0
        for n, item in enumerate(trajectory):
            tokens = count_tokens(item["action"] + "\n" + item["observation"], self.vocabulary)
            total += tokens
            self.notes.append(f"step {n}: {tokens} tokens")
            emit(MemoryEventMessage(topic="agent.step", task_id=task_id, agent=self,
                                    content=item["observation"][:240], tokens=tokens))
        page_tokens = count_tokens(page.html[:2048].decode("utf-8", "replace"), self.vocabulary)
        score = round((total % 97) / 97 * 0.5 + (page_tokens % 89) / 89 * 0.5, 4)
        emit(MemoryEventMessage(topic="agent.score", task_id=task_id, agent=self,
                                content=f"score={score} tokens={total + page_tokens}", tokens=total + page_tokens))
        self.tasks_done += 1
        self.last_score = score
        return score


@dataclass(eq=False)
class MemoryEventMessage:
    """An event on the bus. Holds the agent that emitted it in ``.agent``."""

    topic: str
    task_id: int
    agent: RewardAgent
    content: str
    tokens: int
    timestamp: float = field(default_factory=time.time)


@dataclass(eq=False, slots=True)
class ChatTurn:
    """One turn of the app's conversation history."""

    role: str
    content: str
    tokens: int


@dataclass(frozen=True, eq=False)
class PageSnapshot:
    """What the browser tool saw: the page's HTML and a screenshot, as bytes."""

    url: str
    html: bytes
    screenshot: bytes

    @property
    def nbytes(self) -> int:
        """Payload bytes (HTML + screenshot)."""
        return len(self.html) + len(self.screenshot)


class AgentRegistry:
    """Agents by id. With ``keep_agents`` the app adds every agent and never removes one."""

    def __init__(self) -> None:
        self._agents: dict[str, RewardAgent] = {}

    def add(self, agent: RewardAgent) -> None:
        self._agents[agent.agent_id] = agent

    def __len__(self) -> int:
        return len(self._agents)

    def clear(self) -> None:
        self._agents.clear()


class MemoryStore:
    """Messages kept for replay: a list (``limit=None``, forever) or a ``deque(maxlen=limit)``."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self._messages: MutableSequence[MemoryEventMessage] = (
            [] if limit is None else collections.deque(maxlen=limit))

    def add(self, message: MemoryEventMessage) -> None:
        self._messages.append(message)

    def __len__(self) -> int:
        return len(self._messages)

    def clear(self) -> None:
        self._messages.clear()


class EventBus:
    """Publishes messages to its store and keeps per-topic counters (a bounded dict)."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.counters: dict[str, int] = {}

    def publish(self, message: MemoryEventMessage) -> None:
        self.counters[message.topic] = self.counters.get(message.topic, 0) + 1
        self.store.add(message)


class BrowserSession:
    """Fetches (synthesises) pages; with ``keep=True`` keeps every snapshot by URL."""

    def __init__(self, keep: bool) -> None:
        self.keep = keep
        self._pages: dict[str, PageSnapshot] = {}

    def visit(self, task_id: int) -> PageSnapshot:
        """A deterministic 20-50 KB snapshot for task ``task_id`` (new bytes objects each call)."""
        rng = random.Random(task_id * 7919 + 1)
        size = rng.randint(20_000, 50_000)
        shot = rng.randint(size // 3, size // 2)
        url = f"https://shop.example/search?q=item-{task_id}"
        row = (f"<li class='result' data-task='{task_id}'><a href='/item/{task_id}'>Item {task_id}</a>"
               f"<span class='price'>{rng.randint(1, 999)}.{rng.randint(0, 99):02d}</span></li>\n")
        body = (row * (1 + (size - shot) // len(row))).encode()[: size - shot]
        snap = PageSnapshot(url=url, html=body, screenshot=rng.randbytes(shot))
        if self.keep:
            self._pages[url] = snap
        return snap

    def __len__(self) -> int:
        return len(self._pages)

    def clear(self) -> None:
        self._pages.clear()


class Conversation:
    """The app's chat history; trimmed to ``limit`` turns unless ``limit`` is None."""

    def __init__(self, limit: int | None) -> None:
        self.limit = limit
        self.history: list[ChatTurn] = []

    def append(self, turn: ChatTurn) -> None:
        self.history.append(turn)
        if self.limit is not None and len(self.history) > self.limit:
            del self.history[: len(self.history) - self.limit]

    def clear(self) -> None:
        self.history.clear()


# ---------------------------------------------------------------------------
# The app.
# ---------------------------------------------------------------------------

_ACTIONS = ("search", "open_result", "read_reviews", "compare_prices", "add_to_cart", "check_out")
_SENTENCES: tuple[str, ...] = ()


def _sentences() -> tuple[str, ...]:
    global _SENTENCES
    if not _SENTENCES:
        from tokdiag_workloads.vocab import sample_texts

        text = " ".join(sample_texts())
        _SENTENCES = tuple(s.strip() + "." for s in text.replace("\n", " ").split(".") if len(s.strip()) > 20)
    return _SENTENCES


def _trajectory(task_id: int, steps: int) -> list[dict[str, str]]:
    """A deterministic trajectory of ``steps`` (action, observation) pairs built from real text."""
    rng = random.Random(task_id)
    sents = _sentences()
    return [{"action": f"{rng.choice(_ACTIONS)}(item-{task_id})",
             "observation": f"[task {task_id} step {n}] " + " ".join(rng.choice(sents) for _ in range(3))}
            for n in range(steps)]


class AgentApp:
    """The application: registry, event bus with store, browser, conversation.

    Args:
        keep_agents: the registry keeps every agent (else agents are dropped after their task).
        keep_messages: the store keeps every message in a list (else ``deque(maxlen=store_limit)``).
        keep_browser: the browser keeps every page snapshot (else dropped after the task).
        unbounded_history: the conversation is never trimmed (else trimmed to ``history_limit``).
        fixed: turn all four toggles off (the bounded app); conflicts with any toggle passed as True.
        reuse_agent: one agent serves every task (else a new RewardAgent per task).
        steps_per_task: trajectory steps per task; each emits one message, plus one score message.
        store_limit: messages the bounded store keeps.
        history_limit: turns the bounded conversation keeps.
        vocabulary: the tiktoken vocabulary for token counts (built offline, cached once per process).
        name: label of the app (defaults to ``agent-app-<n>``).

    Each instance is independent: nothing but the one cached Encoding is shared,
    and :meth:`close` (or dropping the last reference) frees everything it holds.
    """

    _ids = itertools.count(1)

    def __init__(
        self,
        *,
        keep_agents: bool | None = None,
        keep_messages: bool | None = None,
        keep_browser: bool | None = None,
        unbounded_history: bool | None = None,
        fixed: bool = False,
        reuse_agent: bool = False,
        steps_per_task: int = 4,
        store_limit: int = 50,
        history_limit: int = 20,
        vocabulary: str = "cl100k_base",
        name: str | None = None,
    ) -> None:
        given = {"keep_agents": keep_agents, "keep_messages": keep_messages,
                 "keep_browser": keep_browser, "unbounded_history": unbounded_history}
        if fixed:
            on = [k for k, v in given.items() if v]
            if on:
                raise ConfigError(f"fixed=True turns every retention toggle off, but {', '.join(f'{k}=True' for k in on)} "
                                  f"was also passed; drop fixed=True or those toggles")
        for label, value, low in (("steps_per_task", steps_per_task, 1), ("store_limit", store_limit, 1),
                                  ("history_limit", history_limit, 0)):
            if not isinstance(value, int) or value < low:
                raise ConfigError(f"{label}={value!r} must be an int >= {low}")
        self.toggles: dict[str, bool] = {k: (not fixed) if v is None else bool(v) for k, v in given.items()}
        self.fixed = fixed
        self.reuse_agent = reuse_agent
        self.steps_per_task = steps_per_task
        self.vocabulary = vocabulary
        self.name = name or f"agent-app-{next(AgentApp._ids)}"
        self.registry = AgentRegistry()
        self.bus = EventBus(MemoryStore(None if self.toggles["keep_messages"] else store_limit))
        self.browser = BrowserSession(keep=self.toggles["keep_browser"])
        self.conversation = Conversation(None if self.toggles["unbounded_history"] else history_limit)
        self._agent: RewardAgent | None = None
        self.tasks_run = 0
        self.closed = False

    @property
    def messages_per_task(self) -> int:
        """MemoryEventMessages published per task: one per step plus the score."""
        return self.steps_per_task + 1

    def _agent_for(self, task_id: int) -> RewardAgent:
        if self.reuse_agent:
            if self._agent is None:
                self._agent = RewardAgent(agent_id=f"{self.name}/reward", vocabulary=self.vocabulary)
            self._agent.reset()
            return self._agent
        return RewardAgent(agent_id=f"{self.name}/reward-{task_id}", vocabulary=self.vocabulary)

    def run_task(self, task_id: int) -> float:
        """Run task ``task_id``: visit a page, score a trajectory, publish, record the chat. Returns the score."""
        if self.closed:
            raise ConfigError(f"{self.name} is closed; create a new AgentApp() to run more tasks")
        agent = self._agent_for(task_id)
        if self.toggles["keep_agents"]:
            self.registry.add(agent)
        trajectory = _trajectory(task_id, self.steps_per_task)
        page = self.browser.visit(task_id)
        prompt = f"Score trajectory {task_id} on {page.url}:\n" + "\n".join(
            f"{s['action']}: {s['observation']}" for s in trajectory)
        self.conversation.append(ChatTurn("user", prompt, count_tokens(prompt, self.vocabulary)))
        score = agent.score(task_id, trajectory, page, self.bus.publish)
        answer = f"Trajectory {task_id} scores {score:.2f}: " + "; ".join(agent.notes)
        self.conversation.append(ChatTurn("assistant", answer, count_tokens(answer, self.vocabulary)))
        agent.page = None  # the browser decides whether the snapshot lives on
        self.tasks_run += 1
        return score

    def close(self) -> None:
        """Drop everything the app holds and unregister it. Idempotent."""
        self.closed = True
        self.registry.clear()
        self.bus.store.clear()
        self.bus.counters.clear()
        self.browser.clear()
        self.conversation.clear()
        self._agent = None
        _APPS.pop(self.name, None)

    def __enter__(self) -> AgentApp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        on = [k for k, v in self.toggles.items() if v]
        return f"<AgentApp {self.name} tasks={self.tasks_run} on={on or ['fixed']}>"


_APPS: dict[str, AgentApp] = {}
"""Apps driven by :func:`agent_workload` step functions, by name: the module-level root of their chains."""


class AgentStep(Protocol):
    """What :func:`agent_workload` returns: ``step(i)`` runs task ``i``; ``step.app`` is the app."""

    app: AgentApp

    def __call__(self, i: int) -> float: ...


def agent_workload(**options: Any) -> AgentStep:
    """A step function ``step(i)`` that runs task ``i`` on a new registered :class:`AgentApp`.

    ``options`` are :class:`AgentApp`'s keyword arguments (the four toggles,
    ``fixed``, ``reuse_agent``, ...). The app is ``step.app`` and lives in
    the module-level ``_APPS`` dict until ``step.app.close()`` is called or
    the step function is garbage collected.

    Example::

        step = agent_workload(keep_browser=False)
        for i in range(10):
            step(i)
        len(step.app.bus.store)   # 50 messages: 10 tasks x 5
    """
    app = AgentApp(**options)
    _APPS[app.name] = app

    def step(i: int) -> float:
        return app.run_task(i)

    step.app = app  # type: ignore[attr-defined]
    step.__qualname__ = step.__name__ = f"agent_workload_step[{app.name}]"
    weakref.finalize(step, _APPS.pop, app.name, None)
    return cast(AgentStep, step)


_VARIANTS: dict[str, dict[str, Any]] = {
    "all on": {},
    **{f"{t} alone": {k: k == t for k in TOGGLES} for t in TOGGLES},
    "fixed": {"fixed": True},
}


def _measure_one(options: dict[str, Any], tasks: int = 1000, warmup: int = 100) -> tuple[float, float]:
    """Growth per task in bytes of one app variant after ``warmup`` tasks: (RSS, tracemalloc). For ``__main__``."""
    import gc
    import tracemalloc

    import psutil

    proc = psutil.Process()
    with AgentApp(**options) as app:
        for i in range(warmup):
            app.run_task(i)
        gc.collect()
        r0 = proc.memory_info().rss
        for i in range(warmup, warmup + tasks):
            app.run_task(i)
        gc.collect()
        rss = (proc.memory_info().rss - r0) / tasks
        tracemalloc.start()
        t0 = tracemalloc.get_traced_memory()[0]
        for i in range(warmup + tasks, warmup + 2 * tasks):
            app.run_task(i)
        gc.collect()
        traced = (tracemalloc.get_traced_memory()[0] - t0) / tasks
        tracemalloc.stop()
        return rss, traced


if __name__ == "__main__":
    # Each variant in a fresh interpreter, so memory freed by one is not reused by the next.
    import json
    import subprocess
    import sys

    for label, opts in _VARIANTS.items():
        code = ("import json, tokdiag_workloads.agents as a; "
                f"print(*a._measure_one(json.loads({json.dumps(json.dumps(opts))})))")
        out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
        rss, traced = map(float, out.stdout.split())
        print(f"{label:24s} RSS {rss / 1024:6.1f} KB/task   tracemalloc {traced / 1024:6.1f} KB/task")
