"""The real AWorld 0.3.2 package under the microscope, offline.

Needs the ``aworld`` extra (``pip install 'tokdiag[aworld]'``). ``aworld`` is
imported lazily, inside functions, never when this module is imported; when
it is not importable, :class:`~tokdiag.errors.TokdiagError` says how to
install it.

Two kinds of workload, each a step function ``step(i)`` the tracker drives:

**AWorld's tokenizer functions as shipped** (:func:`tokenizer_workload`):
``aworld.models.utils.num_tokens_from_string`` / ``num_tokens_from_messages``,
a new ``OpenAITokenizer`` / ``QWenTokenizer`` per call (each construction runs
the module's ``_load_tiktoken_bpe``, which reads and base64-decodes the whole
vocabulary file, then builds a new ``tiktoken.Encoding``), or the module
tokenizer instances ``openai_tokenizer`` / ``qwen_tokenizer``. With
``patched=True`` the step runs under :class:`Pr765Patch`, an *emulation* of
AWorld PR #765 applied at run time (not the PR's code itself, which was never
merged): module-level ``_BPE_CACHE`` dicts wrapping ``_load_tiktoken_bpe`` in
both tokenizer modules, and ``_TIKTOKEN_ENCODING_CACHE`` with
``_get_cached_tiktoken_encoding`` in ``aworld.models.utils``, used by
``num_tokens_from_string``, ``num_tokens_from_messages`` and
``truncate_tokens_from_messages``. :attr:`TokenizerStep.bpe_loads` counts the
calls that reached AWorld's own ``_load_tiktoken_bpe`` (real file reads).

**Real agent tasks** (:func:`aworld_agent_workload`, :func:`agent_step`): a
:class:`RewardAgent` (a subclass of ``aworld.agents.llm_agent.Agent``) run by
``aworld.runner.Runners.sync_run`` against a local OpenAI-compatible stub on
127.0.0.1 (:mod:`tokdiag_workloads._stub_server`), configured through AWorld's
own ``AgentConfig(llm_provider="openai", llm_base_url=<stub>, llm_api_key=
"stub-key")``; optional streaming (``llm_stream_call=True``) and tool calls
(a local function tool registered with AWorld's ``function_to_tool``).

Leaving nothing behind
----------------------
AWorld writes, as shipped: 8 loguru files under ``$AWORLD_LOG_PATH`` (default
``<cwd>/logs``, decided once, when ``aworld.logs.util`` is first imported);
generated tool modules under ``$AWORLD_TOOL_TMP_DIR`` (default
``<tmp>/aworld_local_tools_<user>_<uid>``; AWorld removes the files at exit but
leaves the directory); its file memory store under ``$AWORLD_MEMORY_ROOT``
(default ``~/.aworld/memory``); and it reads ``.env`` and ``~/.aworld``.
:func:`import_aworld` creates one private directory per process (``<tmp>/
tokdiag-aworld-*``), points those variables into it before AWorld is first
imported, turns AWorld's console log off (``AWORLD_DISABLE_CONSOLE_LOG``),
sets ``TIKTOKEN_CACHE_DIR`` into it when the user has not set one, and imports
AWorld and runs every step with ``HOME`` pointing into it and the working
directory inside it (both restored after the step). At interpreter exit
AWorld's file log handlers are removed and the directory is deleted
(``tests/test_workloads_aworld.py::test_a_process_leaves_nothing_behind``
runs a child process with its own ``TMPDIR``, ``HOME`` and working directory
and finds all three empty afterwards). The environment variables stay set for
the rest of the process. If AWorld
was imported before tokdiag could do this, a warning names where its logs go.

AWorld also starts threads it never stops: the first task with a tool call
creates its process-wide ``SandboxLoopPool`` (``aworld/sandbox/runtime/
loop_pool.py``), four daemon threads each running an event loop forever.
They hold no per-task state; tokdiag leaves them alone. AWorld's
``load_dotenv()`` at import reads the first ``.env`` found walking up from the
installed package (e.g. a project root above ``.venv``), then ``./.env`` (here
the empty sandbox ``work`` directory).

What was measured
-----------------
Command: ``python -m tokdiag_workloads.aworld`` (each variant in a fresh
interpreter: 3 warm-up tasks, then RSS over 25 tasks, then tracemalloc over 10
more; a new prompt per task). One run, 2-core machine, Python 3.11.7, aworld
0.3.2, while other jobs kept the load average at 4-5, so wall times are
inflated (import 3.7-11.7 s here; 1.3-2.0 s when the machine was quiet) and
the CPU share is the steadier figure:

=========================  ==========  ===========  ================  ============
variant                    s/task      RSS KB/task  tracemalloc KB/t  agents alive
=========================  ==========  ===========  ================  ============
new agent per task         0.93, 0.74  1736         136               38 of 38
new agent, unregistered    0.67, 0.68  1803         136               38 of 38
one reused agent           0.52, 0.54  56           121               1
reused agent, 1 session    0.51, 0.50  60           121               1
new agent, 1 tool call     1.20, 1.16  1966         660               38 of 38
new agent, streamed        0.62, 0.71  1770         165               38 of 38
=========================  ==========  ===========  ================  ============

(s/task: mean of the first and of the last 5 measured tasks.) RSS after
``import_aworld()`` is 270 MB in every variant. A task is mostly waiting:
CPU (user + system) is 11-18% of wall time; AWorld polls with
``asyncio.sleep(0.1)`` in ``core/event/message_future.py``.

- A new agent per task keeps every agent alive. The retention chain
  (``objgraph.find_backref_chain``, printed by the command)::

    module aworld.core.agent.base -> AgentFactory (AgentManager)._agent_instance
    ["reward---uuid…"] -> RewardAgent

  registered when the agent is built and never removed. After
  ``AgentFactory.unregister(agent.id())`` (``unregister_agents=True``) they
  are still all alive, through the run-state storage::

    module aworld.runners.state_manager -> SingletonMeta._instances[InMemoryStateStorage]
    ._nodes[<id>] -> RunNode.metadata["context"] -> ApplicationContext._task
    -> Task.swarm -> Swarm._communicate_agent[0] -> RewardAgent

  which evicts only past ``max_session=1000`` sessions
  (``runners/state_manager.py``).
- Most of the ~1.7-2.0 MB of RSS per agent is outside Python's allocator
  (tracemalloc sees 136 KB): each agent builds its own ``openai`` clients
  (``get_llm_model(conf)`` in ``agents/llm_agent.py``), and one sync + async
  ``openai`` client pair, measured apart by the same command, costs 1626 KB
  of RSS.
- One reused agent: 56-60 KB of RSS and 121 KB of tracemalloc per task, and
  no slowdown over 38 tasks, with a new session per task or one session for
  all. (The :class:`RewardAgent` instance's reachable bytes grow too, about
  137 KB per task in an 8-task ``td.track`` run with ``watch``; not yet
  attributed.)

Offline
-------
Everything above runs offline: the tests block every non-loopback connection
and DNS lookup and assert none was tried. AWorld's token counting calls
``tiktoken.encoding_for_model(model)``; for model names tiktoken does not
know (the stub's ``"stub-model"``) it falls back to
``tiktoken.get_encoding("cl100k_base")``, which is served from the vocabulary
AWorld ships, via :func:`tokdiag_workloads.vocab.offline_tiktoken`. What
cannot run offline: a model name that tiktoken maps to another encoding.
``tokenizer_workload("num_tokens_from_string", model="gpt-4o")`` maps to
``o200k_base``, which tiktoken downloads from
``openaipublic.blob.core.windows.net`` (checked: with DNS blocked the step
raises ``requests.ConnectionError``); AWorld ships no o200k_base file. Use
``gpt-4`` / ``gpt-3.5-turbo`` (cl100k_base, the default here), ``"openai"``
/ ``"qwen"`` (AWorld's module tokenizers), or put the o200k_base file in
``$TIKTOKEN_CACHE_DIR`` under tiktoken's cache name.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import itertools
import os
import shutil
import sys
import tempfile
import threading
import warnings
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

from tokdiag.errors import ConfigError, TokdiagError, TokdiagWarning
from tokdiag_workloads._stub_server import DEFAULT_REPLY, StubServer

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

INSTALL_HINT = "pip install 'tokdiag[aworld]'  (aworld==0.3.2 with pydantic<2.12)"

# ---------------------------------------------------------------------------
# The per-process sandbox and the lazy import.
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AworldSandbox:
    """The private directory AWorld writes into, one per process."""

    root: Path

    @property
    def logs(self) -> Path:
        """``$AWORLD_LOG_PATH``: AWorld's loguru files."""
        return self.root / "logs"

    @property
    def tools(self) -> Path:
        """``$AWORLD_TOOL_TMP_DIR``: modules AWorld generates for function tools."""
        return self.root / "tools"

    @property
    def memory(self) -> Path:
        """``$AWORLD_MEMORY_ROOT``: AWorld's file memory store."""
        return self.root / "memory"

    @property
    def home(self) -> Path:
        """``$HOME`` while AWorld is imported and while a step runs."""
        return self.root / "home"

    @property
    def work(self) -> Path:
        """The working directory while AWorld is imported and while a step runs."""
        return self.root / "work"

    @property
    def tiktoken(self) -> Path:
        """``$TIKTOKEN_CACHE_DIR`` when it was not set by the user."""
        return self.root / "tiktoken"


