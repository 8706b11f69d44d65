"""Services measured where they run: ``tokdiag attach PID``, ``td.record`` and the middleware, on real HTTP servers.

Every service here is a separate process on 127.0.0.1 (``tests/services/``):
a request handler that keeps one ``LeakRecord`` per request in a module
dict, and the same handler dropping it. Requests come from a bounded loop.
"""

from __future__ import annotations

import itertools
import json
import os
import platform
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import tokdiag as td

REPO = Path(__file__).resolve().parents[1]
SERVICES = Path(__file__).resolve().parent / "services"
ENV = {**os.environ, "PYTHONPATH": str(REPO)}

pytestmark = pytest.mark.slow


def _can_attach() -> str:
    """Why ``tokdiag attach`` cannot run here, or ""."""
    if sys.platform != "linux" or platform.machine() != "x86_64":
        return "tokdiag attach supports x86-64 Linux"
    try:
        scope = Path("/proc/sys/kernel/yama/ptrace_scope").read_text().strip()
    except OSError:
        scope = "0"
    if os.geteuid() != 0 and scope != "0":
        return f"ptrace of a sibling process is refused here (yama ptrace_scope {scope}, not root)"
    return ""


needs_attach = pytest.mark.skipif(bool(_can_attach()), reason=_can_attach() or "-")


