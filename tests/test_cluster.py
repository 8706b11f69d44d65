"""Batch on a Dask cluster: a real `dask scheduler` and `dask worker` processes on 127.0.0.1, faults, the cap.

The cluster tests share one scheduler and two single-threaded workers (each
started in its own folder, with its own TMPDIR and local directory: nothing on
disk is shared with the client's output folder). The test that kills a worker
lets its nanny start a new one; each test first waits for two workers.
"""

from __future__ import annotations

import _thread
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import tokdiag
from tokdiag.errors import ConfigError
from tokdiag.report.batch import run_batch
from tokdiag.report.cluster import parse_cluster, run_on_cluster
from tokdiag.report.plan import load_plan
from tokdiag.report.results import BatchResult

NOTEBOOKS = Path(__file__).parent / "notebooks"
SOURCE_ROOT = Path(tokdiag.__file__).resolve().parents[1]  # the tokdiag the workers must import too


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(SOURCE_ROOT), *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))])
    env.update(extra)
    return env


def _start_worker(address: str, folder: Path, name: str, *, pythonpath_first: Path | None = None) -> subprocess.Popen:
    """`dask worker` (a nanny, one single-threaded worker process); cwd, TMPDIR and local directory in ``folder``."""
    (folder / "tmp").mkdir(parents=True, exist_ok=True)
    env = _env(TMPDIR=str(folder / "tmp"))
    if pythonpath_first is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(pythonpath_first), env["PYTHONPATH"]])
    log = open(folder / "worker.log", "w")
    return subprocess.Popen([sys.executable, "-m", "dask", "worker", address, "--nworkers", "1", "--nthreads", "1",
                             "--no-dashboard", "--host", "127.0.0.1", "--name", name,
                             "--local-directory", str(folder / "scratch")],
                            cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def _workers(address: str) -> dict[str, int]:
    from distributed import Client

    with Client(address, set_as_default=False, timeout=10) as client:
        return client.nthreads()


def _worker_environ(address: str, name: str) -> dict[str, str | None]:
    from distributed import Client

    with Client(address, set_as_default=False, timeout=10) as client:
        return client.run(lambda: __import__("os").environ.get(name))  # os.environ.get would pickle ours


def _wait_for_workers(address: str, n: int, timeout: float = 90) -> dict[str, int]:
    deadline = time.monotonic() + timeout
    while True:
        found = _workers(address)
        if len(found) == n:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(found)} workers, not {n}, after {timeout} s")
        time.sleep(0.5)


