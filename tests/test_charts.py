"""tokdiag.charts: figures from real tracked runs and synthetic frames.

What is checked: trace names and values against the data they were built
from, the ledger stack adding up to RSS growth, units in axis titles,
workload strings escaped everywhere plotly renders text, annotated empty
figures, and standalone HTML serialization (plus one page opened in
headless Chromium to show a malicious name stays text).
"""

from __future__ import annotations

import html
import re
import sys
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

import tokdiag as td
from tokdiag import charts
from tokdiag.analysis.format import format_value
from tokdiag.analysis.retention import Chain, Edge, why_alive
from tokdiag.charts._style import _LABEL_RANK
from tokdiag.errors import ConfigError
from tokdiag.recording.run import Run
from tokdiag.records import COLUMNS

MiB = 2.0**20
EVIL = '<img src=x onerror="window.__pwned=1">'
EVIL_SCRIPT = "<script>window.__pwned=1</script>"


class ChartLeak:
    """Instances pile up in KEPT: a real leak of a watched class."""

    def __init__(self, i: int) -> None:
        self.payload = [i] * 50


KEPT: list[ChartLeak] = []
CACHE: dict[int, str] = {}


@pytest.fixture(scope="module")
def leaking_run() -> Run:
    KEPT.clear()
    CACHE.clear()

    def step(i: int) -> None:
        KEPT.append(ChartLeak(i))
        CACHE[i % 15] = f"value {i % 15} " * 40  # bounded: 15 keys

    run = td.track(step, steps=60, every=3, watch=["ChartLeak"], caches=[f"{__name__}:CACHE"], census=False,
                   progress=False, why_alive=False, name="leaky")
    yield run
    KEPT.clear()
    CACHE.clear()


@pytest.fixture(scope="module")
def idle_run() -> Run:
    return td.track(lambda i: None, steps=20, every=2, census=False, progress=False, name="idle")


def _timeline(rows: list[tuple[Any, ...]], run: str = "synthetic") -> pd.DataFrame:
    return pd.DataFrame([(run, s, float(s), p, subj, m, float(v), u) for s, p, subj, m, v, u in rows],
                        columns=list(COLUMNS))


def _strings(obj: Any) -> list[str]:
    """Every string anywhere in a figure's JSON-able dict."""
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, dict):
        return [s for v in obj.values() for s in _strings(v)]
    if isinstance(obj, (list, tuple)):
        return [s for v in obj for s in _strings(v)]
    if isinstance(obj, np.ndarray):
        return [s for v in obj.tolist() for s in _strings(v)]
    return []


def _annotation_texts(fig: go.Figure) -> list[str]:
    return [a.text for a in fig.layout.annotations]


def _ledger_df(steps: list[int]) -> pd.DataFrame:
    rows = []
    for n, s in enumerate(steps):
        rows += [
            ("r", s, "cache:tiktoken", "cache", 2_000_000.0 * n),
            ("r", s, "native:Encoding", "native", 3_000_000.0 * min(n, 2)),
            ("r", s, "app.Agent", "watch", 500_000.0 * n),
            ("r", s, "tokdiag", "tokdiag", 1000.0 * n),
            # the remainder swings around zero: part of it must stack downwards
            ("r", s, charts.UNEXPLAINED, "unexplained", 400_000.0 * (-1) ** n * (n > 0)),
        ]
    return pd.DataFrame(rows, columns=["run", "step", "owner", "kind", "bytes"])


# --------------------------------------------------------------------------- ledger

