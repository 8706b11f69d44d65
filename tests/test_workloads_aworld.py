"""The real AWorld 0.3.2 workloads (tokdiag_workloads.aworld), offline.

Everything here runs with a network guard (``socket.socket.connect``,
``connect_ex`` and ``socket.getaddrinfo`` refuse and record any address that
is not loopback), a working directory and ``HOME`` in fresh temporary
folders, all set up once for the module before AWorld is imported, because
importing AWorld costs about 2 s. Agent tasks take about 0.5 s each, so the
runs are short.

``aworld`` is located with ``importlib.util.find_spec`` rather than
``pytest.importorskip``: a bare ``import aworld`` would write its log files
into the working directory, which is what the workload must prevent.
"""

from __future__ import annotations

import gc
import importlib
import importlib.util
import os
import socket
import subprocess
import sys
import textwrap
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import tokdiag as td
from tokdiag.errors import ConfigError

if importlib.util.find_spec("aworld") is None:  # pragma: no cover - the aworld extra is installed in CI
    pytest.skip("needs the aworld extra: pip install 'tokdiag[aworld]'", allow_module_level=True)

from tokdiag_workloads import aworld as aw  # noqa: E402  (does not import aworld itself)
from tokdiag_workloads.aworld.stub_server import DEFAULT_REPLY  # noqa: E402
from tokdiag_workloads.sample_text import SAMPLE_TEXT  # noqa: E402

WATCHED = "tokdiag_workloads.aworld.agents.RewardAgent"
_LOOPBACK = {"127.0.0.1", "::1", "localhost"}


class NetworkGuard:
    """Refuses, and records, every connection or DNS lookup to a non-loopback host."""

    def __init__(self) -> None:
        self.attempts: list[tuple[str, Any]] = []
        self._connect = socket.socket.connect
        self._connect_ex = socket.socket.connect_ex
        self._getaddrinfo = socket.getaddrinfo

    def _allowed(self, host: Any) -> bool:
        if isinstance(host, bytes):
            host = host.decode()
        return host is None or host in _LOOPBACK

    def _check_address(self, what: str, address: Any) -> None:
        # AF_UNIX addresses are paths (str/bytes): local by definition.
        if isinstance(address, tuple) and not self._allowed(address[0]):
            self.attempts.append((what, address))
            raise OSError(f"tokdiag test guard: {what} to {address!r} refused (only loopback allowed)")

    def install(self, mp: pytest.MonkeyPatch) -> None:
        guard = self

        def connect(sock: socket.socket, address: Any) -> None:
            guard._check_address("connect", address)
            return guard._connect(sock, address)

        def connect_ex(sock: socket.socket, address: Any) -> int:
            guard._check_address("connect_ex", address)
            return guard._connect_ex(sock, address)

        def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
            if not guard._allowed(host):
                guard.attempts.append(("getaddrinfo", host))
                raise socket.gaierror(f"tokdiag test guard: DNS lookup of {host!r} refused")
            return guard._getaddrinfo(host, *args, **kwargs)

        mp.setattr(socket.socket, "connect", connect)
        mp.setattr(socket.socket, "connect_ex", connect_ex)
        mp.setattr(socket, "getaddrinfo", getaddrinfo)


class Env:
    def __init__(self, cwd: Path, home: Path, guard: NetworkGuard) -> None:
        self.cwd, self.home, self.guard = cwd, home, guard


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """Network guard, empty cwd and HOME, then AWorld imported through the sandbox (once per module)."""
    cwd = tmp_path_factory.mktemp("aworld-cwd")
    home = tmp_path_factory.mktemp("aworld-home")
    guard = NetworkGuard()
    mp = pytest.MonkeyPatch()
    try:
        guard.install(mp)
        mp.chdir(cwd)
        mp.setenv("HOME", str(home))
        aw.import_aworld()
        yield Env(cwd, home, guard)
    finally:
        mp.undo()


@pytest.fixture(autouse=True)
def _nothing_left(env: Env) -> Iterator[None]:
    """After every test: no network attempt, nothing in cwd or HOME, no stub thread, no patch."""
    yield
    assert env.guard.attempts == []
    assert sorted(p.name for p in env.cwd.iterdir()) == []
    assert sorted(p.name for p in env.home.iterdir()) == []
    assert Path.cwd() == env.cwd and os.environ["HOME"] == str(env.home)
    assert [t.name for t in threading.enumerate() if t.name.startswith("tokdiag-stub")] == []
    assert not aw.pr765_active()


