"""The base of every scenario's step object."""

from __future__ import annotations

from tokdiag_workloads.sample_text import SAMPLE_TEXT

__all__ = ["Scenario"]


class Scenario:
    """Base of the step objects: ``step(i) -> int`` (tokens counted) and ``reset()``.

    Module-level state is shared between step objects of the same scenario:
    creating or resetting one clears what the others built.
    """

    name: str = "scenario"

    def __init__(self, text: str | None) -> None:
        self.text = SAMPLE_TEXT if text is None else text
        self.steps_run = 0

    def __call__(self, i: int) -> int:
        raise NotImplementedError

    def reset(self) -> None:
        """Forget everything this scenario built, including the module-level caches it uses."""
        self.steps_run = 0

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} after {self.steps_run} steps>"