def test_ledger_stack_adds_up_to_the_rss_line_and_shows_the_unexplained_band():
    steps = [0, 10, 20, 30, 40, 50]
    df = _ledger_df(steps)
    fig = charts.ledger(df)
    names = [t.legendgroup or t.name for t in fig.data]  # the full owner name (the legend shows it short)
    assert names[-1] == "RSS growth"
    for owner in df["owner"].unique():
        assert owner in names
    assert {t.name for t in fig.data if t.legendgroup == "app.Agent"} == {"Agent (watch)"}
    # stacking order: caches at the bottom, unexplained on top of the owners
    assert names.index("cache:tiktoken") < names.index("app.Agent") < names.index(charts.UNEXPLAINED)
    bands = [t for t in fig.data if t.stackgroup]
    stacked = np.sum([np.asarray(t.y, dtype=float) for t in bands], axis=0)
    expected = df.groupby("step")["bytes"].sum().to_numpy() / MiB
    np.testing.assert_allclose(stacked, expected, rtol=1e-12, atol=1e-12)
    line = fig.data[-1]
    np.testing.assert_allclose(np.asarray(line.y, dtype=float), expected)
    # the unexplained owner changes sign: a positive part and a negative part, in separate stacks, one legend entry
    unexplained = [t for t in fig.data if t.name == charts.UNEXPLAINED]
    assert {t.stackgroup for t in unexplained} == {"up", "down"}
    assert sum(bool(t.showlegend) for t in unexplained) == 1
    assert all(t.fillpattern.shape == "/" for t in unexplained)
    assert (np.asarray(unexplained[1].y) <= 0).all() and (np.asarray(unexplained[1].y) < 0).any()
    assert "MiB" in fig.layout.yaxis.title.text
    assert "step" in fig.layout.xaxis.title.text


def test_a_ledger_of_many_owners_names_the_largest_and_lumps_the_rest_and_still_adds_up():
    """The AWorld page had 40 owners: a legend taller than its chart, scrolling, its labels clipped."""
    rows = [("r", s, f"census:type{k}", "census", 1000.0 * (k + 1) * s) for s in (0, 1, 2) for k in range(30)]
    rows += [("r", s, charts.UNEXPLAINED, "unexplained", 5000.0 * s) for s in (0, 1, 2)]
    df = pd.DataFrame(rows, columns=["run", "step", "owner", "kind", "bytes"])
    fig = charts.ledger(df)
    owners = {t.legendgroup for t in fig.data if t.stackgroup}
    assert owners == {*(f"census:type{k}" for k in range(18, 30)), "18 other owners", charts.UNEXPLAINED}
    bands = [t for t in fig.data if t.stackgroup]
    stacked = np.sum([np.asarray(t.y, dtype=float) for t in bands], axis=0)
    np.testing.assert_allclose(stacked, df.groupby("step")["bytes"].sum().to_numpy() / MiB)
    # two steps: whole steps on the axis, never "step 0.5"
    assert (fig.layout.xaxis.dtick, fig.layout.xaxis.tickformat) == (1, ",d")
    few = charts.ledger(_ledger_df([0, 10, 20, 30, 40, 50]))
    assert {t.legendgroup for t in few.data if t.stackgroup} == set(_ledger_df([0]).owner)  # 5 owners: as they are
    assert few.layout.xaxis.dtick is None and few.layout.xaxis.tickformat == ",d"


def test_ledger_from_a_run_stacks_up_to_its_measured_rss(leaking_run):
    rss = leaking_run.series("process", "process", "rss")
    for since in ("warmup", "start"):
        fig = charts.ledger(leaking_run, since=since)
        base = td.analysis.ledger(leaking_run.timeline, since=since).attrs["baseline"][leaking_run.name]
        growth = (rss[rss.index >= base] - rss.loc[base]).to_numpy() / MiB
        line = fig.data[-1]
        assert line.name == "RSS growth"
        np.testing.assert_allclose(np.asarray(line.y, dtype=float), growth)
        # the bands (owners + unexplained) add up to the measured RSS line at every step from the baseline
        stacked = np.sum([np.asarray(t.y, dtype=float) for t in fig.data if t.stackgroup], axis=0)
        np.testing.assert_allclose(stacked, growth, atol=1e-9)
        assert f"step {base}" in fig.layout.yaxis.title.text
    names = {t.legendgroup or t.name for t in fig.data}
    assert f"{__name__}.ChartLeak" in names and f"{__name__}:CACHE" in names and charts.UNEXPLAINED in names
    assert leaking_run.name in fig.layout.title.text
    assert charts.ledger(leaking_run, rss=False).data[-1].name != "RSS growth"
    assert charts.ledger(leaking_run, title="custom").layout.title.text == "custom"


def test_every_chart_of_an_empty_run_is_an_annotated_figure():
    empty = Run("nothing", _timeline([]))
    for chart in (charts.ledger, charts.counts, charts.caches, charts.rss, charts.verdict_table):
        fig = chart(empty)
        assert not fig.data, chart.__name__
        assert _annotation_texts(fig) and _annotation_texts(fig)[0].startswith("no "), chart.__name__
    assert "no ledger rows" in _annotation_texts(charts.ledger(empty))[0]