def _port_closed(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1.0)
        return s.connect_ex(("127.0.0.1", port)) != 0


def test_guard_refuses_and_records_non_loopback(env: Env) -> None:
    with pytest.raises(OSError, match="tokdiag test guard"):
        socket.create_connection(("example.com", 443), timeout=1)
    with socket.socket() as s, pytest.raises(OSError, match="tokdiag test guard"):
        s.connect(("192.0.2.1", 9))  # TEST-NET-1, by address: no DNS involved
    assert env.guard.attempts == [("getaddrinfo", "example.com"), ("connect", ("192.0.2.1", 9))]
    env.guard.attempts.clear()


# ---------------------------------------------------------------------------
# Tokenizer paths, shipped vs PR #765 emulated.
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("call, module", [("new_openai_tokenizer", "openai_tokenizer"),
                                          ("new_qwen_tokenizer", "qwen_tokenizer")])
def test_shipped_loads_the_bpe_file_per_tokenizer_and_patched_once(env: Env, call: str, module: str) -> None:
    mod = sys.modules[f"aworld.models.{module}"]
    original = mod._load_tiktoken_bpe
    expected = getattr(mod, module).count_tokens(SAMPLE_TEXT)  # the module-level instance

    with aw.tokenizer_workload(call, keep=True) as shipped:
        counts = [shipped(i) for i in range(3)]
        assert shipped.bpe_loads == 3
        assert len({id(t.mergeable_ranks) for t in shipped.kept}) == 3  # three decoded copies
    with aw.tokenizer_workload(call, keep=True, patched=True) as patched:
        assert aw.pr765_active() and mod._BPE_CACHE is patched.patch.bpe_caches[module]
        patched_counts = [patched(i) for i in range(3)]
        assert patched.bpe_loads == 1
        assert len(mod._BPE_CACHE) == 1
        assert len({id(t.mergeable_ranks) for t in patched.kept}) == 1  # one dict shared by all
        assert patched.kept[0].mergeable_ranks is next(iter(mod._BPE_CACHE.values()))

    assert counts == patched_counts == [expected] * 3
    # closing undid the patch and the load counter: aworld's module is as shipped again
    assert mod._load_tiktoken_bpe is original
    assert not hasattr(mod, "_BPE_CACHE")
    assert patched.kept == [] and shipped.kept == []


def test_patched_encoding_cache_gains_a_key_per_model_name(env: Env) -> None:
    utils = sys.modules["aworld.models.utils"]
    prompt_log = importlib.import_module("aworld.logs.prompt_log")  # does `from aworld.models.utils import ...`
    shipped_fn = utils.num_tokens_from_string
    assert prompt_log.num_tokens_from_string is shipped_fn
    with aw.tokenizer_workload("num_tokens_from_string", unique_models=True) as shipped:
        shipped_counts = [shipped(i) for i in range(4)]
        assert shipped.bpe_loads == 0  # tiktoken path: AWorld's own loader is never reached
    with aw.tokenizer_workload("num_tokens_from_string", unique_models=True, patched=True) as patched:
        assert utils.num_tokens_from_string is not shipped_fn
        # modules that imported the function by name see the patched one, as a source change would give them
        assert prompt_log.num_tokens_from_string is utils.num_tokens_from_string
        patched_counts = [patched(i) for i in range(4)]
        cache = utils._TIKTOKEN_ENCODING_CACHE
        assert sorted(cache) == [f"gpt-4-tenant-{i}" for i in range(4)]  # unbounded: one key per name
        assert len({id(e) for e in cache.values()}) == 1  # ... all the same Encoding
        assert patched.bpe_loads == 0
    assert shipped_counts == patched_counts and shipped_counts[0] > 100
    assert utils.num_tokens_from_string is shipped_fn
    assert prompt_log.num_tokens_from_string is shipped_fn
    assert not hasattr(utils, "_TIKTOKEN_ENCODING_CACHE")