_SANDBOX: AworldSandbox | None = None
_SANDBOX_LOCK = threading.RLock()


def _detach_aworld_file_logs() -> None:
    """Remove the loguru file handlers AWorld's loggers added (so nothing writes into a deleted dir)."""
    util = sys.modules.get("aworld.logs.util")
    if util is None:
        return
    try:
        from loguru import logger as base_logger
    except ImportError:  # pragma: no cover - loguru is an aworld dependency
        return
    cls = getattr(util, "AWorldLogger", None)
    for value in list(vars(util).values()):
        if cls is None or not isinstance(value, cls):
            continue
        for attr in ("file_log_id", "error_log_id"):
            handler_id = value.__dict__.get(attr)
            if handler_id is not None:
                with contextlib.suppress(ValueError):
                    base_logger.remove(handler_id)


def _cleanup_sandbox(root: Path) -> None:
    _detach_aworld_file_logs()
    shutil.rmtree(root, ignore_errors=True)


def sandbox() -> AworldSandbox:
    """The per-process directory AWorld writes into; created on first call, deleted at exit."""
    global _SANDBOX
    with _SANDBOX_LOCK:
        if _SANDBOX is None:
            sb = AworldSandbox(Path(tempfile.mkdtemp(prefix="tokdiag-aworld-")))
            for d in (sb.logs, sb.tools, sb.memory, sb.home, sb.work):
                d.mkdir()
            atexit.register(_cleanup_sandbox, sb.root)
            _SANDBOX = sb
        return _SANDBOX


@contextlib.contextmanager
def _inside(sb: AworldSandbox) -> Iterator[None]:
    """Run with ``HOME`` and the working directory inside the sandbox; restore both after."""
    with _SANDBOX_LOCK:
        old_cwd = os.getcwd()
        old_home = os.environ.get("HOME")
        os.environ["HOME"] = str(sb.home)
        os.chdir(sb.work)
    try:
        yield
    finally:
        with _SANDBOX_LOCK:
            os.chdir(old_cwd)
            if old_home is None:
                os.environ.pop("HOME", None)
            else:
                os.environ["HOME"] = old_home


_AWORLD_MODULES = (
    "aworld.models.utils",
    "aworld.models.openai_tokenizer",
    "aworld.models.qwen_tokenizer",
)