def test_ledger_rejects_what_is_not_a_ledger():
    with pytest.raises(ConfigError, match="lacks column"):
        charts.ledger(pd.DataFrame({"step": [0], "value": [1.0]}))
    two = pd.concat([_ledger_df([0, 1]), _ledger_df([0, 1]).assign(run="other")])
    with pytest.raises(ConfigError, match="2 runs"):
        charts.ledger(two)
    with pytest.raises(ConfigError, match="pass a Run"):
        charts.ledger([1, 2, 3])


# --------------------------------------------------------------------------- counts / caches / rss

def test_counts_draws_one_line_per_watched_class(leaking_run):
    fig = charts.counts(leaking_run)
    subject = f"{__name__}.ChartLeak"
    assert [t.name for t in fig.data] == [subject]
    expected = leaking_run.series("watch", subject, "count")
    np.testing.assert_array_equal(np.asarray(fig.data[0].x), expected.index.to_numpy())
    np.testing.assert_allclose(np.asarray(fig.data[0].y, dtype=float), expected.to_numpy())
    assert fig.data[0].y[-1] - fig.data[0].y[0] == 60  # one leaked instance per step
    assert "objects" in fig.layout.yaxis.title.text
    assert "step" in fig.layout.xaxis.title.text
    assert [t.name for t in charts.counts(leaking_run, subjects=["ChartLeak"]).data] == [subject]
    with pytest.raises(ConfigError, match="NoSuchClass"):
        charts.counts(leaking_run, subjects=["NoSuchClass"])


def test_census_counts_pick_the_types_still_growing():
    rows = []
    for s in range(0, 100, 10):
        rows.append((s, "census", "builtins.function", "count", 5000.0 if s else 100.0, "objects"))  # warm-up jump
        rows.append((s, "census", "app.Message", "count", 3.0 * s, "objects"))  # keeps growing
        rows += [(s, "census", f"pkg.Flat{k}", "count", 50.0 + k, "objects") for k in range(12)]
    fig = charts.counts(Run("census", _timeline(rows)), probe="census")
    names = [t.name for t in fig.data]
    assert names == ["app.Message"]  # the only count still moving in the second half
    assert "1 of 14" in fig.layout.title.text


def test_counts_without_watched_classes_says_so(idle_run):
    fig = charts.counts(idle_run)
    assert not fig.data
    assert any("no watched classes in this run" in t for t in _annotation_texts(fig))
    assert any("no census" in t for t in _annotation_texts(charts.counts(idle_run, probe="census")))


def test_caches_panels_entries_and_bytes(leaking_run):
    fig = charts.caches(leaking_run)
    label = f"{__name__}:CACHE"
    entries = [t for t in fig.data if t.name == label]
    assert len(entries) == 1 and entries[0].yaxis == "y"
    assert entries[0].y[-1] == 15  # the cache is bounded at 15 keys
    sizes = [t for t in fig.data if t.name == f"{label} (Python bytes)"]
    assert len(sizes) == 1 and sizes[0].yaxis == "y2"
    unit = fig.layout.yaxis2.title.text
    div = 1024.0 if "KiB" in unit else MiB
    assert "KiB" in unit or "MiB" in unit
    expected = leaking_run.series("cache", label, "bytes").to_numpy() / div
    np.testing.assert_allclose(np.asarray(sizes[0].y, dtype=float), expected)
    assert fig.layout.yaxis.title.text == "entries"
    assert "step" in fig.layout.xaxis2.title.text


def test_caches_draw_the_native_estimate_dashed():
    rows = []
    for s in range(0, 50, 10):
        rows += [(s, "cache", "tiktoken:ENC", "entries", s / 10, "entries"),
                 (s, "cache", "tiktoken:ENC", "bytes", 9e6 * s / 10, "bytes"),
                 (s, "cache", "tiktoken:ENC", "native_bytes", 25e6 * s / 10, "bytes")]
    fig = charts.caches(Run("tok", _timeline(rows)))
    native = [t for t in fig.data if t.name == "tiktoken:ENC (native, estimated)"]
    assert len(native) == 1 and native[0].line.dash == "dash"
    assert "MiB" in fig.layout.yaxis2.title.text
    np.testing.assert_allclose(native[0].y[-1], 100e6 / MiB)