def test_patch_is_one_at_a_time_and_workloads_refuse_a_foreign_state(env: Env) -> None:
    shipped = aw.tokenizer_workload("module_openai_tokenizer")
    try:
        with aw.tokenizer_workload("module_openai_tokenizer", patched=True) as patched:
            with pytest.raises(ConfigError, match="already applied"):
                aw.tokenizer_workload("module_qwen_tokenizer", patched=True)
            with pytest.raises(ConfigError, match="patched=False"):
                shipped(0)
            assert patched(0) > 0
        assert shipped(0) > 0
    finally:
        shipped.close()
    with pytest.raises(ConfigError, match="closed"):
        shipped(1)
    with pytest.raises(ConfigError, match="unknown call 'nope'"):
        aw.tokenizer_workload("nope")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# Real agent tasks against the stub.
# ---------------------------------------------------------------------------


def _verdict(run: td.Run, subject: str, metric: str) -> str:
    v = run.verdicts()
    row = v[(v["probe"] == "watch") & (v["subject"] == subject) & (v["metric"] == metric)]
    assert len(row) == 1, v[["probe", "subject", "metric"]]
    return str(row["verdict"].iloc[0])


@pytest.mark.parametrize("reuse", [False, True], ids=["new-agent-per-task", "reused-agent"])
def test_tracked_agent_tasks_new_agent_per_task_keeps_every_agent(env: Env, reuse: bool) -> None:
    # a leak must add 8 objects before the verdicts call it one; the reused agent needs only a few snapshots
    steps = 4 if reuse else 8
    with aw.aworld_agent_workload(3, reuse_agent=reuse) as step:
        run = td.track(step, steps=steps, every=1, watch=[WATCHED], census=False, progress=False,
                       why_alive=False)
        port = step.server.port
        assert step.server.request_count == steps  # one LLM round trip per task, no tool
        assert step.tasks_run == steps and step.last_answer == DEFAULT_REPLY
    counts = run.series("watch", WATCHED, "count").tolist()
    growth = [c - counts[0] for c in counts]
    if reuse:
        assert growth == [0] + [1] * steps  # the one agent, made at the first task
        assert _verdict(run, WATCHED, "count") != "leak"
    else:
        assert growth == list(range(steps + 1))  # every agent stays alive
        assert _verdict(run, WATCHED, "count") == "leak"
    assert run.status == "completed"
    assert not step.server.running and _port_closed(port)


def test_agents_stay_registered_and_unregistering_does_not_free_them(env: Env) -> None:
    from aworld.core.agent.base import AgentFactory

    made: list[weakref.ref[Any]] = []
    cls = aw.RewardAgent
    original_init = cls.__init__

    def recording_init(self: Any, *a: Any, **k: Any) -> None:
        original_init(self, *a, **k)
        made.append(weakref.ref(self))

    cls.__init__ = recording_init
    try:
        with aw.aworld_agent_workload(2) as step:
            step(0), step(1)
        with aw.aworld_agent_workload(2, unregister_agents=True) as step:
            step(0), step(1)
    finally:
        cls.__init__ = original_init
    gc.collect()
    kept, unregistered = made[:2], made[2:]
    assert all(r() is not None for r in made)  # all four alive after their workloads closed
    assert all(r().id() in AgentFactory._agent_instance for r in kept)
    # unregistered from AWorld's agent registry, yet still alive (AWorld's run-state storage holds them)
    assert all(r().id() not in AgentFactory._agent_instance for r in unregistered)


@pytest.mark.parametrize("stream, tool_calls", [(True, False), (False, True), (True, True)])
def test_streaming_and_tool_calls_reach_the_stub(env: Env, stream: bool, tool_calls: bool) -> None:
    with aw.aworld_agent_workload(2, stream=stream, tool_calls=tool_calls) as step:
        answers = [step(i) for i in range(2)]
        requests = step.server.requests
        port = step.server.port
    assert answers == [DEFAULT_REPLY] * 2
    per_task = ["tool_call", "message"] if tool_calls else ["message"]
    assert [r.answered_with for r in requests] == per_task * 2
    assert all(r.stream is stream for r in requests)
    if tool_calls:
        assert all(any("score" in t for t in r.offered_tools) for r in requests)
        assert [r.has_tool_result for r in requests] == [False, True] * 2  # AWorld ran the tool
    else:
        assert all(r.offered_tools == () for r in requests)
    assert _port_closed(port)


