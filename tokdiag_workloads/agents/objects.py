"""What the agent app is made of: the agent, its messages, the stores that keep them.

A :class:`RewardAgent` scores a trajectory and publishes
:class:`MemoryEventMessage` objects (each holds its agent in ``.agent``) on an
:class:`EventBus` whose :class:`MemoryStore` keeps them; a :class:`Conversation`
keeps :class:`ChatTurn` s; a :class:`BrowserSession` takes a
:class:`PageSnapshot` (20-50 KB of bytes) of each page; :func:`count_tokens`
uses one cached ``tiktoken.Encoding`` per vocabulary for the whole process
(``_ENCODINGS``, a bounded cache). How the app wires them, and which of them
keep what: :mod:`tokdiag_workloads.agents.app`.
"""

from __future__ import annotations

import collections
import random
import threading
import time
from collections.abc import Callable, MutableSequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tokdiag_workloads.vocab import encoding

if TYPE_CHECKING:
    import tiktoken

__all__ = [
    "AgentRegistry",
    "BrowserSession",
    "ChatTurn",
    "Conversation",
    "EventBus",
    "MemoryEventMessage",
    "MemoryStore",
    "PageSnapshot",
    "RewardAgent",
    "count_tokens",
]


_ENCODINGS: dict[str, tiktoken.Encoding] = {}
"""Vocabulary name -> Encoding, filled on first use. At most one entry per vocabulary."""
_ENCODINGS_LOCK = threading.Lock()


def _encoding(name: str = "cl100k_base") -> tiktoken.Encoding:
    enc = _ENCODINGS.get(name)
    if enc is None:
        with _ENCODINGS_LOCK:
            enc = _ENCODINGS.get(name)
            if enc is None:
                enc = _ENCODINGS[name] = encoding(name)
    return enc


def count_tokens(text: str, vocabulary: str = "cl100k_base") -> int:
    """Tokens in ``text`` with the app's cached Encoding (built offline on first use)."""
    return len(_encoding(vocabulary).encode(text, disallowed_special=()))


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