def test_caches_without_caches_says_so(idle_run):
    fig = charts.caches(idle_run)
    assert not fig.data
    assert any("no caches" in t for t in _annotation_texts(fig))


def test_rss_one_line_per_run(leaking_run, idle_run):
    fig = charts.rss({"leaky scenario": leaking_run, "idle scenario": idle_run})
    assert [t.name for t in fig.data] == ["leaky scenario", "idle scenario"]
    np.testing.assert_allclose(np.asarray(fig.data[1].y, dtype=float),
                               idle_run.series("process", "process", "rss").to_numpy() / MiB)
    assert "MiB" in fig.layout.yaxis.title.text
    # a list of runs with the same name stays distinguishable
    names = [t.name for t in charts.rss([idle_run, idle_run]).data]
    assert len(set(names)) == 2
    assert [t.name for t in charts.rss(idle_run).data] == ["idle"]
    assert any("no runs" in t for t in _annotation_texts(charts.rss([])))
    with pytest.raises(ConfigError, match="pass a tokdiag Run"):
        charts.rss(["not a run"])


# --------------------------------------------------------------------------- verdict table

def test_verdict_table_puts_the_leak_first_in_red(leaking_run):
    verdicts = leaking_run.verdicts()
    fig = charts.verdict_table(verdicts, top=None)
    table = fig.data[0]
    assert isinstance(table, go.Table)
    labels = [v.replace("<b>", "").replace("</b>", "") for v in table.cells.values[0]]
    folded = td.analysis.fold_verdicts(verdicts)
    assert len(labels) == (folded["role"] == "main").sum()  # one row per owner and measure
    ranks = [_LABEL_RANK[v] for v in labels]
    assert ranks == sorted(ranks)  # leak first, flat last
    subject = f"{__name__}.ChartLeak"
    row = next(n for n, s in enumerate(table.cells.values[1])
               if s.startswith("<b>ChartLeak</b><br>") and "watch count" in s)
    assert labels[row] == "leak"
    assert table.cells.fill.color[0][row] == charts.LABEL_COLORS["leak"]
    assert table.cells.values[2][row].replace("<br>", " ") == "1 object/step"
    assert "10,000" in "".join(table.header.values)
    projected = verdicts[(verdicts.subject == subject) & (verdicts.metric == "count")]["projected"].iloc[0]
    assert table.cells.values[4][row].replace("<br>", " ") == f"{projected:,.0f} objects"
    assert any(t.replace("<br>", " ").endswith("iB") for t in table.cells.values[4])  # bytes in KiB/MiB
    # a settled series shows no rate (its plateau's slope says nothing)
    assert all(
        rate == ""
        for rate, label in zip(table.cells.values[2], labels, strict=True)
        if label not in ("leak", "inconclusive")
    )
    # top keeps the first rows and says how many were left out
    short = charts.verdict_table(verdicts, top=2)
    assert len(short.data[0].cells.values[0]) == 2
    assert f"of {len(labels)}" in short.layout.title.text
    assert len(charts.verdict_table(verdicts, top=None, fold=False).data[0].cells.values[0]) == len(verdicts)


def test_verdict_table_from_a_run_and_its_projection(leaking_run):
    fig = charts.verdict_table(leaking_run, project_to=5_000)
    assert "5,000" in "".join(fig.data[0].header.values)
    subject = f"{__name__}.ChartLeak"
    table = fig.data[0]
    row = next(n for n, s in enumerate(table.cells.values[1])
               if s.startswith("<b>ChartLeak</b><br>") and "watch count" in s)
    expected = leaking_run.verdicts(project_to=5_000)
    projected = expected[(expected.subject == subject) & (expected.metric == "count")]["projected"].iloc[0]
    assert table.cells.values[4][row].replace("<br>", " ") == format_value(projected, "objects")