def import_aworld() -> ModuleType:
    """Import AWorld with its files pointed into :func:`sandbox` and tiktoken made offline.

    Returns the ``aworld`` package. Safe to call many times. Raises
    :class:`~tokdiag.errors.TokdiagError` with the install command when
    ``aworld`` is not importable. Warns (:class:`~tokdiag.errors.TokdiagWarning`)
    when AWorld was already imported elsewhere, so its log files went where
    ``AWORLD_LOG_PATH`` or the working directory said at that time.
    """
    from tokdiag_workloads.vocab import offline_tiktoken

    with _SANDBOX_LOCK:
        sb = sandbox()
        already = "aworld.logs.util" in sys.modules
        if already and os.environ.get("AWORLD_LOG_PATH") != str(sb.logs):
            warnings.warn(
                "aworld was imported before tokdiag_workloads.aworld.import_aworld(); its log files go to "
                f"{os.environ.get('AWORLD_LOG_PATH') or '<cwd at that import>/logs'}. Call "
                "tokdiag_workloads.aworld.import_aworld() before anything imports aworld to keep them out "
                "of the working directory", TokdiagWarning, stacklevel=2)
        os.environ["AWORLD_LOG_PATH"] = str(sb.logs)
        os.environ["AWORLD_TOOL_TMP_DIR"] = str(sb.tools)
        os.environ["AWORLD_MEMORY_ROOT"] = str(sb.memory)
        os.environ.setdefault("AWORLD_DISABLE_CONSOLE_LOG", "true")
        offline_tiktoken(None if os.environ.get("TIKTOKEN_CACHE_DIR") else sb.tiktoken)
        with _inside(sb):
            try:
                for name in _AWORLD_MODULES:
                    importlib.import_module(name)
                return importlib.import_module("aworld")
            except ImportError as exc:
                raise TokdiagError(
                    f"the AWorld workloads need the aworld package, which cannot be imported here "
                    f"({type(exc).__name__}: {exc}); install it with: {INSTALL_HINT}") from exc


# ---------------------------------------------------------------------------
# PR #765, emulated as a run-time patch.
# ---------------------------------------------------------------------------

_PATCH_LOCK = threading.RLock()
_ACTIVE_PATCH: Pr765Patch | None = None


def pr765_active() -> bool:
    """Whether :class:`Pr765Patch` is applied in this process right now."""
    return _ACTIVE_PATCH is not None


class Pr765Patch:
    """An emulation of AWorld PR #765 ("为tiktoken新增缓存,修复内存泄漏问题"), applied at run time.

    This is not the PR's code: the PR was never merged and its diff is not
    shipped. It reproduces what the PR page describes, against aworld 0.3.2:

    - ``aworld.models.openai_tokenizer`` and ``aworld.models.qwen_tokenizer``
      each get a module-level ``_BPE_CACHE = {}``, and their
      ``_load_tiktoken_bpe(tiktoken_bpe_file)`` returns the cached dict for a
      file it has loaded before (keyed by the argument as passed), else calls
      the original loader and caches the result. Unbounded and unlocked, as
      in the PR.
    - ``aworld.models.utils`` gets ``_TIKTOKEN_ENCODING_CACHE = {}`` and
      ``_get_cached_tiktoken_encoding(model)``, copied from the PR's review
      thread: ``tiktoken.encoding_for_model(model)`` cached per model name;
      on ``KeyError`` the ``cl100k_base`` Encoding, cached under
      ``"cl100k_base"`` and under the model name (every unknown name adds a
      key: the reviewer's unbounded-cache point).
    - ``num_tokens_from_string``, ``num_tokens_from_messages`` and
      ``truncate_tokens_from_messages`` get the Encoding from that helper
      instead of calling tiktoken directly. aworld 0.3.2's ``"qwen"`` and
      ``"openai"`` branches (module tokenizer instances) are kept as shipped.
      Modules that imported these functions by name (``aworld.memory.main``,
      ``aworld.logs.prompt_log``, ...) get the patched ones too, as a source
      change would have given them.

    :meth:`undo` (or leaving the ``with`` block) puts every attribute back
    exactly as it was. Only one patch can be active per process.
    """

    def __init__(self) -> None:
        self._saved: list[tuple[ModuleType, str, bool, Any, Any]] = []  # module, attr, had, old, new
        self.bpe_caches: dict[str, dict[Any, dict[bytes, int]]] = {}
        self.encoding_cache: dict[str, Any] = {}

    @property
    def applied(self) -> bool:
        return bool(self._saved)

    def _set(self, module: ModuleType, attr: str, value: Any) -> None:
        had = hasattr(module, attr)
        self._saved.append((module, attr, had, getattr(module, attr, None), value))
        setattr(module, attr, value)

    def apply(self) -> Pr765Patch:
        """Apply the patch. Raises :class:`~tokdiag.errors.ConfigError` if one is already active."""
        global _ACTIVE_PATCH
        import_aworld()
        with _PATCH_LOCK:
            if _ACTIVE_PATCH is not None:
                raise ConfigError("a Pr765Patch is already applied in this process; undo() it (or close the "
                                  "workload that applied it) before applying another")
            try:
                self._apply()
            except BaseException:
                self._restore()
                raise
            _ACTIVE_PATCH = self
        return self

    def _apply(self) -> None:
        utils = sys.modules["aworld.models.utils"]
        for short in ("openai_tokenizer", "qwen_tokenizer"):
            mod = sys.modules[f"aworld.models.{short}"]
            cache: dict[Any, dict[bytes, int]] = {}
            self.bpe_caches[short] = cache
            self._set(mod, "_BPE_CACHE", cache)
            self._set(mod, "_load_tiktoken_bpe", _cached_loader(mod._load_tiktoken_bpe, cache))

        enc_cache: dict[str, Any] = self.encoding_cache
        get_cached = _make_get_cached_tiktoken_encoding(enc_cache, utils)
        self._set(utils, "_TIKTOKEN_ENCODING_CACHE", enc_cache)
        self._set(utils, "_get_cached_tiktoken_encoding", get_cached)
        replacements = _make_patched_utils(utils, get_cached)
        originals = {name: getattr(utils, name) for name in replacements}
        for name, fn in replacements.items():
            self._set(utils, name, fn)
        # Modules that did `from aworld.models.utils import <name>` hold the original function.
        for modname, mod in list(sys.modules.items()):
            if mod is None or mod is utils or not modname.startswith("aworld"):
                continue
            for name, orig in originals.items():
                if getattr(mod, name, None) is orig:
                    self._set(mod, name, replacements[name])

    def _restore(self) -> None:
        for module, attr, had, old, _new in reversed(self._saved):
            if had:
                setattr(module, attr, old)
            else:
                with contextlib.suppress(AttributeError):
                    delattr(module, attr)
        self._saved.clear()

    def undo(self) -> None:
        """Put back every attribute the patch changed. Idempotent.

        Raises :class:`~tokdiag.errors.TokdiagError` (after restoring anyway)
        when something else replaced a patched attribute in the meantime.
        """
        global _ACTIVE_PATCH
        with _PATCH_LOCK:
            if not self._saved:
                return
            moved = [f"{m.__name__}.{a}" for m, a, _h, _o, new in self._saved if getattr(m, a, None) is not new]
            self._restore()
            if _ACTIVE_PATCH is self:
                _ACTIVE_PATCH = None
        if moved:
            raise TokdiagError(f"while Pr765Patch was applied, something else replaced {', '.join(moved)}; "
                               f"they were restored to aworld's originals anyway. Undo patches in reverse order")

    def __enter__(self) -> Pr765Patch:
        return self.apply()

    def __exit__(self, *exc: object) -> None:
        self.undo()


