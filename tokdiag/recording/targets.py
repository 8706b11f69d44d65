"""The one resolver of ``"package.module:attr"`` targets, and your own step function from one.

A target names an object by the module that holds it and the attribute path
inside it: ``"myapp.jobs:handle_one"``, ``"myapp.jobs:Runner.step"``,
``"tiktoken.registry:ENCODINGS"``. Everything in tokdiag that takes such a
name resolves it here: the cache probe (:func:`tokdiag.cache`, at every
snapshot), :func:`tokdiag.track_isolated`'s factory (in the child process),
and :func:`load`, which turns a target into a step function for the tracker
(the ``your_workload`` notebook's ``target`` and ``setup`` parameters).

:func:`resolve` returns the object; :func:`resolve_callable` also checks that
it can be called. Both raise :class:`~tokdiag.errors.TargetError` naming the
role of the target (``"target"``, ``"setup"``, ``"factory"``, ``"cache"``),
the bad value and the fix: a malformed target (no colon: ``"myapp.jobs.handle"``
gets "did you mean 'myapp.jobs:handle'?"), a module that is
not found (with close names of its siblings), a module found but failing to
import (with the import error), or an attribute that is not found (with the
closest name).

>>> resolve("tiktoken.registry:ENCODINGS", "cache") is __import__("tiktoken.registry").registry.ENCODINGS
True
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Callable
from types import ModuleType
from typing import Any

from tokdiag.errors import TargetError, did_you_mean

__all__ = ["ATTRIBUTE", "FUNCTION", "BoundStep", "load", "resolve", "resolve_callable"]

FUNCTION = "'package.module:function', e.g. 'myapp.jobs:handle_one'"
"""What a step, setup or factory target looks like (for error messages)."""

ATTRIBUTE = "'package.module:attribute', e.g. 'tiktoken.registry:ENCODINGS'"
"""What a cache target looks like (for error messages)."""


class BoundStep:
    """A two-argument step ``step(state, i)`` with its ``state`` bound: call it as ``bound(i)``.

    :func:`load` returns one when the ``setup`` target returns a value. The
    state stays reachable as ``.state`` (it is what the workload works on, so a
    why-alive chain through it is expected).
    """

    __slots__ = ("func", "state", "target")

    def __init__(self, func: Callable[[Any, int], object], state: object, target: str) -> None:
        self.func = func
        self.state = state
        self.target = target

    def __call__(self, i: int) -> object:
        return self.func(self.state, i)

    def __repr__(self) -> str:
        return f"<BoundStep {self.target} with state {type(self.state).__qualname__}>"


def _import(module_name: str, target: str, role: str) -> ModuleType:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        if missing == module_name or module_name.startswith(missing + "."):
            hint = ""
            parent_name, _, leaf = module_name.rpartition(".")
            if parent_name and missing == module_name:
                try:
                    parent = importlib.import_module(parent_name)
                    names = [m.name for m in pkgutil.iter_modules(getattr(parent, "__path__", []))]
                    hint = did_you_mean(leaf, names, start=" (", end=")")
                except ImportError:
                    pass
            raise TargetError(
                f"{role} {target!r}: module {module_name!r} not found (no module named {missing!r}){hint}, so it "
                f"cannot be imported; check the spelling, or install the package that provides it (or put its "
                f"folder on sys.path)"
            ) from exc
        raise TargetError(
            f"{role} {target!r}: module {module_name!r} exists but importing it failed, because it imports "
            f"{missing!r}, which is not installed ({type(exc).__name__}: {exc}); install {missing!r} "
            f"in this environment"
        ) from exc
    except Exception as exc:
        raise TargetError(
            f"{role} {target!r}: importing module {module_name!r} raised {type(exc).__name__}: {exc}; "
            f"fix the module so it imports cleanly"
        ) from exc


def _with_colon(dotted: str) -> str:
    """``"myapp.jobs.handle"`` as a target: the longest prefix that is a module, a colon, the rest ("" if no dot).

    Looks modules up with :func:`importlib.util.find_spec` (which imports the
    parent packages, as resolving the target would); with no module found,
    the last dot becomes the colon.
    """
    import importlib.util

    parts = dotted.split(".")
    if len(parts) < 2 or not all(p.isidentifier() for p in parts):
        return ""
    for k in range(len(parts) - 1, 0, -1):
        try:
            found = importlib.util.find_spec(".".join(parts[:k])) is not None
        except Exception:  # a parent that is missing or fails to import: try a shorter prefix
            found = False
        if found:
            return f"{'.'.join(parts[:k])}:{'.'.join(parts[k:])}"
    return f"{'.'.join(parts[:-1])}:{parts[-1]}"


def resolve(target: object, role: str = "target", *, expected: str = ATTRIBUTE) -> Any:
    """The object that ``"package.module:attr.sub"`` names, importing the module if needed.

    ``role`` names the target in error messages (``"cache"``, ``"factory"``,
    ...); ``expected`` says what a good target looks like (:data:`ATTRIBUTE`
    or :data:`FUNCTION`). Raises :class:`~tokdiag.errors.TargetError`.
    """
    if not isinstance(target, str):
        raise TargetError(f"{role} must be a string, got {target!r} ({type(target).__name__}); expected {expected}")
    module_name, colon, attr_path = target.partition(":")
    module_name, attr_path = module_name.strip(), attr_path.strip()
    if not colon or not module_name or not attr_path or ":" in attr_path:
        hint = _with_colon(target.strip()) if not colon else ""
        raise TargetError(f"{role} {target!r} is malformed: expected {expected}"
                          + (f"; did you mean {hint!r}?" if hint else ""))

    obj: object = _import(module_name, target, role)
    owner = module_name
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            names = [n for n in dir(obj) if not n.startswith("__")]
            raise TargetError(
                f"{role} {target!r}: {owner!r} has no attribute {part!r}"
                f"{did_you_mean(part, names, start=' (', end=')')}; expected {expected}"
            ) from None
        owner = f"{owner}:{part}" if owner == module_name else f"{owner}.{part}"
    return obj


def resolve_callable(target: object, role: str = "target") -> Callable[..., object]:
    """:func:`resolve` for a function (a step, a setup, a factory): raises when the object is not callable."""
    obj = resolve(target, role, expected=FUNCTION)
    if not callable(obj):
        shown = "" if issubclass(type(obj), ModuleType) else f" ({obj!r:.60})"
        raise TargetError(
            f"{role} {target!r} is a {type(obj).__name__}{shown}, not callable; expected a function"
            + (" taking the step index" if role == "target" else "")
        )
    return obj


def _accepts(func: Callable[..., object], n_args: int) -> tuple[bool, str]:
    """Whether ``func`` can be called with ``n_args`` positional arguments, and its signature text."""
    try:
        sig = inspect.signature(func)
    except (TypeError, ValueError):
        return True, "(?)"  # builtins without a signature: let the call decide
    try:
        sig.bind(*range(n_args))
    except TypeError:
        return False, str(sig)
    return True, str(sig)


def _require_args(func: Callable[..., object], n_args: int, problem: Callable[[str], str]) -> None:
    """A :class:`TargetError` with ``problem(signature)`` when ``func`` cannot take ``n_args`` positional arguments."""
    ok, sig = _accepts(func, n_args)
    if not ok:
        raise TargetError(problem(sig))


def load(target: str, setup: str | None = None) -> Callable[[int], object]:
    """Resolve ``"package.module:function"`` into a step function ``step(i)``.

    ``target`` names a callable taking the step index (``def step(i): ...``);
    the part after the colon may be dotted (``"app.jobs:Runner.step"``).

    ``setup``, also ``"module:function"``, is called once, now, with no
    arguments. If it returns something other than ``None``, that value is the
    workload's state and the target must take it first: ``def step(state, i)``;
    the result is then a :class:`BoundStep` called as ``step(i)``. Running
    setup here keeps its one-off cost out of the tracked steps.

    Raises :class:`~tokdiag.errors.TargetError` naming the bad target and what
    was expected: a malformed target (no colon), a module that is not found
    (or that was found but failed to import, with the import error), an
    attribute that is not found (with the closest name), an attribute that is
    not callable, or a signature that cannot take the step index. An exception
    raised by setup itself propagates unchanged, with a note naming setup.

    Example::

        step = load("myapp.jobs:handle_one")                          # def handle_one(i)
        step = load("myapp.jobs:handle_one", setup="myapp.jobs:make_app")  # def handle_one(app, i)
        step(0)
    """
    func = resolve_callable(target, "target")
    if setup is None:
        _require_args(func, 1, lambda sig: (
            f"target {target!r} has signature {sig} and cannot be called as step(i); expected a "
            f"function taking one positional argument, the step index (def step(i): ...), or pass "
            f"setup= for a step(state, i)"
        ))
        return func

    setup_func = resolve_callable(setup, "setup")
    _require_args(setup_func, 0, lambda sig: (
        f"setup {setup!r} has signature {sig} and cannot be called without arguments; expected a "
        f"function taking no arguments that returns the workload's state (or None)"
    ))
    try:
        state = setup_func()
    except Exception as exc:
        exc.add_note(f"raised by tokdiag setup {setup!r}")
        raise

    if state is None:
        _require_args(func, 1, lambda sig: (
            f"target {target!r} has signature {sig}; setup {setup!r} returned None, so the target is "
            f"called as step(i): expected a function taking one positional argument, the step index"
        ))
        return func

    _require_args(func, 2, lambda sig: (
        f"target {target!r} has signature {sig}; setup {setup!r} returned a "
        f"{type(state).__name__}, so the target is called as step(state, i): expected a function "
        f"taking two positional arguments (def step(state, i): ...), or make setup return None"
    ))
    return BoundStep(func, state, target)
