"""Time to the limit: cgroup limits read from fake and real files, and the extrapolation on exact timelines."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import tokdiag as td
from tokdiag.analysis.limit import (
    TimeToLimit,
    format_duration,
    parse_size,
    time_to_limit,
)
from tokdiag.errors import ConfigError
from tokdiag.probes.limits import MemoryLimit, header_entry, memory_limit
from tokdiag.records import COLUMNS

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30


# --------------------------------------------------------------------------- cgroup files

def _fake(tmp_path: Path, cgroup: str, files: dict[str, str], mountinfo: str | None = None) -> Path:
    proc = tmp_path / "proc" / "self"
    proc.mkdir(parents=True)
    (proc / "cgroup").write_text(cgroup)
    if mountinfo is not None:
        (proc / "mountinfo").write_text(mountinfo)
    for rel, text in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return tmp_path


V2_MOUNT = "30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate\n"


def test_v2_the_lowest_limit_on_the_path_wins(tmp_path: Path):
    root = _fake(tmp_path, "0::/kubepods/pod1/c1\n", {
        "sys/fs/cgroup/cgroup.controllers": "cpu memory\n",
        "sys/fs/cgroup/kubepods/memory.max": f"{8 * GiB}\n",
        "sys/fs/cgroup/kubepods/pod1/memory.max": f"{4 * GiB}\n",
        "sys/fs/cgroup/kubepods/pod1/c1/memory.max": "max\n",
    }, V2_MOUNT)
    assert memory_limit(root=root) == MemoryLimit(4 * GiB, "cgroup v2 memory.max", "/kubepods/pod1")


def test_v2_in_a_container_with_its_own_cgroup_namespace(tmp_path: Path):
    root = _fake(tmp_path, "0::/\n", {"sys/fs/cgroup/memory.max": "536870912\n"}, V2_MOUNT)
    assert memory_limit(root=root).bytes == 512 * MiB


def test_v2_max_everywhere_is_no_limit(tmp_path: Path):
    root = _fake(tmp_path, "0::/user.slice/s\n", {
        "sys/fs/cgroup/user.slice/memory.max": "max\n",
        "sys/fs/cgroup/user.slice/s/memory.max": "max\n",
    })  # no mountinfo: /sys/fs/cgroup is assumed
    lim = memory_limit(root=root)
    assert lim is not None and lim.bytes is None and lim.unlimited and lim.source == "cgroup v2 memory.max"


def test_v2_without_the_memory_controller_is_no_limit(tmp_path: Path):
    root = _fake(tmp_path, "0::/app\n", {"sys/fs/cgroup/cgroup.controllers": "cpu io\n",
                                         "sys/fs/cgroup/app/cgroup.procs": "1\n"}, V2_MOUNT)
    lim = memory_limit(root=root)
    assert lim is not None and lim.bytes is None and "no memory.max" in lim.source


def test_v1_without_a_cgroup_namespace_reads_the_mount_root(tmp_path: Path):
    # /proc/self/cgroup names the host's path; the mount shows that folder as its root
    mountinfo = V2_MOUNT.replace("/sys/fs/cgroup ", "/sys/fs/cgroup/unified ") + \
        "35 31 0:32 /docker/abc /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n"
    root = _fake(tmp_path, "5:cpu,cpuacct:/docker/abc\n4:memory:/docker/abc\n0::/\n", {
        "sys/fs/cgroup/memory/memory.limit_in_bytes": f"{GiB}\n",
    }, mountinfo)
    assert memory_limit(root=root) == MemoryLimit(GiB, "cgroup v1 memory.limit_in_bytes", "/docker/abc")


def test_v1_without_mountinfo_and_unlimited(tmp_path: Path):
    root = _fake(tmp_path, "4:memory:/a/b\n", {
        "sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n",
        "sys/fs/cgroup/memory/a/memory.limit_in_bytes": "9223372036854771712\n",
        "sys/fs/cgroup/memory/a/b/memory.limit_in_bytes": "9223372036854771712\n",
    })
    lim = memory_limit(root=root)
    assert lim == MemoryLimit(None, "cgroup v1 memory.limit_in_bytes", "/a/b")


def test_v1_a_parent_limit_bounds_the_child(tmp_path: Path):
    root = _fake(tmp_path, "4:memory:/a/b\n", {
        "sys/fs/cgroup/memory/a/memory.limit_in_bytes": f"{2 * GiB}\n",
        "sys/fs/cgroup/memory/a/b/memory.limit_in_bytes": "9223372036854771712\n",
    })
    assert memory_limit(root=root) == MemoryLimit(2 * GiB, "cgroup v1 memory.limit_in_bytes", "/a")


def test_hybrid_layout_uses_the_v1_memory_controller(tmp_path: Path):
    root = _fake(tmp_path, "4:memory:/\n0::/user.slice\n", {
        "sys/fs/cgroup/memory/memory.limit_in_bytes": f"{3 * GiB}\n",
        "sys/fs/cgroup/user.slice/memory.max": f"{GiB}\n",
    })
    assert memory_limit(root=root).bytes == 3 * GiB


def test_a_mount_point_with_a_space(tmp_path: Path):
    mountinfo = "30 23 0:26 / /cg\\040root rw - cgroup2 cgroup2 rw\n"
    root = _fake(tmp_path, "0::/\n", {"cg root/memory.max": f"{GiB}\n"}, mountinfo)
    assert memory_limit(root=root).bytes == GiB


@pytest.mark.parametrize("layout", ["no proc file", "no limit files", "garbage"])
def test_missing_or_unreadable_cgroups_are_unknown(tmp_path: Path, layout: str):
    if layout == "no proc file":
        assert memory_limit(root=tmp_path) is None
        return
    files = {} if layout == "no limit files" else {"sys/fs/cgroup/memory/memory.limit_in_bytes": "lots\n"}
    root = _fake(tmp_path, "4:memory:/x\n", files)
    assert memory_limit(root=root) is None


def test_this_machine_and_the_journal_header(tmp_path: Path):
    lim = memory_limit()
    if lim is not None and lim.bytes is not None:
        assert lim.bytes > 0
    run = td.track(lambda i: None, steps=3, census=False, progress=False, journal=tmp_path / "j.jsonl")
    assert run.header["memory_limit"] == header_entry() == (None if lim is None else lim.as_dict())
    assert td.load(tmp_path / "j.jsonl").header["memory_limit"] == run.header["memory_limit"]


# --------------------------------------------------------------------------- parsing and wording

@pytest.mark.parametrize("text, n", [
    ("4GiB", 4 * GiB), ("4Gi", 4 * GiB), ("4g", 4 * GiB), ("4 GB", 4 * 10**9), ("512MiB", 512 * MiB),
    ("1.5G", 3 * GiB // 2), (" 100 ", 100), (4096, 4096), (2.0 * GiB, 2 * GiB), ("1TiB", 1 << 40),
])
def test_parse_size(text, n):
    assert parse_size(text) == n


@pytest.mark.parametrize("bad", ["4 gigs", "", "-1G", "0", 0, -5, True, None, [4]])
def test_parse_size_refuses(bad):
    with pytest.raises(ConfigError, match="limit="):
        parse_size(bad)


@pytest.mark.parametrize("seconds, text", [
    (0, "under a minute"), (59, "under a minute"), (60, "~1 min"), (37 * 60, "~37 min"), (89 * 60, "~89 min"),
    (90 * 60, "~1.5 h"), (3 * 3600, "~3 h"), (4.4 * 3600, "~4 h"), (14.6 * 3600, "~15 h"), (47 * 3600, "~47 h"),
    (48 * 3600, "~2 days"), (86400 * 1.0, "~24 h"), (10 * 86400, "~10 days"), (20 * 86400, "~2.9 weeks"),
    (100 * 86400, "~3 months"), (3 * 365.25 * 86400, "~3 years"), (math.inf, "never"), (None, "n/a"),
])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


# --------------------------------------------------------------------------- the extrapolation

def _tl(rss, elapsed, steps, run: str = "svc") -> pd.DataFrame:
    rows = [(run, int(s), float(e), "process", "process", "rss", float(v), "bytes")
            for s, e, v in zip(steps, elapsed, rss, strict=True)]
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _line(per_step=1.8 * MiB, start=100 * MiB, seconds_per_step=5.0, last=60, every=5, noise=None):
    steps = np.arange(0, last + 1, every)
    rss = start + per_step * steps
    if noise is not None:
        rss = rss + noise
    return _tl(rss, steps * seconds_per_step, steps)


def test_the_issue_example_exactly():
    # 1.8 MiB per request, a request every 5 s (720 per hour), 208 MiB now: 3,888 MiB left = 2,160 requests = 3 h
    t = time_to_limit(_line(), "4GiB", per="request")
    assert isinstance(t, TimeToLimit) and t.status == "limit"
    assert t.limit_bytes == 4 * GiB and t.limit_source == "given" and t.rss_bytes == 208 * MiB
    assert t.per_step == pytest.approx(1.8 * MiB) and t.steps_per_hour == pytest.approx(720)
    assert t.per_hour == pytest.approx(1.8 * MiB * 720)
    assert t.steps_left == pytest.approx(2160) and t.seconds == pytest.approx(3 * 3600)
    # an exact line: its interval is the line, so both bounds agree with the estimate
    assert t.seconds_pessimistic == pytest.approx(t.seconds) == pytest.approx(t.seconds_optimistic)
    assert t.text == "at +1.8 MiB per request and ~720 requests per hour, the 4 GiB limit is reached in ~3 h"
    assert t.headline == "4 GiB limit in ~3 h" and str(t) == t.text


def test_bounds_come_from_the_growth_interval():
    rng = np.random.default_rng(3)
    tl = _line(last=200, noise=rng.normal(0, 30 * MiB, 41))
    t = time_to_limit(tl, 4 * GiB)
    v = td.analysis.classify(tl["step"], tl["value"])
    assert (t.per_step_low, t.per_step, t.per_step_high) == (v.per_step_low, v.per_step, v.per_step_high)
    headroom = 4 * GiB - float(tl["value"].iloc[-1])
    assert t.steps_left_pessimistic == pytest.approx(headroom / v.per_step_high)
    assert t.steps_left_optimistic == pytest.approx(headroom / v.per_step_low)
    assert t.seconds_pessimistic < t.seconds < t.seconds_optimistic
    assert t.seconds_pessimistic == pytest.approx(t.steps_left_pessimistic / 720 * 3600)
    assert "at the 99% bounds of the growth" in t.text


def test_the_pace_is_taken_after_the_warm_up():
    # a 500 MiB import and 100 s spent in step 0..5, then 1 MiB and 10 s per step
    steps = np.arange(0, 101, 5)
    rss = np.where(steps >= 5, 600 * MiB + MiB * (steps - 5), 100 * MiB)
    elapsed = np.where(steps >= 5, 100.0 + 10.0 * (steps - 5), 0.0)
    t = time_to_limit(_tl(rss, elapsed, steps), 2 * GiB)
    assert t.steps_per_hour == pytest.approx(360)  # not (100 steps / 1,050 s)
    left = (2 * GiB - (600 + 95) * MiB) / MiB
    assert t.steps_left == pytest.approx(left) and t.seconds == pytest.approx(left * 10)


def test_without_elapsed_time_the_answer_is_in_steps():
    tl = _line()
    tl["elapsed_s"] = 0.0
    t = time_to_limit(tl, "4GiB")
    assert t.steps_per_hour is None and t.seconds is None and t.steps_left == pytest.approx(2160)
    assert t.text == "at +1.8 MiB per step, the 4 GiB limit is reached in ~2,200 more steps"


def test_a_slow_service_is_paced_per_day():
    t = time_to_limit(_line(seconds_per_step=7200.0), "4GiB", per="task")
    assert t.text.startswith("at +1.8 MiB per task and ~12 tasks per day,")
    assert t.text.endswith("reached in ~6 months")


@pytest.mark.parametrize("values", [
    np.full(13, 300.0 * MiB),                                          # flat
    np.minimum(np.arange(13), 4) * 10.0 * MiB + 300 * MiB,             # grew, then stopped
])
def test_no_leak_no_time(values):
    assert time_to_limit(_tl(values, np.arange(13) * 5.0, np.arange(0, 61, 5)), "4GiB") is None


def _run(tl: pd.DataFrame, header: dict) -> td.Run:
    return td.Run(name="svc", timeline=tl, header=header)


def test_the_limit_recorded_in_the_header_is_used():
    run = _run(_line(), {"memory_limit": MemoryLimit(4 * GiB, "cgroup v2 memory.max", "/").as_dict(),
                         "params": {"step_unit": "request"}})
    t = run.time_to_limit()
    assert (t.status, t.limit_bytes, t.limit_source) == ("limit", 4 * GiB, "cgroup v2 memory.max")
    assert t.text == "at +1.8 MiB per request and ~720 requests per hour, the 4 GiB limit is reached in ~3 h"
    assert run.time_to_limit("2GiB").limit_bytes == 2 * GiB  # a given limit wins


def test_no_limit_set_is_max():
    run = _run(_line(), {"memory_limit": {"bytes": None, "source": "cgroup v1 memory.limit_in_bytes"}})
    t = time_to_limit(run)
    assert t.status == "max" and t.limit_bytes is None and t.seconds is None and t.headline == "no memory limit set"
    assert t.text == ("at +1.8 MiB per step and ~720 steps per hour, RSS grows without bound and no memory limit is "
                      "set (cgroup v1 memory.limit_in_bytes: max); the machine's memory runs out first")


def test_an_unknown_limit_says_how_to_give_one():
    for source in (_line(), _run(_line(), {}), _run(_line(), {"memory_limit": None})):
        t = time_to_limit(source)
        assert t.status == "unknown" and "limit_bytes='4GiB'" in t.text


def test_already_above_the_limit():
    t = time_to_limit(_line(), "200MiB")
    assert t.status == "over" and t.seconds == 0 and t.steps_left == 0
    assert t.text == "RSS (208 MiB) is already above the 200 MiB limit"


def test_bad_input():
    two = pd.concat([_line(), _tl([1.0] * 13, [0.0] * 13, range(13), run="other")])
    with pytest.raises(ConfigError, match="holds 2 runs"):
        time_to_limit(two, "4GiB")
    with pytest.raises(ConfigError, match="no process rss"):
        time_to_limit(_line().assign(metric="uss"), "4GiB")
    with pytest.raises(ConfigError, match="not a size"):
        time_to_limit(_line(), "four gigs")
    with pytest.raises(ConfigError, match="run_or_timeline is a list"):
        time_to_limit([1, 2], "4GiB")


def test_a_real_leak_reaches_the_limit_when_predicted():
    # the first 40 steps of a tracked leak predict when RSS passes a limit 100 leaked chunks above step 40's RSS;
    # the rest of the same run says when it really did
    import mmap

    kept: list[mmap.mmap] = []
    chunk = 256 * KiB

    def leak(i: int) -> None:
        # fresh pages, written so resident: bytes objects could reuse what earlier tests of the process freed
        # (glibc raises its mmap threshold after frees), and RSS would not move for the first steps
        m = mmap.mmap(-1, chunk)
        m.write(b"x" * chunk)
        kept.append(m)

    run = td.track(leak, steps=160, every=2, census=False, progress=False)
    for m in kept:
        m.close()
    kept.clear()
    rss = run.series("process", "process", "rss")
    limit = int(rss.loc[40]) + 100 * chunk
    head = run.timeline[run.timeline["step"] <= 40]
    t = time_to_limit(head, limit)
    assert t is not None and t.status == "limit"
    assert t.seconds == pytest.approx(t.steps_left / t.steps_per_hour * 3600)
    reached = int(rss[rss >= limit].index[0]) - 40
    assert t.steps_left_pessimistic - 2 <= reached <= t.steps_left_optimistic + 2, (reached, t)


def test_the_rss_headline_says_when_the_limit_is_reached(tmp_path: Path):
    from tokdiag.recording.journal import JournalWriter, make_header
    from tokdiag.records import Record
    from tokdiag.report.summary import headlines_from_journals

    header = make_header("svc", {"step_unit": "request"})
    header["memory_limit"] = MemoryLimit(4 * GiB, "cgroup v2 memory.max", "/").as_dict()
    with JournalWriter(tmp_path / "svc.jsonl", header) as w:
        for s in range(0, 61, 5):
            w.snapshot(s, s * 5.0, [Record("process", "process", "rss", 100 * MiB + s * 1.8 * MiB, "bytes")])
    (rss,) = [h for h in headlines_from_journals([tmp_path / "svc.jsonl"]) if h.subject == "RSS"]
    assert rss.verdict == "leak" and rss.detail == "+1.8 MiB/step; 4 GiB limit in ~3 h"
