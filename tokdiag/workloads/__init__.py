"""Built-in workloads, and the adapter for your own.

A workload is a step function: ``step(i)`` does one unit of work for step
index ``i``. The tracker calls it ``steps`` times and takes snapshots in
between. The built-in ones reproduce the situations argued about in AWorld's
PR #765 (see ``DESIGN.md``), on real vocabularies and without network access:

``tokdiag.workloads.vocab``
    Offline BPE vocabularies: :func:`~tokdiag.workloads.vocab.find_vocabulary`
    (explicit path, tiktoken's cache, files shipped in installed packages),
    :func:`~tokdiag.workloads.vocab.encoding`,
    :func:`~tokdiag.workloads.vocab.offline_tiktoken`, and ``SAMPLE_TEXT``.

``tokdiag.workloads.tokenizers``
    Tokenizer cache scenarios, each a factory returning a step function:
    ``per_instance_load`` (a new tokenizer that decodes the BPE file per step,
    kept or dropped), ``module_cache`` (PR #765's ``_BPE_CACHE``),
    ``registry`` (tiktoken's own ``get_encoding`` cache), ``model_name_keys``
    (a cache keyed by user-supplied model names), ``concurrent_first_use``
    (threads racing an unlocked lazy cache, and with a lock) and
    ``shared_payload_mutation`` (a cached ranks dict mutated by AWorld's
    ``extra_vocab_file`` path).

``tokdiag.workloads.agents``
    ``agent_workload(...)``: a pure-Python agent application (``RewardAgent``,
    ``MemoryEventMessage``, an event bus, history, browser snapshots) with one
    toggle per retention path.

``tokdiag.workloads.aworld``
    The real ``aworld`` 0.3.2 package (the ``tokdiag[aworld]`` extra): its
    tokenizer functions with and without PR #765's caches, and agent tasks
    against a local chat-completions stub.

Your own workload: :func:`load` turns ``"package.module:function"`` into a
step function, with an optional ``setup`` target called once before.

Submodules are imported on first use (``tokdiag.workloads.tokenizers`` after
``import tokdiag.workloads`` works), so importing this package stays cheap and
never imports ``aworld``.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import pkgutil
from collections.abc import Callable
from types import ModuleType
from typing import Any

from tokdiag.errors import TargetError

__all__ = ["BoundStep", "load"]

_SUBMODULES = ("agents", "aworld", "tokenizers", "vocab")
_EXPECTED = "expected 'package.module:function', e.g. 'myapp.jobs:handle_one'"


def __getattr__(name: str) -> ModuleType:
    """Import the built-in workload submodules lazily (PEP 562)."""
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_SUBMODULES})


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


def _close(word: str, candidates: list[str]) -> str:
    matches = difflib.get_close_matches(word, candidates, n=3, cutoff=0.6)
    if not matches:
        return ""
    quoted = [repr(m) for m in matches]
    listed = quoted[0] if len(quoted) == 1 else ", ".join(quoted[:-1]) + " or " + quoted[-1]
    return f" (did you mean {listed}?)"


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
                    hint = _close(leaf, names)
                except ImportError:
                    pass
            raise TargetError(
                f"{role} {target!r}: module {module_name!r} not found (no module named {missing!r}){hint}; "
                f"{_EXPECTED} importable from this Python (is the package installed, or its folder on sys.path?)"
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


def _resolve(target: object, role: str) -> Callable[..., object]:
    if not isinstance(target, str):
        raise TargetError(f"{role} must be a string, got {target!r} ({type(target).__name__}); {_EXPECTED}")
    module_name, colon, attr_path = target.partition(":")
    module_name, attr_path = module_name.strip(), attr_path.strip()
    if not colon or not module_name or not attr_path or ":" in attr_path:
        raise TargetError(f"{role} {target!r} is malformed: {_EXPECTED}")

    obj: object = _import(module_name, target, role)
    owner = module_name
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            names = [n for n in dir(obj) if not n.startswith("__")]
            raise TargetError(
                f"{role} {target!r}: {owner!r} has no attribute {part!r}{_close(part, names)}; "
                f"{_EXPECTED}"
            ) from None
        owner = f"{owner}:{part}" if owner == module_name else f"{owner}.{part}"

    if not callable(obj):
        shown = "" if isinstance(obj, ModuleType) else f" ({obj!r:.60})"
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
    attribute that is not found (with close matches), an attribute that is not
    callable, or a signature that cannot take the step index. An exception
    raised by setup itself propagates unchanged, with a note naming setup.

    Example::

        step = load("myapp.jobs:handle_one")                          # def handle_one(i)
        step = load("myapp.jobs:handle_one", setup="myapp.jobs:make_app")  # def handle_one(app, i)
        step(0)
    """
    func = _resolve(target, "target")
    if setup is None:
        ok, sig = _accepts(func, 1)
        if not ok:
            raise TargetError(
                f"target {target!r} has signature {sig} and cannot be called as step(i); expected a "
                f"function taking one positional argument, the step index (def step(i): ...), or pass "
                f"setup= for a step(state, i)"
            )
        return func

    setup_func = _resolve(setup, "setup")
    ok, sig = _accepts(setup_func, 0)
    if not ok:
        raise TargetError(
            f"setup {setup!r} has signature {sig} and cannot be called without arguments; expected a "
            f"function taking no arguments that returns the workload's state (or None)"
        )
    try:
        state = setup_func()
    except Exception as exc:
        exc.add_note(f"raised by tokdiag setup {setup!r}")
        raise

    if state is None:
        ok, sig = _accepts(func, 1)
        if not ok:
            raise TargetError(
                f"target {target!r} has signature {sig}; setup {setup!r} returned None, so the target is "
                f"called as step(i): expected a function taking one positional argument, the step index"
            )
        return func

    ok, sig = _accepts(func, 2)
    if not ok:
        raise TargetError(
            f"target {target!r} has signature {sig}; setup {setup!r} returned a "
            f"{type(state).__name__}, so the target is called as step(state, i): expected a function "
            f"taking two positional arguments (def step(state, i): ...), or make setup return None"
        )
    return BoundStep(func, state, target)
