"""Track a workload in a fresh Python process, so runs do not disturb each other.

RSS is a property of a process, and a process remembers: memory freed by one
workload stays in the allocator's free lists and is handed to the next, so a
second workload run in the same process can look flat when on its own it
would grow by tens of MB (a tiktoken vocabulary loaded for the second time
reuses the pages of the first). The tokenizer scenarios measured in
:mod:`tokdiag.workloads.tokenizers` were each measured in a fresh interpreter
for that reason, and a notebook that compares scenarios side by side should do
the same::

    from tokdiag.record.isolated import track_isolated
    run = track_isolated("tokdiag.workloads.tokenizers:per_instance_load",
                         {"vocab": "cl100k_base", "keep": True},
                         steps=12, every=1, journal="runs/per_instance.jsonl",
                         caches=["tokdiag.workloads.tokenizers:_KEPT_TOKENIZERS"],
                         report=["steps_run"])
    run.verdicts()
    run.events[-1]["values"]          # {"steps_run": 12}

``factory`` names a callable (``"package.module:function"``) that is called
once in the child with ``kwargs`` and returns the step function; the child
runs :func:`tokdiag.track` on it with the given tracker options, writing the
journal, and the parent loads the :class:`~tokdiag.Run` back from the journal
alone (:func:`tokdiag.load`). The child's progress bar is off; its stderr is
kept and shown when it fails. ``report`` names attributes of the step object
to read after the run; their values (made JSON-safe) are appended to the
journal as an ``event`` line ``{"kind": "event", "event": "workload",
"values": {...}}``.

Everything passed must be JSON: factory kwargs and tracker options travel to
the child on its standard input. Caches and watch patterns are given as
strings (``"module:attr"``, class names), as the child resolves them itself.

If the child dies (killed by the OOM killer, a segfault in a C extension),
the journal still holds every finished snapshot; the returned run has status
``"killed"`` and the message says how the child ended.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tokdiag.errors import ConfigError, TargetError, TokdiagError
from tokdiag.record.journal import JournalWriter
from tokdiag.record.run import Run, load

__all__ = ["track_isolated"]

_STDERR_TAIL = 2000
_EXIT_WORKLOAD_ERROR = 2
"""The child's exit status when the workload (or tracking it) raised; its traceback is on stderr."""
_EXIT_BAD_FACTORY = 3
"""The child's exit status when the factory target does not resolve; the message is on stderr."""


def _json_safe(value: Any) -> Any:
    """``value`` as JSON can hold it: containers recursively, anything else as its repr."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_json_safe(v) for v in value]
    if hasattr(value, "__dataclass_fields__"):
        return {name: _json_safe(getattr(value, name)) for name in value.__dataclass_fields__}
    return repr(value)


def check_factory(factory: object) -> None:
    """Raise :class:`ConfigError` unless ``factory`` looks like ``"package.module:function"``."""
    if not isinstance(factory, str) or ":" not in factory:
        raise ConfigError(f"factory={factory!r}: expected 'package.module:function' returning a step function, "
                          "e.g. 'tokdiag.workloads.tokenizers:registry'")


def spec_json(spec: Mapping[str, Any], what: str) -> str:
    """``spec`` as the JSON a child reads on its standard input; :class:`ConfigError` starting with ``what`` if not JSON."""
    try:
        return json.dumps(spec)
    except TypeError as exc:
        raise ConfigError(f"{what}: {exc}") from None


def run_child(module: str, payload: str, timeout: float | None) -> tuple[int | None, str]:
    """Run ``python -m module`` with ``payload`` on its stdin; its exit code (None: timed out) and stderr."""
    try:
        proc = subprocess.run([sys.executable, "-m", module], input=payload, text=True,
                              capture_output=True, timeout=timeout, check=False)
        return proc.returncode, proc.stderr
    except subprocess.TimeoutExpired as exc:
        stderr = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        return None, stderr


def build_step(factory: str, kwargs: Mapping[str, Any]) -> Callable[[int], object]:
    """Call the factory ``"package.module:function"`` with ``kwargs`` and return the step function it makes.

    Runs in the child process. Raises :class:`TargetError` with the whole
    story when the target does not resolve, cannot take ``kwargs`` (a step
    function passed as the factory, most often), or returns something that
    is not callable; exceptions raised by the factory itself propagate.
    """
    from tokdiag.workloads import _resolve

    make = _resolve(factory, "factory")
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


def track_isolated(
    factory: str,
    kwargs: Mapping[str, Any] | None = None,
    *,
    steps: int,
    journal: str | os.PathLike[str],
    report: Sequence[str] = (),
    timeout: float | None = None,
    **options: Any,
) -> Run:
    """Run ``factory(**kwargs)`` as a tracked workload in a child process and return its Run.

    ``options`` are :class:`tokdiag.Tracker` options (``every``, ``watch``,
    ``caches`` as strings, ``census``, ``budget_mb``, ``name``, ...), passed
    through JSON. The journal is overwritten if it exists. ``timeout`` (seconds)
    kills the child when it runs too long; the run then has status ``"killed"``.
    """
    check_factory(factory)
    if "progress" in options:
        raise ConfigError("progress: the child process runs without a progress bar; remove the option")
    spec = {"factory": factory, "kwargs": dict(kwargs or {}), "steps": steps, "journal": str(journal),
            "report": list(report), "options": options}
    payload = spec_json(spec, "track_isolated: kwargs and options must be JSON values (strings for caches and "
                              "watch patterns)")
    Path(journal).parent.mkdir(parents=True, exist_ok=True)
    Path(journal).unlink(missing_ok=True)
    returncode, stderr = run_child("tokdiag.record.isolated", payload, timeout)
    if returncode == _EXIT_BAD_FACTORY:
        raise TargetError(stderr.strip())
    if not Path(journal).exists() or Path(journal).stat().st_size == 0:
        raise TokdiagError(f"track_isolated({factory!r}): the child process wrote no journal "
                           f"(exit code {returncode}); its stderr ends with:\n{stderr[-_STDERR_TAIL:]}")
    run = load(journal)
    if returncode == _EXIT_WORKLOAD_ERROR:  # the workload raised in the child: raise here, with the child's traceback
        raise TokdiagError(f"track_isolated({factory!r}) failed in the child process (the journal {str(journal)!r} "
                           f"keeps the snapshots taken before):\n{stderr[-_STDERR_TAIL:]}")
    if returncode != 0:
        how = f"timed out after {timeout} s" if returncode is None else f"ended with exit code {returncode}"
        run.status = "killed"
        run.message = f"child process {how}; stderr: {stderr[-_STDERR_TAIL:].strip() or '(empty)'}"
    return run


def _child() -> int:  # pragma: no cover - runs in the child process (covered by tests through subprocess)
    import tokdiag as td

    spec = json.loads(sys.stdin.read())
    try:
        step = build_step(spec["factory"], spec["kwargs"])
    except TargetError as exc:  # a bad target: the message says it all, no traceback needed
        print(exc, file=sys.stderr)
        return _EXIT_BAD_FACTORY
    try:
        td.track(step, steps=spec["steps"], journal=spec["journal"], overwrite=True, progress=False,
                 **spec["options"])
    except Exception:
        import traceback

        traceback.print_exc()
        return _EXIT_WORKLOAD_ERROR
    values = {name: _json_safe(getattr(step, name, None)) for name in spec["report"]}
    with JournalWriter(spec["journal"], None) as journal:  # appended after the run's end line
        journal.event("workload", values=values)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(_child())
