"""Charts of issue 12: the ledger after warm-up and what warm-up cost, top growers, a quieter verdict table,
axis titles and ticks that say the unit once, runs told apart in A/B."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from tokdiag import charts
from tokdiag.analysis import compare
from tokdiag.charts._style import _KIND_PALETTES, _UNEXPLAINED_COLOR
from tokdiag.errors import ConfigError
from tokdiag.recording.run import Run
from tokdiag.records import COLUMNS

KB, MB = 1024, 1024 * 1024
STEPS = range(0, 301, 10)
EVIL = "<img src=x onerror=alert(1)>"


def _run(series: dict[tuple[str, str, str, str], Any], name: str = "svc", **kw: Any) -> Run:
    rows = []
    for (p, subj, m, u), f in series.items():
        for n, s in enumerate(STEPS):
            v = f[n] if isinstance(f, np.ndarray) else f(s)
            rows.append((name, s, s / 10, p, subj, m, float(v), u))
    return Run(name, pd.DataFrame(rows, columns=list(COLUMNS)), **kw)


def _loaded_once() -> Run:
    """40 MiB loaded at step 50 (a vocabulary), then a watched class leaking 20 KiB per step."""
    rng = np.random.default_rng(2)
    loaded = np.asarray([s >= 50 for s in STEPS], dtype=float)
    return _run({
        ("process", "process", "rss", "bytes"): 200 * MB + 40 * MB * loaded + 25 * KB * np.asarray(STEPS)
                                                 + rng.integers(0, 4, len(STEPS)) * 4096.0,
        ("cache", "app:_VOCAB", "bytes", "bytes"): 4 * MB * loaded,
        ("cache", "app:_VOCAB", "native_bytes", "bytes"): 32 * MB * loaded,
        ("watch", "app.Job", "bytes", "bytes"): lambda s: 20.0 * KB * s,
        ("watch", "app.Job", "count", "objects"): lambda s: 1.0 * s,
        ("native", "ssl.SSLContext", "native_bytes", "bytes"): lambda s: 10.0 * KB * s,
        ("allocator", "glibc", "free", "bytes"): lambda s: 2 * MB + 2.0 * KB * s,
        ("allocator", "pymalloc", "free", "bytes"): lambda s: 1 * MB + 1.0 * KB * s,
        ("allocator", "pages", "file", "bytes"): lambda s: 30 * MB + 1.0 * KB * s,
    }, "app")


def _text(cell: str) -> str:
    """A table cell as the words it shows: tags out, the line breaks the chart put in read as spaces."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", cell)).strip()


def _traces(fig: go.Figure, name: str) -> list[Any]:
    return [t for t in fig.data if t.name == name]


def test_the_ledger_chart_starts_at_the_end_of_warm_up_and_gives_every_kind_its_own_hue():
    run = _loaded_once()
    fig = charts.ledger(run)
    assert "since step 50, the end of warm-up" in fig.layout.title.text
    assert fig.layout.yaxis.title.text == "growth since step 50 (MiB)"
    line = fig.data[-1]
    assert line.name == "RSS growth" and line.x[0] == 50 and line.y[0] == 0
    stacked = np.sum([np.asarray(t.y, dtype=float) for t in fig.data if t.stackgroup], axis=0)
    np.testing.assert_allclose(stacked, np.asarray(line.y, dtype=float), atol=1e-9)
    color = {t.legendgroup: t.line.color for t in fig.data if t.stackgroup}
    kinds = {"glibc free (kept by malloc)": "allocator", "pymalloc free (kept by Python)": "allocator",
             "file-backed pages (RssFile)": "file", "ssl.SSLContext (native)": "native",
             "_VOCAB (native estimate)": "native"}
    for owner, kind in kinds.items():
        owner = next(n for n in color if n.endswith(owner))
        assert color[owner] in _KIND_PALETTES[kind], (owner, color[owner])  # not the "other" cyan any more
    assert not set(color.values()) & set(_KIND_PALETTES["other"])
    assert color[charts.UNEXPLAINED] == _UNEXPLAINED_COLOR
    # stacked in the ledger's kind order: native under watch, allocator and file above them
    order = list(dict.fromkeys(t.legendgroup for t in fig.data if t.stackgroup))
    assert order.index("app:_VOCAB (native estimate)") < order.index("app.Job") < order.index(
        "glibc free (kept by malloc)") < order.index("file-backed pages (RssFile)") < order.index(charts.UNEXPLAINED)
    start = charts.ledger(run, since="start")
    assert start.data[-1].x[0] == 0 and "since step 0, the first snapshot" in start.layout.title.text


def test_the_start_up_chart_shows_what_warm_up_cost_adding_up_to_rss():
    run = _loaded_once()
    fig = charts.startup(run)
    total = sum(float(t.x[0]) for t in fig.data)
    rss = run.series("process", "process", "rss")
    assert total == pytest.approx((rss[50] - rss[0]) / MB, rel=1e-9)
    names = [t.name for t in fig.data]
    assert names[-1] == "app:_VOCAB (native estimate)"  # the largest, at the top
    assert "from step 0 to 50" in fig.layout.title.text and "MiB" in fig.layout.xaxis.title.text
    unexplained = _traces(fig, charts.UNEXPLAINED)[0]
    assert unexplained.marker.pattern.shape == "/"
    flat = _run({("process", "process", "rss", "bytes"): lambda s: 1e8 + 1000.0 * s})
    assert "no warm-up" in charts.startup(flat).layout.annotations[0].text
    with pytest.raises(ConfigError, match="startup"):
        charts.startup([1])


