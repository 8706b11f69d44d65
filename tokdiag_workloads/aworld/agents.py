"""Real AWorld agent tasks as a step function, against a local chat-completions stub.

:func:`agent_step` / :func:`aworld_agent_workload`: per step, a
:class:`RewardAgent` (a subclass of ``aworld.agents.llm_agent.Agent``, made
when first asked for since it needs aworld) is run by
``aworld.runner.Runners.sync_run`` against a local OpenAI-compatible stub on
127.0.0.1 (:mod:`tokdiag_workloads.aworld.stub_server`), configured through
AWorld's own ``AgentConfig(llm_provider="openai", llm_base_url=<stub>,
llm_api_key="stub-key")``; optionally streamed (``llm_stream_call=True``) and
with a tool call (a local function tool registered with AWorld's
``function_to_tool``). A new agent per task keeps every agent alive (AWorld's
agent registry, then its run-state storage); the chains and the per-task
figures are in ``docs/workloads.md``.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import weakref
from collections.abc import Iterator, Sequence
from typing import Any

from tokdiag.errors import ConfigError, TokdiagError
from tokdiag_workloads.aworld.sandbox import import_aworld, inside_sandbox, sandbox
from tokdiag_workloads.aworld.stub_server import DEFAULT_REPLY, StubServer
from tokdiag_workloads.sample_text import sample_texts

__all__ = ["AgentTaskStep", "RewardAgent", "agent_step", "aworld_agent_workload", "score_trajectory"]  # noqa: F822  (RewardAgent is made on first use by the module __getattr__)


_TOOL_NAME = "score_trajectory"
_TOOL_LOCK = threading.Lock()


def score_trajectory(trajectory_id: str, steps: int) -> str:
    """Score one trajectory by id (the function tool a :class:`RewardAgent` may call)."""
    return f"trajectory {trajectory_id}: {steps} steps, score {round(1.0 / (1 + abs(int(steps) - 3)), 3)}"


def _register_tool() -> None:
    """Register :func:`score_trajectory` with AWorld's ToolFactory once per process."""
    with _TOOL_LOCK:
        from aworld.core.tool.base import ToolFactory

        if _TOOL_NAME in ToolFactory:
            return
        from aworld.core.tool.func_to_tool import function_to_tool

        with inside_sandbox():
            function_to_tool(score_trajectory, tool_name=_TOOL_NAME, tool_desc="Score agent trajectories.",
                             name="score", desc="Score one trajectory by id and number of steps.")


_REWARD_AGENT: type | None = None


def _reward_agent_class() -> type:
    """``RewardAgent``, a subclass of AWorld's ``Agent``, created on first use (needs aworld)."""
    global _REWARD_AGENT
    if _REWARD_AGENT is None:
        import_aworld()
        from aworld.agents.llm_agent import Agent

        class RewardAgent(Agent):  # type: ignore[misc, valid-type]
            """An AWorld ``Agent`` that scores trajectories; counts the tasks it ran."""

            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                self.tasks_scored = 0

        RewardAgent.__module__ = __name__
        RewardAgent.__qualname__ = "RewardAgent"
        _REWARD_AGENT = RewardAgent
    return _REWARD_AGENT


def __getattr__(name: str) -> Any:
    if name == "RewardAgent":
        return _reward_agent_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_SYSTEM_PROMPT = ("You are a reward model. Score the agent trajectory you are given between 0 and 1 "
                  "and explain the score in one sentence.")