def _plain(html: str) -> str:
    """A header cell's words, without its bold tags and line breaks."""
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def test_verdict_table_of_verdicts_projected_elsewhere_says_their_horizon(leaking_run):
    verdicts = leaking_run.verdicts(project_to=500)
    table = charts.verdict_table(verdicts).data[0]
    assert _plain(table.header.values[4]) == "projected at 500 steps"
    assert "at 500 steps" in charts.verdict_table(verdicts).layout.title.text
    subject = f"{__name__}.ChartLeak"
    row = next(n for n, s in enumerate(table.cells.values[1])
               if s.startswith("<b>ChartLeak</b><br>") and "watch count" in s)
    projected = verdicts[(verdicts.subject == subject) & (verdicts.metric == "count")]["projected"].iloc[0]
    assert table.cells.values[4][row].replace("<br>", " ") == format_value(projected, "objects")
    # a filtered table keeps its horizon; asking for another one is refused, with the fix
    filtered = charts.verdict_table(verdicts[verdicts.verdict != "flat"])
    assert _plain(filtered.data[0].header.values[4]) == "projected at 500 steps"
    with pytest.raises(ConfigError, match=r"projected to 500 steps; pass project_to=500"):
        charts.verdict_table(verdicts, project_to=10_000)
    assert "projected at 500 steps" in td.analysis.verdicts_table(verdicts).columns


def test_verdict_table_rejects_bad_input_and_annotates_empty():
    empty = td.analysis.verdicts(_timeline([]))
    assert any("no series judged" in t for t in _annotation_texts(charts.verdict_table(empty)))
    with pytest.raises(ConfigError, match="lacks column"):
        charts.verdict_table(pd.DataFrame({"verdict": ["leak"]}))
    with pytest.raises(ConfigError, match="project_to"):
        charts.verdict_table(empty, project_to=0)


# --------------------------------------------------------------------------- chains

def _chain_objects() -> list[Chain]:
    hops = (Edge("attr", "bus", "module"), Edge("attr", "_history", "EventBus"), Edge("index", "12", "list"),
            Edge("attr", "agent", "MemoryEventMessage"))
    return [Chain("module app", "module", hops, "RewardAgent")]


def test_chain_draws_root_types_target_and_edge_labels():
    chains = _chain_objects()
    fig = charts.chain(chains)
    path = fig.data[0]
    assert list(path.text) == ["module app", "EventBus", "list", "MemoryEventMessage", "RewardAgent"]
    labels = [a.text for a in fig.layout.annotations if a.text]
    assert labels == ["<b>.bus</b>", "<b>._history</b>", "<b>[12]</b>", "<b>.agent</b>"]
    assert len([a for a in fig.layout.annotations if a.showarrow]) == 4
    assert path.customdata[0][2] == html.escape(chains[0].text, quote=False)  # the whole chain on hover
    # the dict form (as journals store it) draws the same path
    again = charts.chain([c.as_dict() for c in chains])
    assert list(again.data[0].text) == list(path.text)


def test_chain_from_a_real_run(tmp_path):
    class Holder:
        pass

    holder = Holder()
    holder.items = []
    sys.modules[__name__].CHAIN_ROOT = holder  # a module global, so the chain starts at this module

    class Retained:
        pass

    try:
        for _ in range(3):
            holder.items.append(Retained())
        chains = why_alive(Retained)
        assert chains
        fig = charts.chain(chains)
        assert fig.data[0].text[-1].endswith("Retained (x3)")  # the three instances, held the same way
        assert "<b>.items</b>" in [a.text for a in fig.layout.annotations]
    finally:
        del sys.modules[__name__].CHAIN_ROOT


def test_chain_accepts_dicts_and_long_paths():
    hops = [{"kind": "attr", "label": f"a{k}", "source_type": f"T{k}"} for k in range(8)]
    fig = charts.chain({"root": "module app", "root_kind": "module", "edges": hops, "target_type": "Leaked"})
    assert len(fig.data[0].text) == 9
    assert fig.data[0].text[-1] == "Leaked"
    assert [a.text for a in fig.layout.annotations if a.text][-1] == "<b>.a7</b>"
    assert any("no retention chains" in t for t in _annotation_texts(charts.chain([])))
    with pytest.raises(ConfigError, match="not a retention chain"):
        charts.chain([{"edges": []}])


# --------------------------------------------------------------------------- compare

