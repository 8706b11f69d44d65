"""The agent app's toggles, judged by the verdicts (issue #4 against #3).

Each variant of :mod:`tokdiag_workloads.agents` runs under ``td.track`` with
the four retention classes watched; ``analysis.verdicts`` must call ``leak``
exactly the classes that :data:`~tokdiag_workloads.agents.GROUND_TRUTH` names
for the toggles switched on, and nothing else. The bounded paths (the store's
``deque(maxlen=50)``, the 20-turn history) fill within the first 10 tasks, so
60 tasks leave a long flat tail for the verdicts to see.
"""

from __future__ import annotations

from typing import Any

import pytest

import tokdiag as td
from tokdiag_workloads.agents import GROUND_TRUTH, TOGGLES, agent_workload

WATCHED = sorted(set().union(*GROUND_TRUTH.values()))
REWARD_AGENT = "tokdiag_workloads.agents.objects.RewardAgent"
TASKS = 60

VARIANTS: dict[str, tuple[dict[str, Any], frozenset[str]]] = {
    **{f"{t}-alone": ({k: k == t for k in TOGGLES}, GROUND_TRUTH[t]) for t in TOGGLES},
    "all-on": ({}, frozenset(WATCHED)),
    "fixed": ({"fixed": True}, frozenset()),
    # one agent serves every task: no toggle can leak agents, the rest still leak
    "all-on-reused-agent": ({"reuse_agent": True}, frozenset(WATCHED) - {REWARD_AGENT}),
}


def _count_verdicts(options: dict[str, Any]) -> dict[str, str]:
    step = agent_workload(**options)
    try:
        run = td.track(step, steps=TASKS, every=5, watch=WATCHED, census=False, progress=False,
                       why_alive=False)
    finally:
        step.app.close()
    v = run.verdicts()
    v = v[(v["probe"] == "watch") & (v["metric"] == "count")]
    return dict(zip(v["subject"], v["verdict"], strict=True))


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_verdicts_call_leak_exactly_the_owners_switched_on(variant: str) -> None:
    options, leaking = VARIANTS[variant]
    verdicts = _count_verdicts(options)
    assert sorted(verdicts) == WATCHED  # every watched class was judged
    called_leak = {subject for subject, verdict in verdicts.items() if verdict == "leak"}
    assert called_leak == leaking, verdicts
    # what does not leak is recognised as such, not left undecided
    assert all(verdicts[s] in ("bounded", "flat", "step") for s in WATCHED if s not in leaking), verdicts


def test_bounded_store_and_history_are_called_bounded_when_fixed() -> None:
    verdicts = _count_verdicts({"fixed": True})
    # the store and the history fill in the first 10 tasks, then stay at their limits
    assert verdicts["tokdiag_workloads.agents.objects.MemoryEventMessage"] == "bounded"
    assert verdicts["tokdiag_workloads.agents.objects.ChatTurn"] == "bounded"
