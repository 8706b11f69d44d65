"""Checks of the recording's arguments (the tracker's and the service recorder's): steps, snapshot interval,
what a recorder's step is, numbers, caches, and the params a journal's header can hold.

Each returns the value it accepts or raises a :class:`~tokdiag.errors.ConfigError`
naming the bad value and the fix:

    >>> check_every("auto"), check_steps(500), check_caches("myapp.llm:_TOKENIZERS")
    ('auto', 500, ['myapp.llm:_TOKENIZERS'])
    >>> check_number("overhead", 1.5, "must be a fraction of run time between 0 and 1", high=1)
    Traceback (most recent call last):
    tokdiag.errors.ConfigError: overhead=1.5: must be a fraction of run time between 0 and 1
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from tokdiag.errors import ConfigError, check_number, check_whole
from tokdiag.probes import CacheSpec

__all__ = ["PER", "check_caches", "check_every", "check_number", "check_params", "check_per", "check_steps",
           "check_whole"]

PER = ("second", "request")
"""What a step of a service recorder is (its ``per``)."""


def check_steps(steps: Any) -> int:
    return check_whole("steps", steps, 1, "must be a positive integer number of workload steps, e.g. steps=500")


def check_every(every: Any) -> int | str:
    if every == "auto":
        return every
    return check_whole("every", every, 1, "must be a positive integer (snapshot every k steps) or 'auto'")


def check_per(per: Any, every_s: Any, every_requests: Any) -> float:
    """``every_s`` as a float if a service recorder's ``per``, ``every_s`` and ``every_requests`` agree: a step
    is a whole second (so ``every_s >= 1``) or a request (then a snapshot every ``every_requests`` too, if given)."""
    if per not in PER:
        raise ConfigError(f"per={per!r}: a step is a 'second' (default) or a 'request' (counted by the "
                          "middleware or recorder.count_request())")
    seconds = float(check_number("every_s", every_s, "must be a positive number, e.g. every_s=60"))
    if every_requests is not None:
        check_whole("every_requests", every_requests, 1, "must be a positive number of requests or None")
    if per == "second" and seconds < 1:
        raise ConfigError(f"every_s={every_s!r}: with per='second' a step is a whole second, so snapshots "
                          "are at least 1 s apart; pass every_s>=1 (or per='request')")
    if every_requests is not None and per != "request":
        raise ConfigError(f"every_requests={every_requests} needs per='request' (steps counted as requests)")
    return seconds


def check_caches(caches: Any) -> Any:
    """``caches`` as a list: one ``"module:attr"`` string (or :func:`tokdiag.cache` spec) alone is a list of one;
    a mapping is refused (the tracker takes a list of caches, not one cache's contents)."""
    if isinstance(caches, (str, CacheSpec)):
        return [caches]
    if isinstance(caches, Mapping):
        raise ConfigError(f"caches is a {type(caches).__name__} of {len(caches)} entries; to measure that "
                          "object as a cache pass caches=[it] (caches takes a list of caches)")
    return caches


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