class Service:
    """A service subprocess, its port, and a bounded request loop against it."""

    def __init__(self, *argv: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> None:
        self.answered: list[float] = []
        self.failures: list[str] = []
        self._halt = threading.Event()
        self._loop: threading.Thread | None = None
        self.proc = subprocess.Popen([sys.executable, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True, env=env or ENV, cwd=cwd)
        ready, _, _ = select.select([self.proc.stdout], [], [], 60)
        line = self.proc.stdout.readline() if ready else ""
        if not line.strip().isdigit():
            raise AssertionError(f"the service did not start: {line!r} {self.stop()}")
        self.pid = self.proc.pid
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{int(line)}", timeout=30)

    def drive(self, max_requests: int = 20_000, pause_s: float = 0.004) -> None:
        """Send ``GET /work`` in the background until :meth:`halt` or ``max_requests``."""
        def loop() -> None:
            with httpx.Client(base_url=self.client.base_url, timeout=30) as c:
                for _ in range(max_requests):
                    if self._halt.is_set():
                        return
                    try:
                        c.get("/work").raise_for_status()
                        self.answered.append(time.monotonic())
                    except httpx.HTTPError as exc:
                        self.failures.append(repr(exc))
                    time.sleep(pause_s)
        self._loop = threading.Thread(target=loop, daemon=True)
        self._loop.start()

    def halt(self) -> None:
        self._halt.set()
        if self._loop is not None:
            self._loop.join(30)

    def threads(self) -> list[str]:
        return json.loads(self.client.get("/threads").text)

    def threads_settled(self, timeout: float = 10.0) -> list[str]:
        """The service's threads once no ``tokdiag`` thread is left (or whatever is there after ``timeout``)."""
        deadline = time.monotonic() + timeout
        names = self.threads()
        while any(n.startswith("tokdiag") for n in names) and time.monotonic() < deadline:
            time.sleep(0.2)
            names = self.threads()
        return names

    def stop(self) -> str:
        """SIGTERM (the service stops its recorder), then its stderr."""
        if self.proc.stderr.closed:
            return ""
        self.halt()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if hasattr(self, "client"):
            self.client.close()
        err = self.proc.stderr.read()
        self.proc.stdout.close()
        self.proc.stderr.close()
        return err


@pytest.fixture
def services() -> Iterator[list[Service]]:
    started: list[Service] = []
    yield started
    for s in started:
        s.stop()


def _attach(*args: str, cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "tokdiag", "attach", *args], cwd=cwd, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _verdict(run: td.Run, probe: str, subject_end: str, metric: str) -> str:
    v = run.verdicts()
    row = v[(v.probe == probe) & v.subject.str.endswith(subject_end) & (v.metric == metric)]
    assert len(row) == 1, v[["probe", "subject", "metric", "verdict"]]
    return str(row.verdict.iloc[0])


def _leaks(run: td.Run, probes: tuple[str, ...] = ("watch", "census")) -> list[str]:
    v = run.verdicts()
    return sorted(f"{r.subject}/{r.metric}" for r in v[(v.verdict == "leak") & v.probe.isin(probes)].itertuples())


# -- tokdiag attach -------------------------------------------------------------------------------

@needs_attach
def test_attach_finds_the_leak_in_a_running_service_and_leaves_nothing_behind(services, tmp_path):
    """The issue's test: attach to a leaking and a clean stdlib HTTP service under load."""
    leaky = Service(str(SERVICES / "wsgi_service.py"), "leak", "plain")
    clean = Service(str(SERVICES / "wsgi_service.py"), "clean", "plain")
    services += [leaky, clean]
    for s in services:
        s.drive()
    time.sleep(0.5)
    procs = {name: _attach(str(s.pid), "--for", "30s", "--every", "3s", "--watch", "LeakRecord",
                           "-o", f"{name}.jsonl", cwd=tmp_path)
             for name, s in (("leaky", leaky), ("clean", clean))}
    t0 = time.monotonic()
    outs = {name: p.communicate(timeout=180) for name, p in procs.items()}
    t1 = time.monotonic()
    for name, p in procs.items():
        assert p.returncode == 0, outs[name]
        assert "warning" not in outs[name][1]  # LeakRecord exists in both services
    for s in services:
        assert [t for t in s.answered if t0 < t < t1], "the service stopped answering during the attach"
        assert s.threads_settled() == ["MainThread"]  # no tokdiag thread left
        s.client.get("/work").raise_for_status()  # still answering afterwards
        s.halt()
        assert not s.failures
    leak_run, clean_run = td.load(tmp_path / "leaky.jsonl"), td.load(tmp_path / "clean.jsonl")
    assert leak_run.status == clean_run.status == "completed"
    assert leak_run.params["step_unit"] == "second"
    assert _verdict(leak_run, "watch", ".LeakRecord", "count") == "leak"
    assert _verdict(leak_run, "watch", ".LeakRecord", "bytes") == "leak"
    assert _verdict(clean_run, "watch", ".LeakRecord", "count") != "leak"
    assert _leaks(clean_run) == []
    # the pause of every snapshot is journaled
    pauses = leak_run.series("tracker", "tokdiag", "snapshot_cpu_s")
    assert len(pauses) == len(leak_run.steps) and (pauses > 0).all()
    for s in services:
        assert "Traceback" not in s.stop()


@needs_attach
def test_attach_stops_on_ctrl_c_and_when_the_attacher_is_killed(services, tmp_path):
    svc = Service(str(SERVICES / "wsgi_service.py"), "leak", "plain")
    services.append(svc)
    svc.drive()

    def snapshots(path: Path) -> int:
        try:
            return sum(1 for line in path.read_text().splitlines() if '"kind": "snapshot"' in line)
        except FileNotFoundError:
            return 0

    for how, journal in (("SIGINT", tmp_path / "int.jsonl"), ("SIGTERM", tmp_path / "term.jsonl"),
                         ("SIGKILL", tmp_path / "kill.jsonl")):
        proc = _attach(str(svc.pid), "--for", "10m", "--every", "1s", "-o", str(journal), cwd=tmp_path)
        deadline = time.monotonic() + 90
        while snapshots(journal) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        assert snapshots(journal) >= 2, proc.stderr.read() if proc.poll() is not None else "no snapshots yet"
        proc.send_signal(getattr(signal, how))
        proc.communicate(timeout=120)
        assert proc.returncode == (-signal.SIGKILL if how == "SIGKILL" else 130)
        assert svc.threads_settled() == ["MainThread"], how
        run = td.load(journal)
        assert run.status == ("detached" if how == "SIGKILL" else "interrupted"), run.message
    svc.client.get("/work").raise_for_status()


@needs_attach
def test_attach_to_a_parent_records_each_python_child_and_the_total(tmp_path):
    """Worker processes: one journal per process, read back as one service with per-process series and a total."""
    parent = subprocess.Popen([sys.executable, str(SERVICES / "workers.py"), "2"], stdout=subprocess.PIPE,
                              env=ENV, text=True)
    try:
        pids = [int(p) for p in parent.stdout.readline().split()]
        assert len(pids) == 3
        (tmp_path / "store").mkdir()
        proc = _attach(str(parent.pid), "--for", "20s", "--every", "2s", "--watch", "Job,NoSuchClass",
                       "--disk", "store", "--limit", "2GiB", "-o", "svc.jsonl", cwd=tmp_path)
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
        # what the recorders warned about in the services is shown here, once per process
        assert err.count("warning: watch: no class matches 'NoSuchClass'") == 3, err
    finally:
        parent.terminate()
        parent.wait(30)
        parent.stdout.close()
    journals = sorted(p.name for p in tmp_path.glob("svc.pid*.jsonl"))
    assert journals == sorted(f"svc.pid{pid:07d}.jsonl" for pid in pids)
    svc = td.load_service(tmp_path / "svc.jsonl")
    assert sorted(p["pid"] for p in svc.header["processes"]) == sorted(pids)
    for p in svc.header["processes"]:  # --disk (from attach's folder) and --limit reach every recorder
        params = p["header"]["params"]
        assert (params["service"], params["limit"], params["disk"]) == ("svc", 2 << 30, [str(tmp_path / "store")])
    disk = svc.timeline[(svc.timeline.probe == "disk") & (svc.timeline.metric == "files")]
    assert set(disk.run) == {p["run"] for p in svc.header["processes"]} | {"svc (total)"}
    v = svc.verdicts()
    jobs = v[(v.probe == "watch") & v.subject.str.endswith(".Job") & (v.metric == "count")]
    by_run = dict(zip(jobs.run, jobs.verdict, strict=True))
    assert by_run["svc (total)"] == "leak"
    assert by_run[f"svc pid {pids[0]}"] != "leak"  # the parent keeps nothing
    assert by_run[f"svc pid {pids[1]}"] == by_run[f"svc pid {pids[2]}"] == "leak"
    # the total is the sum of the processes at each step
    tl = svc.timeline
    sel = tl[(tl.probe == "watch") & tl.subject.str.endswith(".Job") & (tl.metric == "count")]
    total = sel[sel.run == "svc (total)"].set_index("step").value
    # each process counts with its latest snapshot at or before the step (on a busy machine the recorders'
    # snapshots fall on different steps)
    latest = [g.set_index("step").value.reindex(g.step.tolist() + total.index.tolist()).groupby(level=0).first()
              .sort_index().ffill().loc[total.index] for run, g in sel[sel.run != "svc (total)"].groupby("run")]
    assert len(total) >= 4 and (sum(latest) == total).all(), (sum(latest), total)


@needs_attach
def test_attach_failures_name_the_cause_and_the_fix(services, tmp_path):
    def attach(*args: str) -> str:
        p = _attach(*args, "--for", "2s", "--every", "1s", "-o", str(tmp_path / "x.jsonl"), cwd=tmp_path)
        out, err = p.communicate(timeout=120)
        assert p.returncode in (1, 2), err
        return err

    # no such process
    dead = subprocess.Popen(["true"])
    dead.wait()
    assert f"no process with pid {dead.pid}" in attach(str(dead.pid))
    # not a Python process
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        assert "is not a Python process" in attach(str(sleeper.pid), "--no-children")
    finally:
        sleeper.kill()
        sleeper.wait()
    # tokdiag not importable in the service: a broken `tokdiag` package shadows it there
    fake = tmp_path / "shadow" / "tokdiag"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('broken on purpose')\n")
    svc = Service(str(SERVICES / "wsgi_service.py"), "clean", "plain",
                  env={**os.environ, "PYTHONPATH": str(fake.parent)})
    services.append(svc)
    err = attach(str(svc.pid))
    assert "could not import tokdiag's recorder: ImportError: broken on purpose" in err
    assert "install" in err and str(fake / "__init__.py") in err
    assert svc.threads_settled() == ["MainThread"]
    svc.client.get("/work").raise_for_status()
    # a main thread blocked in a C call runs no bootstrap; attach says so, and nothing starts when it wakes up
    idle = subprocess.Popen([sys.executable, "-c", "import sys, threading, time\nprint(1, flush=True)\n"
                             "sys.stdin.readline()\ntime.sleep(1)\n"
                             "print(sorted(t.name for t in threading.enumerate()), flush=True)"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=ENV)
    try:
        assert idle.stdout.readline().strip() == "1"
        err = attach(str(idle.pid), "--start-timeout", "1")
        assert "did not run the queued bootstrap within 1 s" in err
        idle.stdin.write("wake up\n")
        idle.stdin.flush()
        assert idle.stdout.readline().strip() == "['MainThread']"
        assert idle.wait(30) == 0
    finally:
        idle.kill()
        idle.wait()
        idle.stdin.close()
        idle.stdout.close()


PY312 = Path("/root/.pyenv/versions/3.12.1/bin/python3.12")


@needs_attach
@pytest.mark.skipif(not os.access(PY312, os.X_OK) or sys.version_info[:2] == (3, 12),
                    reason="needs a Python 3.12 beside this interpreter")
def test_attach_refuses_another_python_minor_version(tmp_path):
    other = subprocess.Popen([str(PY312), "-c", "import time\nwhile True: time.sleep(0.1)"])
    try:
        time.sleep(0.5)
        p = _attach(str(other.pid), "-o", str(tmp_path / "x.jsonl"), cwd=tmp_path)
        _, err = p.communicate(timeout=60)
    finally:
        other.kill()
        other.wait()
    assert p.returncode == 2
    assert f"pid {other.pid} runs Python 3.12.1, tokdiag attach runs on {sys.version.split()[0]}" in err
    assert "-m tokdiag attach" in err


@needs_attach
def test_attach_refuses_without_the_right_to_trace(tmp_path):
    """As an unprivileged user, tracing a root process is refused, and the message says what to change."""
    if os.geteuid() != 0:
        pytest.skip("needs root to drop to another user")
    from tokdiag.recording._inject import inspect_target, queue_code  # imported before dropping privileges

    target = subprocess.Popen([sys.executable, "-c", "import time\nwhile True: time.sleep(0.1)"])
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the forked child
        os.close(read)
        try:
            os.setgid(65534)
            os.setuid(65534)
            try:
                queue_code(inspect_target(target.pid), "pass")
                msg = "attached"
            except td.TokdiagError as exc:
                msg = f"{type(exc).__name__}: {exc}"
            os.write(write, msg.encode())
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(child, 0)
    msg = os.read(read, 4096).decode()
    os.close(read)
    target.kill()
    target.wait()
    assert msg.startswith("AttachError: permission denied"), msg
    assert f"tokdiag runs as uid 65534, pid {target.pid} as uid 0" in msg
    assert "run tokdiag attach as uid 0" in msg


# -- td.record and the middleware in a service ----------------------------------------------------------

def _record_pair(services: list[Service], tmp_path: Path, *argv_for: list[str], requests: int) -> list[td.Run]:
    runs = []
    started = [Service(*argv, env=ENV) for argv in argv_for]
    services += started
    for s in started:
        s.drive(max_requests=requests, pause_s=0.002)
    for s in started:
        s._loop.join(120)
        assert len(s.answered) == requests and not s.failures
        assert "tokdiag-recorder" in s.threads()
    for s, argv in zip(started, argv_for, strict=True):
        err = s.stop()
        assert "Traceback" not in err, err
        runs.append(td.load(argv[-1]))
    return runs


def test_recorder_in_a_service_finds_the_leak_per_second(services, tmp_path):
    script = str(SERVICES / "wsgi_service.py")
    leak_run, clean_run = _record_pair(services, tmp_path,
                                       [script, "leak", "record", str(tmp_path / "leak.jsonl")],
                                       [script, "clean", "record", str(tmp_path / "clean.jsonl")], requests=2000)
    assert leak_run.status == clean_run.status == "stopped"
    assert leak_run.params["step_unit"] == "second" and len(leak_run.steps) >= 4
    assert _verdict(leak_run, "watch", ".LeakRecord", "count") == "leak"
    assert _leaks(clean_run) == []


@pytest.mark.parametrize("server", ["wsgi", "asgi"])
def test_middleware_counts_requests_as_steps_and_finds_the_leak_per_request(services, tmp_path, server):
    if server == "wsgi":
        argv = [[str(SERVICES / "wsgi_service.py"), keep, "middleware", str(tmp_path / f"{keep}.jsonl")]
                for keep in ("leak", "clean")]
    else:
        argv = [[str(SERVICES / "asgi_service.py"), keep, str(tmp_path / f"{keep}.jsonl")]
                for keep in ("leak", "clean")]
    leak_run, clean_run = _record_pair(services, tmp_path, *argv, requests=300)
    for run in (leak_run, clean_run):
        assert run.params["step_unit"] == "request"
        # a snapshot every 25 requests (on the recorder's thread, labelled with the count when it began), one at stop
        steps = run.steps
        assert len(steps) >= 13 and steps[0] == 0 and steps[-1] >= 300
        assert max(b - a for a, b in itertools.pairwise(steps)) < 50, steps
    v = leak_run.verdicts()
    row = v[(v.probe == "watch") & v.subject.str.endswith(".LeakRecord") & (v.metric == "count")].iloc[0]
    assert row.verdict == "leak" and row.per_step == pytest.approx(1.0, abs=0.02)  # one object per request
    assert _leaks(clean_run) == []