class Cluster:
    def __init__(self, root: Path) -> None:
        self.root = root
        file = root / "scheduler.json"
        self.scheduler = subprocess.Popen(
            [sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
             "--scheduler-file", str(file)], cwd=root, env=_env(), stdout=open(root / "scheduler.log", "w"),
            stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while not file.exists() or not file.read_text().strip():
            assert self.scheduler.poll() is None and time.monotonic() < deadline, (root / "scheduler.log").read_text()
            time.sleep(0.2)
        time.sleep(0.2)  # the file is written in one go, but be sure it is complete
        self.address: str = json.loads(file.read_text())["address"]
        self.folders = [root / f"worker{i}" for i in range(2)]
        self.workers = [_start_worker(self.address, folder, f"w{i}") for i, folder in enumerate(self.folders)]
        _wait_for_workers(self.address, 2)

    def close(self) -> None:
        for worker in self.workers:
            _stop(worker)
        _stop(self.scheduler)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    started = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        yield started
    finally:
        started.close()


@pytest.fixture
def ready(cluster: Cluster) -> Cluster:
    """The shared cluster with its two workers (a killed one is back)."""
    _wait_for_workers(cluster.address, 2)
    return cluster


def _plan(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("rendezvous.ipynb", "simple_plot.ipynb", "broken.ipynb", "no_parameters.ipynb", "dies.ipynb",
                 "kernel_env.ipynb"):
        shutil.copy(NOTEBOOKS / name, folder / name)
    (folder / "plan.yaml").write_text(text, encoding="utf-8")
    return folder / "plan.yaml"


def _printed(notebook: Path | None) -> list[str]:
    """The lines a notebook's cells printed (stdout)."""
    assert notebook is not None
    cells = json.loads(notebook.read_text())["cells"]
    return [line for cell in cells if cell["cell_type"] == "code" for out in cell.get("outputs", [])
            if out.get("name") == "stdout" for line in "".join(out["text"]).splitlines()]


def _files(result: BatchResult) -> dict[str, list[str]]:
    return {r.spec.folder_name: sorted(p.relative_to(r.folder).as_posix() for p in r.folder.rglob("*") if p.is_file())
            for r in result.runs}


def _headlines(result: BatchResult) -> list[list[tuple[str, str, str]]]:
    """Each run's headlines; RSS keeps only its subject (its verdict is this machine's noise, not the run's)."""
    return [[(h.subject, "", "") if h.subject.endswith("RSS") else (h.subject, h.verdict, h.detail)
             for h in (r.summary.headlines if r.summary else ())] for r in result.runs]


# --------------------------------------------------------------------------- a real scheduler and two workers


@pytest.mark.slow
def test_a_plan_on_the_cluster_gives_the_folders_and_headlines_of_the_local_batch(
        ready: Cluster, tmp_path: Path) -> None:
    plan = _plan(tmp_path / "plan", """\
title: four runs
runs:
  - notebook: rendezvous.ipynb
    parameters: {steps: 10}
    grid: {name: [a, b]}
  - notebook: kernel_env.ipynb
    parameters: {names: "MALLOC_TRIM_THRESHOLD_,OMP_NUM_THREADS,PYTHONHASHSEED"}
  - notebook: broken.ipynb
""")
    # Dask's nanny puts allocator and thread settings into its worker processes
    assert set(_worker_environ(ready.address, "MALLOC_TRIM_THRESHOLD_").values()) == {"65536"}
    local = run_batch(plan, tmp_path / "local", jobs=2, progress=None)
    progress = io.StringIO()
    remote = run_batch(plan, tmp_path / "remote", cluster=ready.address, progress=progress)
    assert [r.status for r in local.runs] == [r.status for r in remote.runs] == ["ok", "ok", "ok", "failed"]
    assert remote.runs[3].failure == local.runs[3].failure  # the same cell, the same exception
    assert _files(remote) == _files(local)
    assert _files(remote)["01-rendezvous-name=a"] == [".tokdiag-run", "journal.jsonl", "rendezvous.html",
                                                      "rendezvous.ipynb"]
    assert _headlines(remote) == _headlines(local)
    assert ("__main__.Kept count", "leak", "+1 objects/step") in _headlines(remote)[0]
    # ... which a kernel on a worker must not inherit: it measures what a local kernel measures
    shown = [_printed(run.notebook) for run in (local.runs[2], remote.runs[2])]
    assert shown[0] == shown[1] and len(shown[0]) == 3, shown
    # the same index (files, links, errors), plus where each run ran (headlines compared above)
    local_index = json.loads((local.out_dir / "index.json").read_text())["runs"]
    remote_index = json.loads((remote.out_dir / "index.json").read_text())["runs"]
    placement = ("host", "worker", "attempts", "duration_s", "headlines")
    assert ([{k: v for k, v in r.items() if k not in placement} for r in remote_index]
            == [{k: v for k, v in r.items() if k not in placement} for r in local_index])
    workers = set(_workers(ready.address))
    assert {r["worker"] for r in remote_index} <= workers and all(r["attempts"] == 1 for r in remote_index)
    assert "<th>ran on</th>" in remote.index.read_text() and "<th>ran on</th>" not in local.index.read_text()
    # each kernel was its own process, started by a worker, not by this client
    for run in remote.runs[:2]:
        header = json.loads(run.journals[0].read_text().splitlines()[0])
        assert header["pid"] != os.getpid() and header["host"] == run.host
        assert f"in pid {header['pid']}" in run.notebook.read_text()
    # the workers ran in their own folders and left nothing there
    for folder in ready.folders:
        assert not list((folder / "scratch").rglob("tokdiag-*")), list((folder / "scratch").rglob("tokdiag-*"))
        assert not list(folder.rglob("*.jsonl"))
    text = progress.getvalue()
    assert f"2 Dask workers on {socket.gethostname()}, 2 runs at a time" in text and text.count("[start]") == 4
    assert "(4 done, 1 failed, 0 running)" in text


def _killer(meeting: Path, release: bool, found: dict[str, int]) -> threading.Thread:
    """Waits for the victim kernel's pid file, then SIGKILLs the kernel's parent: the Dask worker running it."""
    import psutil

    def kill() -> None:
        deadline = time.monotonic() + 90
        pid_file = meeting / "victim.pid"
        while not (pid_file.exists() and pid_file.read_text().strip()):
            if time.monotonic() > deadline:
                return
            time.sleep(0.05)
        kernel = psutil.Process(int(pid_file.read_text()))
        worker = kernel.parent()
        found.update(kernel=kernel.pid, worker=worker.pid, nanny=worker.parent().pid)
        worker.send_signal(signal.SIGKILL)
        if release:  # a second pid file lets the retried run through the rendezvous at once
            (meeting / "release.pid").write_text("0")

    thread = threading.Thread(target=kill, daemon=True)
    thread.start()
    return thread


def _victim_plan(folder: Path, meeting: Path) -> Path:
    return _plan(folder, f"""\
runs:
  - notebook: rendezvous.ipynb
    name: victim
    parameters: {{meeting: "{meeting}", name: victim, expect: 2, wait_s: 120, steps: 5}}
  - notebook: rendezvous.ipynb
    parameters: {{steps: 5}}
  - notebook: no_parameters.ipynb
    name: plain
  - notebook: no_parameters.ipynb
    name: plain2
""")


@pytest.mark.slow
@pytest.mark.parametrize("retries", [0, 1])
def test_a_worker_killed_mid_run_fails_that_run_or_retries_it_and_the_others_complete(
        ready: Cluster, tmp_path: Path, retries: int) -> None:
    import psutil

    meeting = tmp_path / "meeting"
    meeting.mkdir()
    plan = _victim_plan(tmp_path / "plan", meeting)
    found: dict[str, int] = {}
    killer = _killer(meeting, release=bool(retries), found=found)
    progress = io.StringIO()
    result = run_batch(plan, tmp_path / "out", cluster=ready.address, retries=retries, progress=progress)
    killer.join(timeout=5)
    # the killed process was a Dask worker started by our `dask worker` (its nanny), and the kernel its child
    assert found and found["nanny"] in {w.pid for w in ready.workers}
    victim, *others = result.runs
    assert [r.status for r in others] == ["ok", "ok", "ok"]
    record = json.loads((result.out_dir / "index.json").read_text())["runs"][0]
    if retries == 0:
        assert victim.status == "failed" and victim.failure is not None and victim.failure.ename == "WorkerLost"
        assert "died or lost its scheduler while running this run" in victim.failure.evalue
        assert victim.worker in victim.failure.evalue and victim.attempts == 1
        assert record["status"] == "failed" and record["error"]["ename"] == "WorkerLost" and record["worker"]
        assert "[retry]" not in progress.getvalue()
    else:
        assert victim.ok and victim.attempts == 2, victim.failure
        assert record["status"] == "ok" and record["attempts"] == 2
        assert "[retry] 01-victim: WorkerLost" in progress.getvalue()
        assert "2 attempts" in result.index.read_text()
    # the orphaned kernel does not outlive its worker (ipykernel's parent poller)
    deadline = time.monotonic() + 15
    while psutil.pid_exists(found["kernel"]) and psutil.Process(found["kernel"]).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the kernel of the killed worker is still running"
        time.sleep(0.2)


@pytest.mark.slow
def test_a_kernel_killed_on_a_worker_fails_its_run_and_is_retried_on_another_worker(
        ready: Cluster, tmp_path: Path) -> None:
    plan = _plan(tmp_path / "plan", "runs:\n  - notebook: dies.ipynb\n  - notebook: no_parameters.ipynb\n")
    progress = io.StringIO()
    result = run_batch(plan, tmp_path / "out", cluster=ready.address, retries=1, progress=progress)
    dies, plain = result.runs
    assert plain.ok and not dies.ok and dies.attempts == 2
    assert dies.failure is not None and dies.failure.ename == "DeadKernelError" and dies.failure.cell_index is None
    text = progress.getvalue()
    assert "[retry] 01-dies: DeadKernelError" in text
    first, second = (re.search(rf"\[start\] 01-dies on \S+ \((tcp://[\d.:]+){again}\)", text)
                     for again in ("", ", attempt 2"))
    assert first and second and first.group(1) != second.group(1), text  # the retry ran elsewhere
    assert dies.worker == second.group(1)


@pytest.mark.slow
def test_a_run_above_the_cap_is_failed_and_its_big_files_stay_on_the_worker(ready: Cluster, tmp_path: Path) -> None:
    plan = load_plan(_plan(tmp_path / "plan", "runs:\n  - notebook: simple_plot.ipynb\n"))
    out = tmp_path / "out"
    (result,) = run_on_cluster(plan, out, ready.address, max_run_bytes=200_000)
    assert result.failure is not None and result.failure.ename == "RunTooLarge"
    assert "simple_plot.html (" in result.failure.evalue and "left on worker" in result.failure.evalue
    match = re.search(r" in (/\S+): copy them from there", result.failure.evalue)
    assert match, result.failure.evalue
    left = Path(match.group(1))
    assert (left / "simple_plot.html").is_file()
    assert any(left.is_relative_to(folder / "scratch") for folder in ready.folders)  # the worker's own disk
    here = out / "01-simple_plot"
    assert (here / "summary.json").is_file() and (here / "simple_plot.ipynb").is_file()
    assert not (here / "simple_plot.html").exists() and result.html is None and result.notebook is not None
    assert result.summary is not None and result.summary.headlines[0].subject == "bytes"
    shutil.rmtree(left.parent)


@pytest.mark.slow
def test_a_worker_with_another_tokdiag_is_refused_by_name(ready: Cluster, tmp_path: Path) -> None:
    fake = tmp_path / "fake"
    (fake / "tokdiag").mkdir(parents=True)
    (fake / "tokdiag" / "__init__.py").write_text('__version__ = "0.0.0-other"\n')
    odd = _start_worker(ready.address, tmp_path / "odd", "odd", pythonpath_first=fake)
    try:
        _wait_for_workers(ready.address, 3)
        plan = _plan(tmp_path / "plan", "runs:\n  - notebook: no_parameters.ipynb\n")
        with pytest.raises(ConfigError) as caught:
            run_batch(plan, tmp_path / "out", cluster=ready.address, progress=None)
        message = str(caught.value)
        odd_address = _address_named(ready, "odd")
        assert f"worker {odd_address} on " in message and "tokdiag 0.0.0-other" in message
        assert f"install tokdiag {tokdiag.__version__}" in message
        assert message.count("worker tcp://") == 1  # the good workers are not named
        assert not (tmp_path / "out" / "01-no_parameters").exists()  # refused before anything ran
    finally:
        _stop(odd)
        _wait_for_workers(ready.address, 2)


def _address_named(cluster: Cluster, name: str) -> str:
    from distributed import Client

    with Client(cluster.address, set_as_default=False, timeout=10) as client:
        return next(address for address, info in client.scheduler_info()["workers"].items()
                    if str(info.get("name", "")).startswith(name))


@pytest.mark.slow
def test_ctrl_c_keeps_what_finished_and_cancels_the_rest(ready: Cluster, tmp_path: Path) -> None:
    meeting = tmp_path / "meeting"
    meeting.mkdir()
    plan = _plan(tmp_path / "plan", f"""\
runs:
  - notebook: rendezvous.ipynb
    name: held
    parameters: {{meeting: "{meeting}", name: held, expect: 2, wait_s: 120, steps: 5}}
  - notebook: no_parameters.ipynb
  - notebook: no_parameters.ipynb
  - notebook: no_parameters.ipynb
""")

    class CtrlCAfterFirst(io.StringIO):
        def write(self, text: str) -> int:
            if text.startswith("[1/4] ok"):
                _thread.interrupt_main()
            return super().write(text)

    progress = CtrlCAfterFirst()
    out = tmp_path / "out"
    try:
        with pytest.raises(KeyboardInterrupt):
            run_batch(plan, out, cluster=ready.address, progress=progress)
    finally:
        (meeting / "release.pid").write_text("0")  # let the held kernel finish on its worker
    index = json.loads((out / "index.json").read_text())["runs"]
    statuses = [(r["status"], (r["error"] or {}).get("ename")) for r in index]
    assert statuses.count(("ok", None)) == 1 and statuses.count(("failed", "Cancelled")) == 3
    finished = next(r for r in index if r["status"] == "ok")
    assert (out / finished["folder"] / "no_parameters.html").is_file()
    assert index[0]["status"] == "failed"  # the held run never finished
    assert "interrupted; 1 finished runs kept, 3 cancelled" in progress.getvalue()


# --------------------------------------------------------------------------- a LocalCluster, through the command line


@pytest.mark.slow
def test_cli_cluster_local_runs_the_plan_on_a_worker_process(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tokdiag.cli import main

    plan = _plan(tmp_path / "plan", "runs:\n  - notebook: broken.ipynb\n  - notebook: no_parameters.ipynb\n")
    environ = dict(os.environ)
    status = main(["batch", str(plan), "--cluster", "local:1", "--retries", "1", "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert status == 1  # broken.ipynb fails in a cell: not retried, reported
    assert "on the Dask cluster local:1" in err and "[retry]" not in err
    assert f"1 Dask worker on {socket.gethostname()}, 1 run at a time" in err
    index = json.loads((tmp_path / "out" / "index.json").read_text())["runs"]
    assert [r["status"] for r in index] == ["failed", "ok"]
    assert index[0]["error"]["ename"] == "ZeroDivisionError" and index[0]["attempts"] == 1
    assert all(r["worker"].startswith("tcp://127.0.0.1:") for r in index)
    assert dict(os.environ) == environ  # the LocalCluster's nannies ran in this process; what they set is undone


# --------------------------------------------------------------------------- no cluster needed


def test_the_default_path_does_not_import_dask() -> None:
    code = ("import sys, tokdiag, tokdiag.report.batch, tokdiag.cli, tokdiag.report.cluster\n"
            "from tokdiag.cli import build_parser\n"
            "build_parser().parse_args(['batch', 'plan.yaml', '--cluster', 'local:2'])\n"
            "tokdiag.report.cluster.parse_cluster('tcp://h:8786')\n"
            "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('distributed', 'dask'))\n"
            "assert not loaded, loaded\n")
    subprocess.run([sys.executable, "-c", code], check=True, env=_env(), cwd=SOURCE_ROOT)


@pytest.mark.parametrize(("text", "address"), [
    ("tcp://127.0.0.1:8786", "tcp://127.0.0.1:8786"), ("10.0.0.5:8786", "tcp://10.0.0.5:8786"),
    ("tls://sched.example.org:8786", "tls://sched.example.org:8786"), ("tcp://[::1]:8786", "tcp://[::1]:8786"),
    (" scheduler ", "tcp://scheduler"),
])
def test_cluster_addresses_are_read(text: str, address: str) -> None:
    assert parse_cluster(text).address == address
    assert parse_cluster("local:3").local_workers == 3 and str(parse_cluster("local:3")) == "local:3"


@pytest.mark.parametrize(("text", "message"), [
    ("local:0", r"local:N needs N >= 1 worker processes"),
    ("local", r"local:N needs N >= 1"),
    ("tcpp://h:8786", r"not a scheduler address \(did you mean 'tcp'\?\); give tcp://HOST:PORT"),
    ("tcp://h:99999", r"'tcp://h:99999' is not a scheduler address"),
    ("", r"give a scheduler address"),
])
def test_bad_cluster_values_are_config_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_cluster(text)


def test_retries_and_cluster_are_checked_before_anything_runs(tmp_path: Path) -> None:
    plan = _plan(tmp_path / "plan", "runs:\n  - notebook: no_parameters.ipynb\n")
    with pytest.raises(ConfigError, match=r"retries=1 re-runs runs whose Dask worker died; it needs a cluster"):
        run_batch(plan, tmp_path / "out", retries=1, progress=None)
    with pytest.raises(ConfigError, match=r"retries must be a whole number >= 0, got -1"):
        run_batch(plan, tmp_path / "out", cluster="local:1", retries=-1, progress=None)
    with pytest.raises(ConfigError, match=r"local:N needs N >= 1"):
        run_batch(plan, tmp_path / "out", cluster="local:0", progress=None)
    assert not (tmp_path / "out").exists()


def test_cli_reports_a_bad_cluster_as_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tokdiag.cli import main

    plan = _plan(tmp_path / "plan", "runs:\n  - notebook: no_parameters.ipynb\n")
    assert main(["batch", str(plan), "--cluster", "tcpp://h:1", "-o", str(tmp_path / "out")]) == 2
    assert "tokdiag: error: --cluster 'tcpp://h:1' is not a scheduler address" in capsys.readouterr().err


def test_without_distributed_the_cluster_path_says_how_to_install_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    plan = _plan(tmp_path / "plan", "runs:\n  - notebook: no_parameters.ipynb\n")
    with pytest.raises(ConfigError, match=r"pip install 'tokdiag\[cluster\]'"):
        run_batch(plan, tmp_path / "out", cluster="local:1", progress=None)


def test_nothing_listens_there_is_a_config_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tokdiag.report import cluster

    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT_S", 1.0)

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    plan = _plan(tmp_path / "plan", "runs:\n  - notebook: no_parameters.ipynb\n")
    with pytest.raises(ConfigError, match=rf"--cluster tcp://127.0.0.1:{port}: no Dask scheduler answered"):
        run_batch(plan, tmp_path / "out", cluster=f"tcp://127.0.0.1:{port}", progress=None)


def test_a_retry_waiting_for_workers_that_left_goes_to_any_worker(tmp_path: Path) -> None:
    from tokdiag.report.batch import Progress
    from tokdiag.report.cluster_batch import ClusterBatch

    class Future:
        def __init__(self, key: str) -> None:
            self.key = key

        def done(self) -> bool:
            return False

    class Client:
        def __init__(self) -> None:
            self.workers = {"tcp://a:1": 1, "tcp://b:1": 1}
            self.submitted: list[tuple[str, object]] = []
            self.cancelled: list[str] = []

        def nthreads(self) -> dict[str, int]:
            return dict(self.workers)

        def submit(self, *args: object, key: str, **kwargs: object) -> Future:
            self.submitted.append((key, kwargs.get("workers")))
            return Future(key)

        def cancel(self, futures: list[Future]) -> None:
            self.cancelled += [f.key for f in futures]

    class Pending:
        def add(self, future: Future) -> None:
            pass

    plan = load_plan(_plan(tmp_path / "plan", "runs:\n  - notebook: no_parameters.ipynb\n"))
    client, progress = Client(), io.StringIO()
    batch = ClusterBatch(client, None, plan, tmp_path / "out", retries=1,  # type: ignore[arg-type]
                         report=Progress(progress, 1), expected={}, max_run_bytes=1)
    batch.pending = Pending()
    batch.submit(plan.runs[0], 2, ("tcp://a:1",))  # attempt 1 failed on a
    assert client.submitted == [(client.submitted[0][0], ["tcp://b:1"])]  # only b may take it
    batch.rescue_stranded()
    assert len(client.submitted) == 1 and not client.cancelled  # b is still there: it waits for b
    del client.workers["tcp://b:1"]
    client.workers["tcp://c:1"] = 1  # b left; a new worker joined
    batch.rescue_stranded()
    assert client.cancelled == [client.submitted[0][0]] and client.submitted[1][1] is None
    assert [job.attempt for job in batch.jobs.values()] == [2]
    assert "the other workers have left; attempt 2 now goes to any worker" in progress.getvalue()