def _cached_loader(original: Callable[[Any], dict[bytes, int]],
                   cache: dict[Any, dict[bytes, int]]) -> Callable[[Any], dict[bytes, int]]:
    def _load_tiktoken_bpe(tiktoken_bpe_file: Any) -> dict[bytes, int]:
        """Load tiktoken BPE file with caching to prevent memory leaks. (PR #765, emulated by tokdiag)"""
        if tiktoken_bpe_file in cache:
            return cache[tiktoken_bpe_file]
        result = original(tiktoken_bpe_file)
        cache[tiktoken_bpe_file] = result
        return result

    return _load_tiktoken_bpe


def _make_get_cached_tiktoken_encoding(cache: dict[str, Any], utils: ModuleType) -> Callable[[str], Any]:
    def _get_cached_tiktoken_encoding(model: str) -> Any:
        """Get cached tiktoken encoding to prevent memory leaks. (PR #765, emulated by tokdiag)"""
        if model not in cache:
            import tiktoken

            try:
                cache[model] = tiktoken.encoding_for_model(model)
                utils.logger.debug(f"Created and cached tiktoken encoding for model: {model}")
            except KeyError:
                utils.logger.debug(f"{model} model not found. Using cl100k_base encoding.")
                if "cl100k_base" not in cache:
                    cache["cl100k_base"] = tiktoken.get_encoding("cl100k_base")
                cache[model] = cache["cl100k_base"]
        return cache[model]

    return _get_cached_tiktoken_encoding


def _make_patched_utils(utils: ModuleType, get_cached: Callable[[str], Any]) -> dict[str, Callable[..., Any]]:
    """aworld 0.3.2's three token functions with the Encoding taken from the PR's cache."""

    def num_tokens_from_string(string: str, model: str = "openai") -> int:
        """Return the number of tokens used by a list of messages. (PR #765, emulated by tokdiag)"""
        if model.lower() == "qwen":
            encoding = utils.qwen_tokenizer
        elif model.lower() == "openai":
            encoding = utils.openai_tokenizer
        else:
            encoding = get_cached(model)
        return len(utils._encoding_encode(encoding, string))

    def num_tokens_from_messages(messages: Any, model: str = "openai") -> int:
        """Return the number of tokens used by a list of messages. (PR #765, emulated by tokdiag)"""
        utils.import_package("tiktoken")
        if model.lower() == "qwen":
            encoding = utils.qwen_tokenizer
        elif model.lower() == "openai":
            encoding = utils.openai_tokenizer
        else:
            encoding = get_cached(model)
        tokens_per_message = 3
        tokens_per_name = 1
        num_tokens = 0
        enc_fn = utils._encoding_encode
        for message in messages:
            num_tokens += tokens_per_message
            if isinstance(message, str):
                num_tokens += len(enc_fn(encoding, message))
            else:
                for key, value in message.items():
                    num_tokens += len(enc_fn(encoding, str(value)))
                    if key == "name":
                        num_tokens += tokens_per_name
        num_tokens += 3
        return num_tokens

    def truncate_tokens_from_messages(messages: Any, max_tokens: int, keep_both_sides: bool = False,
                                      model: str = "gpt-4o") -> Any:
        """As aworld 0.3.2, with the Encoding from the cache. (PR #765, emulated by tokdiag)"""
        utils.import_package("tiktoken")
        if model.lower() == "qwen":
            return utils.qwen_tokenizer.truncate(messages, max_tokens, keep_both_sides)
        elif model.lower() == "openai":
            return utils.openai_tokenizer.truncate(messages, max_tokens, keep_both_sides)
        encoding = get_cached(model)
        return encoding.truncate(messages, max_tokens, keep_both_sides)

    return {
        "num_tokens_from_string": num_tokens_from_string,
        "num_tokens_from_messages": num_tokens_from_messages,
        "truncate_tokens_from_messages": truncate_tokens_from_messages,
    }


# ---------------------------------------------------------------------------
# Counting real BPE loads (instrumentation, reference counted).
# ---------------------------------------------------------------------------


