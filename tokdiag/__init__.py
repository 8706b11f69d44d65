"""tokdiag: find where memory accumulates in long-running LLM agent services."""

from __future__ import annotations

__version__ = "0.1.0"