class AgentTaskStep:
    """A step function running one real AWorld agent task per step; see :func:`agent_step`.

    Attributes:
        server: the :class:`~tokdiag_workloads.aworld.stub_server.StubServer` it talks to.
        tasks_run: tasks finished; ``last_answer`` the last task's answer.
    """

    _ids = itertools.count(1)

    def __init__(self, tasks: int | Sequence[str] | None, reuse_agent: bool, stream: bool, tool_calls: bool,
                 unregister_agents: bool, session_id: str | None, reply: str) -> None:
        if isinstance(tasks, int) and not isinstance(tasks, bool):
            if tasks < 1:
                raise ConfigError(f"tasks={tasks!r} must be >= 1 (the number of distinct task prompts), "
                                  f"a list of prompts, or None for a new prompt per step")
            prompts: tuple[str, ...] | None = tuple(_prompt(k) for k in range(tasks))
        elif tasks is None:
            prompts = None
        elif isinstance(tasks, Sequence) and tasks and all(isinstance(t, str) and t for t in tasks):
            prompts = tuple(tasks)
        else:
            raise ConfigError(f"tasks={tasks!r} must be an int >= 1, a non-empty list of prompt strings, or None")
        import_aworld()
        from aworld.config.conf import AgentConfig

        self.reuse_agent, self.stream, self.tool_calls = reuse_agent, stream, tool_calls
        self.unregister_agents, self.session_id = unregister_agents, session_id
        self._prompts = prompts
        self._cls = _reward_agent_class()
        if tool_calls:
            _register_tool()
        self.server = StubServer(tool_calls=tool_calls, reply=reply).start()
        self._finalizer = weakref.finalize(self, self.server.stop)
        self.name = f"aworld-agents-{next(AgentTaskStep._ids)}"
        self.conf = AgentConfig(llm_provider="openai", llm_model_name=self.server.model,
                                llm_base_url=self.server.base_url, llm_api_key="stub-key",
                                llm_stream_call=stream)
        self._agent: Any = None
        self.tasks_run = 0
        self.last_answer: str | None = None
        self.closed = False

    def _new_agent(self) -> Any:
        return self._cls(name="reward", conf=self.conf, system_prompt=_SYSTEM_PROMPT,
                         tool_names=[_TOOL_NAME] if self.tool_calls else None,
                         llm_max_attempts=1)

    def prompt(self, i: int) -> str:
        """The task input of step ``i``."""
        return _prompt(i) if self._prompts is None else self._prompts[i % len(self._prompts)]

    def __call__(self, i: int) -> str:
        if self.closed:
            raise ConfigError(f"{self.name} is closed (its stub server stopped); make a new agent_step(...)")
        from aworld.core.agent.base import AgentFactory
        from aworld.runner import Runners

        with inside_sandbox():
            if self.reuse_agent:
                if self._agent is None:
                    self._agent = self._new_agent()
                agent = self._agent
            else:
                agent = self._new_agent()
            resp = Runners.sync_run(input=self.prompt(i), agent=agent, session_id=self.session_id)
            if self.unregister_agents and not self.reuse_agent:
                AgentFactory.unregister(agent.id())
        if resp is None or not resp.success:
            msg = getattr(resp, "msg", None)
            raise TokdiagError(f"aworld task {i} failed: {msg!r} (stub at {self.server.base_url}, "
                               f"{self.server.request_count} requests so far); see the logs in {sandbox().logs}")
        agent.tasks_scored += 1
        self.tasks_run += 1
        self.last_answer = str(resp.answer)
        return self.last_answer

    def close(self) -> None:
        """Stop the stub server and drop the reused agent. Idempotent."""
        self.closed = True
        self._agent = None
        self._finalizer()

    def __enter__(self) -> AgentTaskStep:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<AgentTaskStep {self.name} tasks_run={self.tasks_run} reuse_agent={self.reuse_agent} "
                f"stream={self.stream} tool_calls={self.tool_calls}>")


def _prompt(k: int) -> str:
    english = sample_texts()[0].split("\n\n")
    return (f"Trajectory {k}: the agent searched for item-{k}, opened two results and compared prices. "
            f"Context: {english[k % len(english)][:400]}")


def agent_step(
    tasks: int | Sequence[str] | None = None,
    *,
    reuse_agent: bool = False,
    stream: bool = False,
    tool_calls: bool = False,
    unregister_agents: bool = False,
    session_id: str | None = None,
    reply: str = DEFAULT_REPLY,
) -> AgentTaskStep:
    """A step function ``step(i)`` that runs one real AWorld agent task against a local stub.

    The stub server starts now and stops on ``step.close()``, when the step is
    garbage collected, or at interpreter exit (``weakref.finalize``); prefer
    :func:`aworld_agent_workload`, which always stops it.

    Args:
        tasks: the task prompts, cycled by step index: an int (that many
            generated prompts), a list of strings, or None (a new prompt per step).
        reuse_agent: one :class:`RewardAgent` for every task (else a new one per task).
        stream: AWorld's ``llm_stream_call=True``: the model is called with
            ``stream: true`` and the stub answers with server-sent events.
        tool_calls: give the agent the ``score_trajectory`` function tool; the
            stub calls it on the first request of each task, then answers.
        unregister_agents: after each task, ``AgentFactory.unregister(agent.id())``
            (the obvious fix for AWorld's agent registry; agents stay alive
            through AWorld's run-state storage anyway: ``docs/workloads.md``).
        session_id: passed to ``Runners.sync_run`` (None: AWorld makes one).
        reply: the stub's canned answer.
    """
    return AgentTaskStep(tasks, reuse_agent, stream, tool_calls, unregister_agents, session_id, reply)


@contextlib.contextmanager
def aworld_agent_workload(
    tasks: int | Sequence[str] | None = None,
    *,
    reuse_agent: bool = False,
    stream: bool = False,
    tool_calls: bool = False,
    unregister_agents: bool = False,
    session_id: str | None = None,
    reply: str = DEFAULT_REPLY,
) -> Iterator[AgentTaskStep]:
    """:func:`agent_step` as a context manager: the stub server is stopped when the block ends.

    Example::

        with aworld_agent_workload(reuse_agent=True, tool_calls=True) as step:
            for i in range(3):
                step(i)
            step.server.request_count     # 6: a tool call and an answer per task
    """
    step = agent_step(tasks, reuse_agent=reuse_agent, stream=stream, tool_calls=tool_calls,
                      unregister_agents=unregister_agents, session_id=session_id, reply=reply)
    try:
        yield step
    finally:
        step.close()