class _LoadCounter:
    """Wraps AWorld's original ``_load_tiktoken_bpe`` in both tokenizer modules and counts calls."""

    def __init__(self) -> None:
        self.calls = 0
        self.users = 0
        self._saved: list[tuple[ModuleType, Callable[..., Any], Callable[..., Any]]] = []

    def acquire(self) -> None:
        with _PATCH_LOCK:
            if self.users == 0:
                if _ACTIVE_PATCH is not None:
                    raise ConfigError("create the tokenizer workload before applying a Pr765Patch by hand, or "
                                      "use tokenizer_workload(patched=True), so real loads can be counted")
                for short in ("openai_tokenizer", "qwen_tokenizer"):
                    mod = sys.modules[f"aworld.models.{short}"]
                    original = mod._load_tiktoken_bpe
                    wrapper = self._wrap(original)
                    mod._load_tiktoken_bpe = wrapper
                    self._saved.append((mod, original, wrapper))
            self.users += 1

    def release(self) -> None:
        with _PATCH_LOCK:
            if self.users == 0:
                return
            self.users -= 1
            if self.users == 0:
                for mod, original, wrapper in reversed(self._saved):
                    if mod._load_tiktoken_bpe is wrapper:
                        mod._load_tiktoken_bpe = original
                self._saved.clear()

    def _wrap(self, original: Callable[[Any], dict[bytes, int]]) -> Callable[[Any], dict[bytes, int]]:
        counter = self

        def _load_tiktoken_bpe(tiktoken_bpe_file: Any) -> dict[bytes, int]:
            counter.calls += 1
            return original(tiktoken_bpe_file)

        _load_tiktoken_bpe.__wrapped__ = original  # type: ignore[attr-defined]
        return _load_tiktoken_bpe


_LOADS = _LoadCounter()

# ---------------------------------------------------------------------------
# Tokenizer workloads.
# ---------------------------------------------------------------------------

TokenizerCall = Literal[
    "num_tokens_from_string",
    "num_tokens_from_messages",
    "new_openai_tokenizer",
    "new_qwen_tokenizer",
    "module_openai_tokenizer",
    "module_qwen_tokenizer",
]
TOKENIZER_CALLS: tuple[str, ...] = (
    "num_tokens_from_string",
    "num_tokens_from_messages",
    "new_openai_tokenizer",
    "new_qwen_tokenizer",
    "module_openai_tokenizer",
    "module_qwen_tokenizer",
)
"""The AWorld token-counting paths :func:`tokenizer_workload` can drive."""


class TokenizerStep:
    """A step function over one of AWorld's token-counting paths; see :func:`tokenizer_workload`.

    Attributes:
        call, model, unique_models, patched, keep: the options it was made with.
        kept: tokenizers constructed by ``new_*`` calls when ``keep=True``.
        last_count: the token count of the last step.
        patch: the active :class:`Pr765Patch` when ``patched=True``.
    """

    def __init__(self, call: str, model: str, unique_models: bool, patched: bool, keep: bool,
                 text: str) -> None:
        import_aworld()
        self.call, self.model, self.unique_models = call, model, unique_models
        self.patched, self.keep, self.text = patched, keep, text
        self.kept: list[Any] = []
        self.last_count = 0
        self.closed = False
        self._messages = [{"role": "system", "content": "You score agent trajectories."},
                          {"role": "user", "content": text}]
        _LOADS.acquire()
        self._loads0 = _LOADS.calls
        self.patch: Pr765Patch | None = None
        try:
            if patched:
                self.patch = Pr765Patch().apply()
        except BaseException:
            _LOADS.release()
            raise
        self._finalizer = weakref.finalize(self, _close_tokenizer_step, self.patch)

    @property
    def bpe_loads(self) -> int:
        """Calls that reached AWorld's own ``_load_tiktoken_bpe`` (file read + decode) since creation."""
        return _LOADS.calls - self._loads0

    def model_for(self, i: int) -> str:
        """The model name step ``i`` passes (``<model>-tenant-<i>`` with ``unique_models``)."""
        return f"{self.model}-tenant-{i}" if self.unique_models else self.model

    def __call__(self, i: int) -> int:
        if self.closed:
            raise ConfigError("this tokenizer workload is closed; make a new one with tokenizer_workload(...)")
        if pr765_active() != self.patched:
            state = "applied" if pr765_active() else "not applied"
            raise ConfigError(f"this workload was made with patched={self.patched} but the PR #765 patch is "
                              f"{state} now (another workload?); close the other workload first")
        utils = sys.modules["aworld.models.utils"]
        call = self.call
        if call == "num_tokens_from_string":
            n = utils.num_tokens_from_string(self.text, self.model_for(i))
        elif call == "num_tokens_from_messages":
            n = utils.num_tokens_from_messages(self._messages, self.model_for(i))
        elif call in ("new_openai_tokenizer", "new_qwen_tokenizer"):
            short = "openai_tokenizer" if call == "new_openai_tokenizer" else "qwen_tokenizer"
            mod = sys.modules[f"aworld.models.{short}"]
            cls = mod.OpenAITokenizer if short == "openai_tokenizer" else mod.QWenTokenizer
            # The same file the module instance loads; a bare cls() would look for the file in the cwd.
            vocab = Path(mod.__file__).resolve().parent.parent / "config" / cls.vocab_files_names["vocab_file"]
            tok = cls(vocab)
            n = tok.count_tokens(self.text)
            if self.keep:
                self.kept.append(tok)
        elif call == "module_openai_tokenizer":
            n = sys.modules["aworld.models.openai_tokenizer"].openai_tokenizer.count_tokens(self.text)
        else:
            n = sys.modules["aworld.models.qwen_tokenizer"].qwen_tokenizer.count_tokens(self.text)
        self.last_count = n
        return n

    def close(self) -> None:
        """Undo the patch (if any), stop counting loads, drop kept tokenizers. Idempotent."""
        self.closed = True
        self.kept.clear()
        self._finalizer()

    def __enter__(self) -> TokenizerStep:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<TokenizerStep {self.call} model={self.model!r} unique_models={self.unique_models} "
                f"patched={self.patched} keep={self.keep}>")


