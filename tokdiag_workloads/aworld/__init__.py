"""The real AWorld 0.3.2 package under the microscope, offline.

Needs the ``aworld`` extra (``pip install 'tokdiag[aworld]'``). ``aworld`` is
imported lazily, inside functions, never when this package is imported; when
it is not importable, :class:`~tokdiag.errors.TokdiagError` says how to
install it. Two kinds of workload, each a step function ``step(i)``:

- :func:`tokenizer_workload` (:mod:`~tokdiag_workloads.aworld.tokenizer`):
  AWorld's token-counting paths as shipped, or under
  :class:`Pr765Patch` (:mod:`~tokdiag_workloads.aworld.pr765`), an emulation
  of PR #765's caches applied at run time.
- :func:`aworld_agent_workload` / :func:`agent_step`
  (:mod:`~tokdiag_workloads.aworld.agents`): real agent tasks run by AWorld's
  runner against a local chat-completions stub
  (:mod:`~tokdiag_workloads.aworld.stub_server`).

AWorld's log, tool and memory files go to a private directory that is deleted
at exit (:mod:`~tokdiag_workloads.aworld.sandbox`: :func:`import_aworld`).
Everything runs offline. What was measured on these workloads, and how:
``docs/workloads.md``.
"""

from __future__ import annotations

from typing import Any

from tokdiag_workloads.aworld.agents import AgentTaskStep, agent_step, aworld_agent_workload, score_trajectory
from tokdiag_workloads.aworld.pr765 import Pr765Patch, pr765_active
from tokdiag_workloads.aworld.sandbox import AworldSandbox, import_aworld, sandbox
from tokdiag_workloads.aworld.tokenizer import TOKENIZER_CALLS, TokenizerStep, tokenizer_workload

__all__ = [
    "TOKENIZER_CALLS",
    "AgentTaskStep",
    "AworldSandbox",
    "Pr765Patch",
    "RewardAgent",
    "TokenizerStep",
    "agent_step",
    "aworld_agent_workload",
    "import_aworld",
    "pr765_active",
    "sandbox",
    "score_trajectory",
    "tokenizer_workload",
]


def __getattr__(name: str) -> Any:
    """``RewardAgent`` subclasses AWorld's ``Agent``: it is made on first use (needs aworld)."""
    if name == "RewardAgent":
        from tokdiag_workloads.aworld import agents

        return agents.RewardAgent
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
