"""The agent application: one task per step, every retention path on a switch.

:class:`AgentApp` wires the objects of :mod:`tokdiag_workloads.agents.objects`
together; :func:`agent_workload` makes a step function of one, registered in
the module-level ``_APPS`` dict (the root of its why-alive chains) until the
step function is garbage collected or ``step.app.close()`` is called.
:data:`GROUND_TRUTH` and :data:`BOUNDED` say what a correct measurement finds.
"""

from __future__ import annotations

import itertools
import random
import weakref
from typing import Any, Protocol, cast

from tokdiag.errors import ConfigError
from tokdiag_workloads.agents import objects
from tokdiag_workloads.agents.objects import (
    AgentRegistry,
    BrowserSession,
    ChatTurn,
    Conversation,
    EventBus,
    MemoryStore,
    RewardAgent,
    count_tokens,
)
from tokdiag_workloads.sample_text import sample_texts

__all__ = ["BOUNDED", "GROUND_TRUTH", "TOGGLES", "AgentApp", "AgentStep", "agent_workload"]

_MOD = objects.__name__  # the module that defines the app's classes

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


_ACTIONS = ("search", "open_result", "read_reviews", "compare_prices", "add_to_cart", "check_out")
_SENTENCES: tuple[str, ...] = ()


def _sentences() -> tuple[str, ...]:
    global _SENTENCES
    if not _SENTENCES:
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
                raise ConfigError(
                    f"fixed=True turns every retention toggle off, but {', '.join(f'{k}=True' for k in on)} "
                    f"was also passed; drop fixed=True or those toggles"
                )
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