def _close_tokenizer_step(patch: Pr765Patch | None) -> None:
    try:
        if patch is not None:
            patch.undo()
    finally:
        _LOADS.release()


def tokenizer_workload(
    call: TokenizerCall = "num_tokens_from_string",
    *,
    model: str = "gpt-4",
    unique_models: bool = False,
    patched: bool = False,
    keep: bool = False,
    text: str | None = None,
) -> TokenizerStep:
    """A step function ``step(i)`` that counts tokens through one AWorld 0.3.2 path.

    Args:
        call: which path (:data:`TOKENIZER_CALLS`):
            ``"num_tokens_from_string"`` / ``"num_tokens_from_messages"`` —
            ``aworld.models.utils``'s functions with ``model``: ``"openai"`` and
            ``"qwen"`` use the module tokenizer instances, any other name goes
            to ``tiktoken.encoding_for_model`` (falling back to
            ``get_encoding("cl100k_base")``), whose Encodings tiktoken itself
            caches in ``tiktoken.registry.ENCODINGS``;
            ``"new_openai_tokenizer"`` / ``"new_qwen_tokenizer"`` — construct
            ``OpenAITokenizer`` / ``QWenTokenizer`` on AWorld's shipped
            vocabulary each step (one ``_load_tiktoken_bpe`` and one new
            ``tiktoken.Encoding`` per construction), then count;
            ``"module_openai_tokenizer"`` / ``"module_qwen_tokenizer"`` — the
            module-level instances AWorld builds once at import.
        model: model name for the ``num_tokens_*`` calls.
        unique_models: pass ``<model>-tenant-<i>`` at step ``i``: user-supplied
            model names, the reviewer's unbounded-cache case (under the patch,
            ``_TIKTOKEN_ENCODING_CACHE`` gains a key per step).
        patched: run under :class:`Pr765Patch` (an emulation of PR #765),
            applied now and undone by :meth:`TokenizerStep.close`, when the
            ``with`` block ends, or when the step is garbage collected.
        keep: keep every tokenizer a ``new_*`` call builds (``step.kept``).
        text: what to count; defaults to :data:`tokdiag_workloads.vocab.SAMPLE_TEXT`.

    Example::

        with tokenizer_workload("new_openai_tokenizer", patched=True) as step:
            for i in range(5):
                step(i)
            step.bpe_loads        # 1: the PR's _BPE_CACHE served the other 4
    """
    if call not in TOKENIZER_CALLS:
        raise ConfigError(f"unknown call {call!r}; pass one of {', '.join(TOKENIZER_CALLS)}")
    if not isinstance(model, str) or not model:
        raise ConfigError(f"model={model!r} must be a non-empty model name, e.g. 'gpt-4' or 'openai'")
    if text is None:
        from tokdiag_workloads.vocab import SAMPLE_TEXT

        text = SAMPLE_TEXT
    return TokenizerStep(call, model, unique_models, patched, keep, text)


# ---------------------------------------------------------------------------
# Real agent tasks against the local stub.
# ---------------------------------------------------------------------------

_TOOL_NAME = "score_trajectory"
_TOOL_LOCK = threading.Lock()


def score_trajectory(trajectory_id: str, steps: int) -> str:
    """Score one trajectory by id (the function tool a :class:`RewardAgent` may call)."""
    return f"trajectory {trajectory_id}: {steps} steps, score {round(1.0 / (1 + abs(int(steps) - 3)), 3)}"


def _register_tool() -> None:
    """Register :func:`score_trajectory` with AWorld's ToolFactory once per process."""
    with _TOOL_LOCK:
        from aworld.core.tool.base import ToolFactory

        if _TOOL_NAME in ToolFactory:
            return
        from aworld.core.tool.func_to_tool import function_to_tool

        with _inside(sandbox()):
            function_to_tool(score_trajectory, tool_name=_TOOL_NAME, tool_desc="Score agent trajectories.",
                             name="score", desc="Score one trajectory by id and number of steps.")


_REWARD_AGENT: type | None = None


def _reward_agent_class() -> type:
    """``RewardAgent``, a subclass of AWorld's ``Agent``, created on first use (needs aworld)."""
    global _REWARD_AGENT
    if _REWARD_AGENT is None:
        import_aworld()
        from aworld.agents.llm_agent import Agent

        class RewardAgent(Agent):  # type: ignore[misc, valid-type]
            """An AWorld ``Agent`` that scores trajectories; counts the tasks it ran."""

            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                self.tasks_scored = 0

        RewardAgent.__module__ = __name__
        RewardAgent.__qualname__ = "RewardAgent"
        _REWARD_AGENT = RewardAgent
    return _REWARD_AGENT


def __getattr__(name: str) -> Any:
    if name == "RewardAgent":
        return _reward_agent_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_SYSTEM_PROMPT = ("You are a reward model. Score the agent trajectory you are given between 0 and 1 "
                  "and explain the score in one sentence.")


