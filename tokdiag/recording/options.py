"""Checks of the tracker's arguments: steps, snapshot interval, and the params a journal's header can hold.

Each returns the value it accepts or raises a :class:`~tokdiag.errors.ConfigError`
naming the bad value and the fix:

    >>> check_every("auto"), check_steps(500)
    ('auto', 500)
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from tokdiag.errors import ConfigError

__all__ = ["check_every", "check_params", "check_steps"]


def check_steps(steps: Any) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or steps <= 0:
        raise ConfigError(f"steps={steps!r}: must be a positive integer number of workload steps, e.g. steps=500")
    return steps


def check_every(every: Any) -> int | str:
    if every == "auto":
        return every
    if isinstance(every, bool) or not isinstance(every, int) or every <= 0:
        raise ConfigError(f"every={every!r}: must be a positive integer (snapshot every k steps) or 'auto'")
    return every


def check_params(params: Any) -> dict[str, Any]:
    """``params`` if the journal's header can hold it (strict JSON: no NaN or infinity), else a ConfigError."""
    if params is None:
        return {}
    if not isinstance(params, Mapping):
        raise ConfigError(f"params={params!r:.80}: must be a dict of name: value recorded in the journal's header")
    try:
        json.dumps(dict(params), allow_nan=False, default=str)
    except ValueError:
        where, bad = _non_finite(dict(params), "params")
        raise ConfigError(f"{where}={bad!r}: the journal is strict JSON and cannot hold NaN or infinity; pass None "
                          "or a string such as 'nan' instead") from None
    except (TypeError, RecursionError) as exc:
        raise ConfigError(f"params: cannot be written to the journal ({exc}); use str keys and JSON values") from None
    return dict(params)


def _non_finite(value: Any, where: str) -> tuple[str, Any]:
    """The first NaN or infinity inside ``value`` and where it is (for a message)."""
    if isinstance(value, float) and not math.isfinite(value):
        return where, value
    if isinstance(value, Mapping):
        items: Any = ((f"{where}[{k!r}]", v) for k, v in value.items())
    elif isinstance(value, (list, tuple)):
        items = ((f"{where}[{i}]", v) for i, v in enumerate(value))
    else:
        items = ()
    for sub, v in items:
        found = _non_finite(v, sub)
        if found[0]:
            return found
    return "", None
