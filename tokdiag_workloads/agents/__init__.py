"""A small agent application in pure Python, with every retention path on a switch.

This reproduces the objects argued about in AWorld PR #765 (see
``DESIGN.md``) without importing AWorld (:mod:`~tokdiag_workloads.agents.objects`
holds them, :mod:`~tokdiag_workloads.agents.app` the app): per task a :class:`RewardAgent`
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
why-alive chain reads ``module tokdiag_workloads.agents.app ->
_APPS["agent-app-1"] -> AgentApp.bus -> EventBus.store ->
MemoryStore._messages[12] -> MemoryEventMessage.agent -> RewardAgent``; the
entry goes away when the step function is garbage collected or
``step.app.close()`` is called. What each variant costs per task, and the
command that measured it: ``docs/workloads.md``.
"""

from __future__ import annotations

from tokdiag_workloads.agents.app import BOUNDED, GROUND_TRUTH, TOGGLES, AgentApp, AgentStep, agent_workload
from tokdiag_workloads.agents.objects import (
    AgentRegistry,
    BrowserSession,
    ChatTurn,
    Conversation,
    EventBus,
    MemoryEventMessage,
    MemoryStore,
    PageSnapshot,
    RewardAgent,
    count_tokens,
)

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