def _compare_df() -> pd.DataFrame:
    df = pd.DataFrame([
        dict(probe="watch", subject="app.RewardAgent", metric="count", unit="objects", verdict_a="leak",
             verdict_b="flat", per_step_a=1.0, per_step_a_low=0.9, per_step_a_high=1.1, per_step_b=0.0,
             per_step_b_low=-0.01, per_step_b_high=0.02, difference=-1.0, difference_low=-1.1,
             difference_high=-0.9, real=True, change="fixed"),
        dict(probe="process", subject="process", metric="rss", unit="bytes", verdict_a="leak", verdict_b="leak",
             per_step_a=8192.0, per_step_a_low=6000.0, per_step_a_high=9000.0, per_step_b=1024.0,
             per_step_b_low=512.0, per_step_b_high=2048.0, difference=-7168.0, difference_low=-8000.0,
             difference_high=-5000.0, real=True, change="less growth"),
    ])
    df.attrs["labels"] = ("before", "after")
    return df


def test_compare_groups_a_and_b_with_their_intervals_per_unit():
    fig = charts.compare(_compare_df())
    assert {t.name for t in fig.data} == {"before", "after"}
    titles = [fig.layout[k].title.text for k in fig.layout if k.startswith("xaxis")]
    assert any("KiB/step" in t for t in titles) and any("objects/step" in t for t in titles)
    rss_before = next(t for t in fig.data if t.name == "before" and t.xaxis == "x")
    assert rss_before.x[0] == pytest.approx(8.0)  # 8192 B/step in KiB/step
    assert rss_before.error_x.array[0] == pytest.approx((9000 - 8192) / 1024)
    assert rss_before.error_x.arrayminus[0] == pytest.approx((8192 - 6000) / 1024)
    assert "less growth" in rss_before.y[0]
    agents_after = next(t for t in fig.data if t.name == "after" and t.xaxis == "x2")
    assert "fixed" in agents_after.y[0]
    assert "before" in fig.layout.title.text and "after" in fig.layout.title.text


def test_compare_of_two_real_runs(leaking_run, idle_run):
    fig = charts.compare(td.compare(leaking_run, idle_run, labels=("leaky build", "idle build")))
    assert {t.name for t in fig.data} == {"leaky build", "idle build"}
    titles = [fig.layout[k].title.text for k in fig.layout if k.startswith("xaxis")]
    assert any("B/step" in t for t in titles)  # bytes panel in KiB/step or MiB/step


def test_compare_keeps_the_same_class_from_two_probes_apart():
    df = _compare_df()
    census = df.iloc[[0]].assign(probe="census", per_step_a=2.0, per_step_a_high=2.5)
    both = pd.concat([df, census], ignore_index=True)
    both.attrs["labels"] = df.attrs["labels"]
    fig = charts.compare(both)
    before = next(t for t in fig.data if t.name == "before" and t.xaxis == "x2")
    assert len(set(before.y)) == 2  # one bar row per (probe, subject, metric), not stacked on one category
    assert sorted(before.x) == [1.0, 2.0]


def test_compare_without_rows_or_columns():
    empty = _compare_df().iloc[0:0]
    assert any("no series" in t for t in _annotation_texts(charts.compare(empty)))
    with pytest.raises(ConfigError, match="lacks column"):
        charts.compare(pd.DataFrame({"probe": ["x"]}))


# --------------------------------------------------------------------------- escaping and HTML

def _evil_figures() -> dict[str, go.Figure]:
    rows = []
    for s in range(0, 60, 5):
        rows += [(s, "process", "process", "rss", 50e6 + 20_000 * s, "bytes"),
                 (s, "watch", EVIL, "count", float(s), "objects"),
                 (s, "watch", EVIL_SCRIPT, "count", 3.0, "objects"),
                 (s, "cache", EVIL_SCRIPT, "entries", float(s), "entries"),
                 (s, "cache", EVIL_SCRIPT, "bytes", 1000.0 * s, "bytes")]
    run = Run(EVIL_SCRIPT, _timeline(rows, run=EVIL))
    ledger = pd.DataFrame([(EVIL, s, EVIL, "watch", 1000.0 * s) for s in range(0, 60, 5)],
                          columns=["run", "step", "owner", "kind", "bytes"])
    cmp = _compare_df().assign(subject=[EVIL, EVIL_SCRIPT], change=[EVIL, "fixed"])
    cmp.attrs["labels"] = (EVIL_SCRIPT, EVIL)
    return {
        "ledger": charts.ledger(ledger),
        "counts": charts.counts(run),
        "caches": charts.caches(run),
        "rss": charts.rss({EVIL: run}),
        "verdict_table": charts.verdict_table(run.verdicts().assign(reason=EVIL)),
        "chain": charts.chain([{"root": EVIL, "root_kind": "module", "target_type": EVIL_SCRIPT,
                                "edges": [{"kind": "key", "label": EVIL, "source_type": EVIL_SCRIPT}]}]),
        "compare": charts.compare(cmp),
    }