def test_bad_agent_options_name_the_value(env: Env) -> None:
    with pytest.raises(ConfigError, match="tasks=0"):
        aw.agent_step(0)
    with pytest.raises(ConfigError, match=r"tasks=\[''\]"):
        aw.agent_step([""])
    step = aw.agent_step(1)
    step.close()
    assert not step.server.running
    with pytest.raises(ConfigError, match="closed"):
        step(0)


# ---------------------------------------------------------------------------
# A whole process: nothing left behind at exit.
# ---------------------------------------------------------------------------

_CHILD = textwrap.dedent("""
    import socket, sys
    attempts = []
    _connect, _getaddrinfo = socket.socket.connect, socket.getaddrinfo
    def connect(sock, address):
        if isinstance(address, tuple) and address[0] not in ("127.0.0.1", "::1", "localhost"):
            attempts.append(address); raise OSError("refused")
        return _connect(sock, address)
    def getaddrinfo(host, *a, **k):
        if host not in (None, "127.0.0.1", "::1", "localhost"):
            attempts.append(host); raise socket.gaierror("refused")
        return _getaddrinfo(host, *a, **k)
    socket.socket.connect, socket.getaddrinfo = connect, getaddrinfo

    from tokdiag_workloads import aworld as aw
    root = aw.sandbox().root
    with aw.aworld_agent_workload(1, tool_calls=True, stream=True) as step:
        step(0)
    with aw.tokenizer_workload("new_openai_tokenizer", patched=True) as tok:
        tok(0)
    logs = sorted(p.name for p in (root / "logs").iterdir())
    assert "aworld.log" in logs and len(logs) >= 8, logs
    assert any((root / "tools").iterdir()) and any((root / "memory").iterdir())
    assert attempts == [], attempts
    print(root)
""")


@pytest.mark.slow
def test_a_process_leaves_nothing_behind(tmp_path: Path) -> None:
    cwd, home, tmp = tmp_path / "cwd", tmp_path / "home", tmp_path / "tmp"
    for d in (cwd, home, tmp):
        d.mkdir()
    child_env = {k: v for k, v in os.environ.items() if not k.startswith(("AWORLD_", "TIKTOKEN_"))}
    child_env.update(HOME=str(home), TMPDIR=str(tmp))
    out = subprocess.run([sys.executable, "-c", _CHILD], cwd=cwd, env=child_env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    root = Path(out.stdout.strip().splitlines()[-1])
    assert root.parent == tmp and not root.exists()  # the sandbox was in TMPDIR and is gone
    assert sorted(tmp_path.rglob("*")) == sorted([cwd, home, tmp])  # and nothing in cwd, HOME or TMPDIR


@pytest.mark.slow
def test_missing_aworld_is_an_error_with_the_install_command(tmp_path: Path) -> None:
    code = ("import sys; sys.modules['aworld'] = None\n"
            "from tokdiag_workloads import aworld as aw\n"
            "try:\n    aw.import_aworld()\nexcept Exception as e:\n    print(type(e).__name__, e)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.startswith("TokdiagError")
    assert "pip install 'tokdiag[aworld]'" in out.stdout


def test_presets_name_aworld_s_tokenizers_and_pr765_s_caches_only_while_applied(env: Env) -> None:
    # tokdiag resolves AWorld's modules by name, like any cache target (aworld was imported by the sandbox)
    shipped = ["aworld.models.qwen_tokenizer:qwen_tokenizer", "aworld.models.openai_tokenizer:openai_tokenizer"]
    assert [c.label for c in td.presets.aworld()] == shipped
    with aw.tokenizer_workload("module_openai_tokenizer", patched=True):
        assert [c.label for c in td.presets.aworld()] == shipped + [
            "aworld.models.utils:_TIKTOKEN_ENCODING_CACHE", "aworld.models.openai_tokenizer:_BPE_CACHE",
            "aworld.models.qwen_tokenizer:_BPE_CACHE"]
    assert [c.label for c in td.presets.aworld()] == shipped