def test_the_verdict_table_has_one_row_per_owner_no_noise_readable_subtitles_and_no_empty_intervals():
    run = _run({
        ("process", "process", "rss", "bytes"): lambda s: 1e8,
        ("process", "process", "gc_gen0", "objects"): lambda s: float(s % 70),
        ("process", "process", "gc_objects", "objects"): lambda s: 5e4 + 1.0 * s,
        ("tracker", "tokdiag", "self_bytes", "bytes"): lambda s: 2e5 + 10.0 * s,
        ("watch", "app.Job", "count", "objects"): lambda s: 1.0 * s,
        ("census", "app.Job", "count", "objects"): lambda s: 1.0 * s,
    })
    cells = charts.verdict_table(run).data[0].cells.values
    series = cells[1]
    assert len(series) == 2  # Job (watch count, census count and gc_objects folded in) and RSS
    assert not any("gc_gen" in s or "self_bytes" in s for s in series)
    job = _text(next(s for s in series if s.startswith("<b>Job</b>")))
    assert "also: census instances: leak" in job and "objects tracked by the garbage collector" in job
    assert all("<sup>" not in s for s in series)  # the subtitle at the cell's own size, not ~6 px
    assert all(" to " not in i or i.split(" to ")[0] != i.split(" to ")[1].replace("/step", "") for i in cells[3])
    assert "" in cells[3]  # exact counts: no "1 object to 1 object"


def test_the_verdict_table_of_several_runs_has_a_run_column():
    a = _run({("watch", "app.Job", "count", "objects"): lambda s: 1.0 * s}, "before")
    b = _run({("watch", "app.Job", "count", "objects"): lambda s: 1.0}, "after")
    v = pd.concat([a.verdicts(), b.verdicts()], ignore_index=True)
    table = charts.verdict_table(v).data[0]
    assert table.header.values[0] == "<b>run</b>"
    assert sorted(table.cells.values[0]) == ["after", "before"]


def test_compare_axes_say_what_grows_and_its_unit_once_and_equal_labels_are_told_apart():
    rows = []
    for s in STEPS:
        rows += [("handle", s, 0.0, "watch", "app.Agent", "count", float(s), "objects"),
                 ("handle", s, 0.0, "watch", "app.Agent", "bytes", 2048.0 * s, "bytes")]
    a = pd.DataFrame(rows, columns=list(COLUMNS))
    b = a.assign(value=5.0)
    df = compare(a, b)
    df.attrs["labels"] = ("handle", "handle")
    fig = charts.compare(df)
    titles = [fig.layout[k].title.text for k in fig.layout if k.startswith("xaxis") and fig.layout[k].title.text]
    assert sorted(titles) == ["instances (objects/step)", "memory growth (KiB/step)"]
    assert {t.name for t in fig.data} == {"handle (A)", "handle (B)"}
    assert any("fixed (leak → flat)" in y for t in fig.data for y in t.y)


def test_cache_and_count_axes_are_in_whole_entries():
    run = _run({("cache", "app:_C", "entries", "entries"): lambda s: float(min(s // 100, 2)),
                ("cache", "app:_C", "bytes", "bytes"): lambda s: 100.0 * min(s // 100, 2),
                ("watch", "app.Job", "count", "objects"): lambda s: float(min(s // 100, 3))})
    caches = charts.caches(run)
    assert caches.layout.yaxis.dtick == 1 and caches.layout.yaxis.tickformat == ",d"
    counts = charts.counts(run)
    assert counts.layout.yaxis.dtick == 1
    many = _run({("cache", "app:_C", "entries", "entries"): lambda s: float(s)})
    assert charts.caches(many).layout.yaxis.tickformat == ",d"


def test_the_growers_chart_is_one_row_per_owner_with_its_chain_and_escaped_names():
    chain = {"root": "module app", "root_kind": "module", "target_type": "Job",
             "edges": [{"kind": "attr", "label": "_DONE", "source_type": "module"}]}
    run = _run({("watch", "app.Job", "count", "objects"): lambda s: 1.0 * s,
                ("watch", "app.Job", "bytes", "bytes"): lambda s: 10752.0 * s,
                ("census", "app.Job", "count", "objects"): lambda s: 1.0 * s,
                ("census", f"app.{EVIL}", "count", "objects"): lambda s: 2.0 * s},
               retention={"app.Job": [chain]})
    fig = charts.growers(run)
    table = fig.data[0]
    header = [_text(h) for h in table.header.values]
    assert header[:3] == ["owner", "verdict", "growth per step"] and "held by" in header
    owners = table.cells.values[0]
    assert len(owners) == 2 and owners[0].startswith("<b>Job</b>")  # bytes per step first, Job once
    assert _text(table.cells.values[header.index("held by")][0]) == "module app -&gt; _DONE"
    assert table.cells.fill.color[1][0] == charts.LABEL_COLORS["leak"]
    texts = [str(v) for col in table.cells.values for v in col]
    assert not any("<img" in t for t in texts) and any("&lt;img" in t for t in texts)
    assert "no owner grew" in charts.growers(_run({("watch", "app.Job", "count", "objects"): lambda s: 1.0})
                                             ).layout.annotations[0].text


def test_new_figures_serialize_to_standalone_html():
    run = _loaded_once()
    for fig in (charts.startup(run), charts.growers(run), charts.ledger(run)):
        page = fig.to_html(include_plotlyjs=True, full_html=True)
        assert "Plotly.newPlot" in page