class AgentTaskStep:
    """A step function running one real AWorld agent task per step; see :func:`agent_step`.

    Attributes:
        server: the :class:`~tokdiag_workloads._stub_server.StubServer` it talks to.
        tasks_run: tasks finished; ``last_answer`` the last task's answer.
    """

    _ids = itertools.count(1)

    def __init__(self, tasks: int | Sequence[str] | None, reuse_agent: bool, stream: bool, tool_calls: bool,
                 unregister_agents: bool, session_id: str | None, reply: str) -> None:
        if isinstance(tasks, int) and not isinstance(tasks, bool):
            if tasks < 1:
                raise ConfigError(f"tasks={tasks!r} must be >= 1 (the number of distinct task prompts), "
                                  f"a list of prompts, or None for a new prompt per step")
            prompts: tuple[str, ...] | None = tuple(_prompt(k) for k in range(tasks))
        elif tasks is None:
            prompts = None
        elif isinstance(tasks, Sequence) and tasks and all(isinstance(t, str) and t for t in tasks):
            prompts = tuple(tasks)
        else:
            raise ConfigError(f"tasks={tasks!r} must be an int >= 1, a non-empty list of prompt strings, or None")
        import_aworld()
        from aworld.config.conf import AgentConfig

        self.reuse_agent, self.stream, self.tool_calls = reuse_agent, stream, tool_calls
        self.unregister_agents, self.session_id = unregister_agents, session_id
        self._prompts = prompts
        self._cls = _reward_agent_class()
        if tool_calls:
            _register_tool()
        self.server = StubServer(tool_calls=tool_calls, reply=reply).start()
        self._finalizer = weakref.finalize(self, self.server.stop)
        self.name = f"aworld-agents-{next(AgentTaskStep._ids)}"
        self.conf = AgentConfig(llm_provider="openai", llm_model_name=self.server.model,
                                llm_base_url=self.server.base_url, llm_api_key="stub-key",
                                llm_stream_call=stream)
        self._agent: Any = None
        self.tasks_run = 0
        self.last_answer: str | None = None
        self.closed = False

    def _new_agent(self) -> Any:
        return self._cls(name="reward", conf=self.conf, system_prompt=_SYSTEM_PROMPT,
                         tool_names=[_TOOL_NAME] if self.tool_calls else None,
                         llm_max_attempts=1)

    def prompt(self, i: int) -> str:
        """The task input of step ``i``."""
        return _prompt(i) if self._prompts is None else self._prompts[i % len(self._prompts)]

    def __call__(self, i: int) -> str:
        if self.closed:
            raise ConfigError(f"{self.name} is closed (its stub server stopped); make a new agent_step(...)")
        from aworld.core.agent.base import AgentFactory
        from aworld.runner import Runners

        with _inside(sandbox()):
            if self.reuse_agent:
                if self._agent is None:
                    self._agent = self._new_agent()
                agent = self._agent
            else:
                agent = self._new_agent()
            resp = Runners.sync_run(input=self.prompt(i), agent=agent, session_id=self.session_id)
            if self.unregister_agents and not self.reuse_agent:
                AgentFactory.unregister(agent.id())
        if resp is None or not resp.success:
            msg = getattr(resp, "msg", None)
            raise TokdiagError(f"aworld task {i} failed: {msg!r} (stub at {self.server.base_url}, "
                               f"{self.server.request_count} requests so far); see the logs in {sandbox().logs}")
        agent.tasks_scored += 1
        self.tasks_run += 1
        self.last_answer = str(resp.answer)
        return self.last_answer

    def close(self) -> None:
        """Stop the stub server and drop the reused agent. Idempotent."""
        self.closed = True
        self._agent = None
        self._finalizer()

    def __enter__(self) -> AgentTaskStep:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (f"<AgentTaskStep {self.name} tasks_run={self.tasks_run} reuse_agent={self.reuse_agent} "
                f"stream={self.stream} tool_calls={self.tool_calls}>")


def _prompt(k: int) -> str:
    from tokdiag_workloads.vocab import sample_texts

    english = sample_texts()[0].split("\n\n")
    return (f"Trajectory {k}: the agent searched for item-{k}, opened two results and compared prices. "
            f"Context: {english[k % len(english)][:400]}")


def agent_step(
    tasks: int | Sequence[str] | None = None,
    *,
    reuse_agent: bool = False,
    stream: bool = False,
    tool_calls: bool = False,
    unregister_agents: bool = False,
    session_id: str | None = None,
    reply: str = DEFAULT_REPLY,
) -> AgentTaskStep:
    """A step function ``step(i)`` that runs one real AWorld agent task against a local stub.

    The stub server starts now and stops on ``step.close()``, when the step is
    garbage collected, or at interpreter exit (``weakref.finalize``); prefer
    :func:`aworld_agent_workload`, which always stops it.

    Args:
        tasks: the task prompts, cycled by step index: an int (that many
            generated prompts), a list of strings, or None (a new prompt per step).
        reuse_agent: one :class:`RewardAgent` for every task (else a new one per task).
        stream: AWorld's ``llm_stream_call=True``: the model is called with
            ``stream: true`` and the stub answers with server-sent events.
        tool_calls: give the agent the ``score_trajectory`` function tool; the
            stub calls it on the first request of each task, then answers.
        unregister_agents: after each task, ``AgentFactory.unregister(agent.id())``
            (the obvious fix for AWorld's agent registry; agents stay alive
            through AWorld's run-state storage anyway, see the module docstring).
        session_id: passed to ``Runners.sync_run`` (None: AWorld makes one).
        reply: the stub's canned answer.
    """
    return AgentTaskStep(tasks, reuse_agent, stream, tool_calls, unregister_agents, session_id, reply)


@contextlib.contextmanager
def aworld_agent_workload(
    tasks: int | Sequence[str] | None = None,
    *,
    reuse_agent: bool = False,
    stream: bool = False,
    tool_calls: bool = False,
    unregister_agents: bool = False,
    session_id: str | None = None,
    reply: str = DEFAULT_REPLY,
) -> Iterator[AgentTaskStep]:
    """:func:`agent_step` as a context manager: the stub server is stopped when the block ends.

    Example::

        with aworld_agent_workload(reuse_agent=True, tool_calls=True) as step:
            for i in range(3):
                step(i)
            step.server.request_count     # 6: a tool call and an answer per task
    """
    step = agent_step(tasks, reuse_agent=reuse_agent, stream=stream, tool_calls=tool_calls,
                      unregister_agents=unregister_agents, session_id=session_id, reply=reply)
    try:
        yield step
    finally:
        step.close()


# ---------------------------------------------------------------------------
# The figures in the module docstring: `python -m tokdiag_workloads.aworld`.
# ---------------------------------------------------------------------------

_MEASURE_VARIANTS: dict[str, dict[str, Any]] = {
    "new agent per task": {},
    "new agent, unregistered": {"unregister_agents": True},
    "one reused agent": {"reuse_agent": True},
    "reused agent, 1 session": {"reuse_agent": True, "session_id": "tokdiag-one-session"},
    "new agent, 1 tool call": {"tool_calls": True},
    "new agent, streamed": {"stream": True},
}