def test_workload_strings_are_escaped_in_every_figure():
    for name, fig in _evil_figures().items():
        texts = _strings(fig.to_plotly_json())
        raw = [t for t in texts if "<img" in t or "<script" in t]
        assert not raw, (name, raw)
        assert any("&lt;img src=x onerror=" in t or "&lt;script&gt;" in t for t in texts), name


def test_every_figure_serializes_to_standalone_html(tmp_path, leaking_run, idle_run):
    figures = {
        "ledger": charts.ledger(_ledger_df([0, 5, 10, 15])),
        "counts": charts.counts(leaking_run),
        "caches": charts.caches(leaking_run),
        "rss": charts.rss([leaking_run, idle_run]),
        "verdict_table": charts.verdict_table(leaking_run),
        "chain": charts.chain(_chain_objects()),
        "compare": charts.compare(_compare_df()),
        "empty": charts.counts(idle_run),
    }
    for name, fig in figures.items():
        page = fig.to_html(include_plotlyjs=True, full_html=True)
        assert "Plotly.newPlot" in page, name
        assert not re.search(r'<script[^>]+src="https?:', page), name  # nothing fetched from a CDN
        assert len(page) > 3_000_000, name  # plotly.js itself is inline
        (tmp_path / f"{name}.html").write_text(page, encoding="utf-8")


@pytest.mark.slow
def test_malicious_names_stay_text_in_chromium(tmp_path):
    from playwright import sync_api as playwright
    figs = _evil_figures()
    page_html = ("<html><head><meta charset='utf-8'></head><body>"
                 + figs["counts"].to_html(include_plotlyjs=True, full_html=False)
                 + figs["verdict_table"].to_html(include_plotlyjs=False, full_html=False)
                 + "</body></html>")
    path = tmp_path / "evil.html"
    path.write_text(page_html, encoding="utf-8")
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file:")
                       else route.abort())
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(path.as_uri())
            page.wait_for_selector(".main-svg")
            assert page.evaluate("window.__pwned") is None
            assert page.locator("img").count() == 0
            legend = page.locator(".legendtext").all_text_contents()
            assert EVIL in legend and EVIL_SCRIPT in legend  # shown literally, as text
            assert not errors
        finally:
            browser.close()



def test_compare_fades_the_bars_of_a_difference_that_is_not_real():
    df = _compare_df()
    df.loc[1, ["real", "change"]] = [False, "unchanged"]
    fig = charts.compare(df)
    rss_after = next(t for t in fig.data if t.name == "after" and t.xaxis == "x")
    agents_after = next(t for t in fig.data if t.name == "after" and t.xaxis == "x2")
    assert list(rss_after.marker.opacity) == [0.35] and list(agents_after.marker.opacity) == [1.0]
    assert "faded: no real difference" in fig.layout.title.text


def test_chain_edges_are_as_wide_as_their_labels_and_long_keys_are_shortened():
    url = '["https://shop.example/search?q=' + "x" * 60 + '"]'
    c = {"root": "app.state", "root_kind": "module", "target_type": "app.Page", "edges": [
        {"kind": "attr", "label": "_APPS", "source_type": "module"},
        {"kind": "key", "label": url, "source_type": "dict"},
        {"kind": "attr", "label": "page", "source_type": "Holder"}]}
    fig = charts.chain(c)
    texts = [a.text for a in fig.layout.annotations if a.text]
    assert texts[1].endswith("…</b>") and len(texts[1]) <= len("<b></b>") + 40 + 20  # shortened (escaped)
    spans = [a.x - a.ax for a in fig.layout.annotations if a.showarrow]
    # the long label's edge is wider than the short ones
    assert spans[1] > 3 * spans[0] and spans[0] == pytest.approx(spans[2])
