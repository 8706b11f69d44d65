"""The factory a child process builds its step function from: ``"package.module:function"`` and JSON kwargs.

Shared by :func:`tokdiag.recording.isolated.track_isolated` and
:func:`tokdiag.recording.native_trace.trace_native`: the parent checks the
factory's form (:func:`check_factory`) and sends the spec as strict JSON
(:func:`spec_json`); the child resolves and calls it (:func:`build_step`)
and reports values back as JSON (:func:`json_safe`).

    >>> json_safe({"n": 1, "tokens": (1, 2), "model": object()})["tokens"]
    [1, 2]
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from tokdiag.errors import ConfigError, TargetError

__all__ = ["build_step", "check_factory", "json_safe", "spec_json"]


def json_safe(value: Any) -> Any:
    """``value`` as JSON can hold it: containers recursively, anything else as its repr."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_safe(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        return {name: json_safe(getattr(value, name)) for name in value.__dataclass_fields__}
    return repr(value)



def check_factory(factory: object) -> None:
    """Raise :class:`ConfigError` unless ``factory`` looks like ``"package.module:function"``."""
    if not isinstance(factory, str) or ":" not in factory:
        raise ConfigError(f"factory={factory!r}: expected 'package.module:function' returning a step function, "
                          "e.g. 'myapp.jobs:make_step'")


def spec_json(spec: Mapping[str, Any], what: str) -> str:
    """``spec`` as the JSON a child reads on its standard input; :class:`ConfigError` starting with ``what`` if not
    JSON."""
    try:
        return json.dumps(spec, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{what}: {exc}") from None


def build_step(factory: str, kwargs: Mapping[str, Any]) -> Callable[[int], object]:
    """Call the factory ``"package.module:function"`` with ``kwargs`` and return the step function it makes.

    Runs in a child process. Raises :class:`TargetError` with the whole
    story when the target does not resolve, cannot take ``kwargs`` (a step
    function passed as the factory, most often), or returns something that
    is not callable; exceptions raised by the factory itself propagate.
    """
    import inspect

    from tokdiag.recording.targets import resolve_callable

    make = resolve_callable(factory, "factory")
    try:
        inspect.signature(make).bind(**kwargs)
    except TypeError as exc:
        raise TargetError(
            f"factory {factory!r} cannot be called with kwargs {dict(kwargs)!r} ({exc}); the child process calls "
            "the factory once and runs the step function it returns: pass a factory such as "
            "def make(**kwargs): return step  (not step(i) itself)") from None
    except ValueError:  # no signature to read (a builtin): let the call say
        pass
    step = make(**kwargs)
    if not callable(step):
        raise TargetError(f"factory {factory!r} returned {type(step).__name__}, not a step function; it must return "
                          "a callable taking the step index (was a step function passed as the factory?)")
    return step
