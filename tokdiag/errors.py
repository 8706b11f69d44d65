"""Errors raised by tokdiag.

Exception tree::

    TokdiagError                  base of everything tokdiag raises on purpose
    ├── ConfigError               a bad argument: names the value and the fix (also a ValueError)
    ├── TargetError               a "module:attr" target that cannot be imported or resolved
    ├── JournalError              a journal file that cannot be read as a tokdiag journal
    ├── AttachError               `tokdiag attach` cannot record in a process: names the cause and the fix
    └── VocabularyNotFound        no BPE vocabulary on disk for a tokenizer workload

Warnings use :class:`TokdiagWarning` (a ``UserWarning``), e.g. a watch pattern
that matches no class.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterable
from typing import Any


def did_you_mean(word: object, choices: Iterable[str], *, start: str = "", end: str = "") -> str:
    """``start + "did you mean 'x'?" + end`` for the choice closest to ``word``; ``""`` when none is close.

    >>> did_you_mean("stpes", ["steps", "every"], start="; ")
    "; did you mean 'steps'?"
    >>> did_you_mean("zzz", ["steps"])
    ''
    """
    close = difflib.get_close_matches(str(word), list(choices), n=1)
    return f"{start}did you mean {close[0]!r}?{end}" if close else ""


class TokdiagError(Exception):
    """Base class of every error tokdiag raises on purpose."""


class ConfigError(TokdiagError, ValueError):
    """A bad argument. The message names the bad value and says how to fix it."""


class TargetError(TokdiagError, LookupError):
    """A ``"package.module:attr"`` target that cannot be resolved."""


class JournalError(TokdiagError):
    """A file that is not a readable tokdiag journal."""


class AttachError(TokdiagError):
    """``tokdiag attach`` cannot start (or keep) a recorder in a process; the message names the cause and the fix."""


class VocabularyNotFound(TokdiagError, FileNotFoundError):
    """No BPE vocabulary file could be found on disk (tokdiag never downloads one)."""


class TokdiagWarning(UserWarning):
    """Something measured may not mean what you think (e.g. a watch pattern matched nothing)."""


def check_whole(name: str, value: Any, least: int, rule: str) -> int:
    """``value`` if it is an ``int`` (not a bool) of at least ``least``; else ``ConfigError("name=value: rule")``.

    >>> check_whole("steps", 0, 1, "must be a positive integer number of workload steps, e.g. steps=500")
    Traceback (most recent call last):
    tokdiag.errors.ConfigError: steps=0: must be a positive integer number of workload steps, e.g. steps=500
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ConfigError(f"{name}={value!r}: {rule}")
    return value


def check_number(name: str, value: Any, rule: str, *, high: float = math.inf) -> Any:
    """``value`` if it is a number (not a bool) above 0 and below ``high`` (so never NaN);
    else ``ConfigError("name=value: rule")``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < high:
        raise ConfigError(f"{name}={value!r}: {rule}")
    return value
