"""The per-process directory AWorld writes into, and AWorld imported into it.

AWorld 0.3.2 writes, as shipped: loguru files under ``$AWORLD_LOG_PATH``
(default ``<cwd>/logs``, decided once, when ``aworld.logs.util`` is first
imported), generated tool modules under ``$AWORLD_TOOL_TMP_DIR``, its file
memory store under ``$AWORLD_MEMORY_ROOT`` (default ``~/.aworld/memory``), and
it reads ``.env`` and ``~/.aworld``. :func:`import_aworld` creates one private
directory per process (``<tmp>/tokdiag-aworld-*``, :func:`sandbox`), points
those variables into it before AWorld is first imported, turns AWorld's
console log off, sets ``TIKTOKEN_CACHE_DIR`` into it when the user has not set
one, and imports AWorld with ``HOME`` and the working directory inside it;
every step of the workloads runs the same way (:func:`inside_sandbox`). At
interpreter exit AWorld's file log handlers are removed and the directory is
deleted. The environment variables stay set for the rest of the process.
What AWorld leaves running (its sandbox loop threads) and what it reads:
``docs/workloads.md``.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import os
import shutil
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from tokdiag.errors import TokdiagError, TokdiagWarning
from tokdiag_workloads.vocab import offline_tiktoken

__all__ = ["INSTALL_HINT", "AworldSandbox", "import_aworld", "inside_sandbox", "sandbox"]

INSTALL_HINT = "pip install 'tokdiag[aworld]'  (aworld==0.3.2 with pydantic<2.12)"


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


@contextlib.contextmanager
def inside_sandbox() -> Iterator[AworldSandbox]:
    """Run a block with ``HOME`` and the working directory inside :func:`sandbox` (both restored after)."""
    sb = sandbox()
    with _inside(sb):
        yield sb
