"""Top growers: every probe's measure of an owner in one row, largest growth per step first, with units."""

from __future__ import annotations

import math

import pandas as pd
import pytest

from tokdiag.analysis import GROWER_COLUMNS, growers, growers_table
from tokdiag.errors import ConfigError
from tokdiag.recording.run import Run
from tokdiag.records import COLUMNS

KB = 1024
MB = 1024 * 1024


def _tl(series: dict[tuple[str, str, str, str], object], run: str) -> pd.DataFrame:
    rows = [(run, s, 0.0, p, subj, m, float(f(s)), u)  # type: ignore[operator]
            for (p, subj, m, u), f in series.items() for s in range(0, 201, 10)]
    return pd.DataFrame(rows, columns=list(COLUMNS))


CHAIN = {"root": "module myapp.jobs", "root_kind": "module", "target_type": "Job",
         "edges": [{"kind": "attr", "label": "_DONE", "source_type": "module"},
                   {"kind": "index", "label": "0", "source_type": "list"}]}


def _run(name: str = "jobs") -> Run:
    tl = _tl({
        ("process", "process", "rss", "bytes"): lambda s: 1e8 + 20 * KB * s,
        ("watch", "myapp.jobs.Job", "count", "objects"): lambda s: 1.0 * s,
        ("watch", "myapp.jobs.Job", "bytes", "bytes"): lambda s: 10752.0 * s,
        ("census", "myapp.jobs.Job", "count", "objects"): lambda s: 1.0 * s,
        ("census", "myapp.jobs.Job", "bytes", "bytes"): lambda s: 560.0 * s,
        ("census", "myapp.jobs.Job", "unowned_bytes", "bytes"): lambda s: 0.0,
        ("cache", "myapp.render:_TEMPLATES", "entries", "entries"): lambda s: float(min(s, 32)),
        ("cache", "myapp.render:_TEMPLATES", "bytes", "bytes"): lambda s: 7.0 * KB * min(s, 32),
        ("cache", "myapp.render:_TEMPLATES", "native_bytes", "bytes"): lambda s: 0.0,
        ("native", "ssl.SSLContext", "native_bytes", "bytes"): lambda s: 830.0 * KB * (s // 20),
        ("native", "ssl.SSLContext", "count", "objects"): lambda s: 1.0 * (s // 20),
        ("census", "ssl.SSLContext", "count", "objects"): lambda s: 1.0 * (s // 20),
        ("census", "builtins.function", "count", "objects"): lambda s: 14000.0 + (3 if s else 0),  # start-up noise
        ("alloc", "myapp/jobs.py:9", "bytes", "bytes"): lambda s: 10240.0 * s,
        ("alloc", "lib/other.py:3", "bytes", "bytes"): lambda s: 2048.0 * s,
        ("process", "process", "gc_gen0", "objects"): lambda s: float(s % 70),
    }, name)
    return Run(name, tl, retention={"myapp.jobs.Job": [CHAIN]})


def test_one_row_per_owner_largest_growth_per_step_first_with_its_chain_and_sites():
    g = growers(_run())
    assert list(g.columns) == list(GROWER_COLUMNS)
    assert not g.duplicated(["run", "owner"]).any()  # Job once, though watch and census both judged it
    assert g["owner"].tolist() == ["ssl.SSLContext", "myapp.jobs.Job", "lib/other.py:3", "myapp.render:_TEMPLATES"]
    ssl = g.iloc[0]
    assert ssl["bytes_per_step"] == pytest.approx(830 * KB / 20) and ssl["native_per_step"] == ssl["bytes_per_step"]
    assert ssl["count_per_step"] == pytest.approx(1 / 20) and ssl["kind"] == "class"
    job = g.set_index("owner").loc["myapp.jobs.Job"]
    assert job["bytes_per_step"] == pytest.approx(10752.0) and job["count_per_step"] == pytest.approx(1.0)
    assert job["measured_by"] == "watch reachable bytes" and job["count_unit"] == "objects"
    assert job["chain"] == "module myapp.jobs -> _DONE[0]"
    assert job["sites"] == "myapp/jobs.py:9"  # the site in the class's module, not listed again as its own row
    assert "census instances: leak" in job["also"] and job["verdict"] == "leak"
    cache = g.set_index("owner").loc["myapp.render:_TEMPLATES"]
    assert cache["verdict"] in ("bounded", "step") and math.isnan(cache["bytes_per_step"])  # settled: no rate
    assert cache["growth"] == pytest.approx(32 * 7 * KB) and cache["count_end"] == 32
    assert "builtins.function" not in set(g["owner"])  # +3 objects once: below the practical minimum


def test_the_table_for_people_has_units_words_and_no_row_numbers():
    table = growers_table(growers([_run("before"), _run("after")]))
    assert table.index.name == "owner" and table.index[0] == "SSLContext"
    assert list(table.columns)[:3] == ["run", "kind", "verdict"]  # a run column: two runs in one table
    job = table[(table.index == "Job") & (table["run"] == "before")].iloc[0]
    assert job["growth per step"] == "+10.5 KiB/step"  # an exact line: no "10.5 KiB to 10.5 KiB" interval
    assert job["instances per step"] == "+1 object/step"
    assert job["at the end"] == "2.05 MiB, 200 objects"  # 200 x 10.5 KiB
    assert job["held by"] == "module myapp.jobs -> _DONE[0]" and job["allocated at"] == "myapp/jobs.py:9"
    templates = table.loc["_TEMPLATES"].iloc[0]
    assert templates["growth per step"] == "" and templates["grew"] == "+224 KiB"
    assert templates["at the end"] == "224 KiB, 32 entries"
    assert not any(c in table.columns for c in ("bytes_per_step", "per_step_b", "real"))
    one = growers_table(growers(_run()))
    assert "run" not in one.columns
    with pytest.raises(ConfigError, match="growers_table"):
        growers_table(pd.DataFrame({"x": [1]}))
    with pytest.raises(ConfigError, match="top="):
        growers(_run(), top=0)