def _measure_one(options: dict[str, Any], tasks: int = 25, warmup: int = 3, traced: int = 10) -> dict[str, Any]:
    """Import cost, then per-task time and growth of one agent variant. For ``__main__``.

    RSS per task over ``tasks`` tasks after ``warmup``; tracemalloc per task
    over ``traced`` further tasks (tracing slows the tasks, so it is apart);
    CPU seconds per task (user + system) against wall seconds shows how much
    of a task is waiting.
    """
    import gc
    import time
    import tracemalloc

    import psutil

    proc = psutil.Process()
    t0 = time.perf_counter()
    import_aworld()
    from aworld.core.agent.base import AgentFactory

    out: dict[str, Any] = {"import_s": time.perf_counter() - t0, "import_rss_mb": proc.memory_info().rss / 2**20}
    with aworld_agent_workload(None, **options) as step:
        for i in range(warmup):
            step(i)
        gc.collect()
        r0, c0, w0 = proc.memory_info().rss, sum(proc.cpu_times()[:2]), time.perf_counter()
        times = []
        for i in range(warmup, warmup + tasks):
            t = time.perf_counter()
            step(i)
            times.append(time.perf_counter() - t)
        out["cpu_share"] = (sum(proc.cpu_times()[:2]) - c0) / (time.perf_counter() - w0)
        gc.collect()
        out["rss_kb_per_task"] = (proc.memory_info().rss - r0) / tasks / 1024
        out["first5_s"] = sum(times[:5]) / 5
        out["last5_s"] = sum(times[-5:]) / 5
        tracemalloc.start()
        m0 = tracemalloc.get_traced_memory()[0]
        for i in range(warmup + tasks, warmup + tasks + traced):
            step(i)
        gc.collect()
        out["traced_kb_per_task"] = (tracemalloc.get_traced_memory()[0] - m0) / traced / 1024
        tracemalloc.stop()
        out["requests"] = step.server.request_count
    cls = _reward_agent_class()
    gc.collect()
    out["tasks"] = warmup + tasks + traced
    out["alive"] = sum(1 for o in gc.get_objects() if type(o) is cls)
    out["registered"] = sum(1 for a in list(AgentFactory._agent_instance.values()) if type(a) is cls)
    if not options.get("reuse_agent"):
        first = min((o for o in gc.get_objects() if type(o) is cls), key=lambda a: a.tasks_scored, default=None)
        out["chain"] = [_chain_text(first)] if first is not None else []
    return out


def _chain_text(obj: Any) -> str:
    """``objgraph.find_backref_chain`` from a module to ``obj``, dict keys shown. For ``__main__``.

    (``tokdiag.why_alive`` skips chains that end in a class defined under
    ``tokdiag``, such as this module's :class:`RewardAgent`.)
    """
    import objgraph

    chain = objgraph.find_backref_chain(obj, objgraph.is_proper_module, max_depth=30)
    parts = []
    for k, node in enumerate(chain):
        if isinstance(node, ModuleType):
            parts.append(f"module {node.__name__}")
        elif isinstance(node, type):
            parts.append(f"class {node.__qualname__}")
        elif isinstance(node, dict) and k + 1 < len(chain):
            key = next((key for key, v in node.items() if v is chain[k + 1]), None)
            parts.append(f"[{str(key)[:60]!r}]" if key is not None else "dict")
        else:
            label = type(node).__qualname__
            if k + 1 < len(chain):  # 3.11 instances refer to their attribute values directly
                try:
                    attrs = vars(node)
                except TypeError:
                    attrs = {}
                name = next((a for a, v in attrs.items() if v is chain[k + 1]), None)
                label += f".{name}" if name is not None else ""
            parts.append(label)
    del chain
    return " -> ".join(parts)


def _openai_client_pair_kb(pairs: int = 20) -> float:
    """RSS per sync + async ``openai`` client pair, as each AWorld agent builds (kept alive). For ``__main__``."""
    import gc

    import openai
    import psutil

    proc = psutil.Process()
    openai.OpenAI(base_url="http://127.0.0.1:9/v1", api_key="x")  # warm up imports and lazy state
    gc.collect()
    r0 = proc.memory_info().rss
    kept = [(openai.OpenAI(base_url="http://127.0.0.1:9/v1", api_key="x"),
             openai.AsyncOpenAI(base_url="http://127.0.0.1:9/v1", api_key="x")) for _ in range(pairs)]
    gc.collect()
    kb = (proc.memory_info().rss - r0) / pairs / 1024
    del kept
    return kb


if __name__ == "__main__":
    # Each variant in a fresh interpreter, so memory freed by one is not reused by the next.
    import json
    import subprocess

    for label, opts in _MEASURE_VARIANTS.items():
        code = ("import json, tokdiag_workloads.aworld as a; "
                f"print(json.dumps(a._measure_one(json.loads({json.dumps(json.dumps(opts))}))))")
        res = json.loads(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                                        text=True).stdout.strip().splitlines()[-1])
        print(f"{label:24s} import {res['import_s']:.2f} s, RSS {res['import_rss_mb']:.0f} MB | task "
              f"{res['first5_s']:.2f} -> {res['last5_s']:.2f} s, CPU {res['cpu_share']:.0%} of wall | "
              f"RSS {res['rss_kb_per_task']:.0f} KB/task, tracemalloc {res['traced_kb_per_task']:.0f} KB/task | "
              f"RewardAgents alive {res['alive']}/{res['tasks']} tasks, registered {res['registered']}, "
              f"{res['requests']} requests")
        for chain in res.get("chain", []):
            print(f"{'':24s} {chain}")
    code = "import tokdiag_workloads.aworld as a; print(a._openai_client_pair_kb())"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    print(f"{'openai client pair':24s} RSS {float(out.stdout.split()[-1]):.0f} KB per sync + async pair")
