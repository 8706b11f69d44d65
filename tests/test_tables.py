"""Tables for people: compare and verdicts with units and words; runs of one target told apart."""

from __future__ import annotations

import mmap

import numpy as np
import pandas as pd
import pytest

import tokdiag as td
from tokdiag.analysis import (
    compare,
    compare_notes,
    compare_table,
    verdicts,
    verdicts_table,
)
from tokdiag.errors import ConfigError
from tokdiag.records import COLUMNS

STEPS = np.arange(0, 201, 10)
KB = 1024


def _tl(series: dict[tuple[str, str, str, str], np.ndarray], run: str) -> pd.DataFrame:
    rows = [(run, int(s), float(s), p, subj, m, float(v), u)
            for (p, subj, m, u), values in series.items() for s, v in zip(STEPS, values, strict=True)]
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _fixed_pair(run_a: str = "handle", run_b: str = "handle") -> tuple[pd.DataFrame, pd.DataFrame]:
    """A leaking agent count fixed in b; RSS the same in both (the agents are too small to move it)."""
    rng = np.random.default_rng(11)
    rss = 1e8 + rng.integers(0, 4, STEPS.shape) * 4096.0
    a = _tl({("watch", "app.Agent", "count", "objects"): STEPS * 1.0,
             ("watch", "app.Agent", "bytes", "bytes"): STEPS * 100.0,
             ("process", "process", "rss", "bytes"): rss,
             ("census", "builtins.dict", "count", "objects"): np.full(STEPS.shape, 500.0)}, run_a)
    b = _tl({("watch", "app.Agent", "count", "objects"): np.full(STEPS.shape, 1.0),
             ("watch", "app.Agent", "bytes", "bytes"): np.full(STEPS.shape, 100.0),
             ("process", "process", "rss", "bytes"): rss[::-1].copy(),
             ("census", "builtins.dict", "count", "objects"): np.full(STEPS.shape, 500.0)}, run_b)
    return a, b


def test_runs_of_one_target_get_labels_that_tell_them_apart(tmp_path):
    a, b = _fixed_pair()
    assert compare(a, b).attrs["labels"] == ("A", "B")  # "handle vs handle" says nothing
    assert compare(*_fixed_pair("before", "after")).attrs["labels"] == ("before", "after")
    pa, pb = tmp_path / "shipped.jsonl", tmp_path / "patched.jsonl"
    for path in (pa, pb):
        td.track(lambda i: None, steps=8, every=2, census=False, progress=False, journal=path, name="handle")
    assert compare(pa, pb).attrs["labels"] == ("shipped", "patched")  # then the journals' file stems
    assert compare(td.load(pa), td.load(pb)).attrs["labels"] == ("shipped", "patched")
    assert compare(pa, pb, labels=("x", "y")).attrs["labels"] == ("x", "y")


def test_compare_table_has_units_words_and_no_pandas_internals():
    a, b = _fixed_pair("before", "after")
    table = compare_table(compare(a, b))
    assert list(table.columns) == ["measure", "before", "after", "difference per step", "change"]
    assert table.index.name == "series"
    assert not any(c in table.columns for c in ("verdict_a", "per_step_b", "real", "difference_low"))
    count = table[table["measure"] == "watch instances"].iloc[0]
    assert table.index[0] == "Agent" and count.name == "Agent"  # fixes first
    assert count["before"] == "leak, +1 object/step" and count["after"] == "flat"
    assert count["difference per step"] == "-1 object/step"  # exact: no "-1 object to -1 object" interval
    assert count["change"] == "fixed: leak in before, flat in after"
    rss = table.loc["RSS"]
    assert rss["measure"] == "process RSS" and rss["change"] == "unchanged"
    assert "B/step" in rss["difference per step"]  # bytes in B/KiB/MiB, never a raw 42807.0
    with pytest.raises(ConfigError, match="lacks column"):
        compare_table(pd.DataFrame({"probe": ["x"]}))


def test_compare_notes_say_what_fixed_refers_to_when_rss_did_not_change():
    notes = compare_notes(compare(*_fixed_pair("before", "after")))
    assert notes[0] == "Fixed in after: Agent (watch instances), leak, +1 object/step in before, flat in after."
    assert any(n.startswith("RSS: unchanged (before: ") for n in notes)
    assert notes[-1].startswith('"Fixed" refers to the series named above, not to RSS')
    same = compare(*[_fixed_pair("one", "two")[0].assign(run=r) for r in ("one", "two")])
    assert compare_notes(same)[0].startswith("Nothing changed between one and two")


def test_verdicts_table_is_folded_with_units_and_no_noise():
    tl = _tl({("watch", "app.Job", "count", "objects"): STEPS * 1.0,
              ("census", "app.Job", "count", "objects"): STEPS * 1.0,
              ("process", "process", "gc_gen1", "objects"): (STEPS % 30).astype(float),
              ("tracker", "tokdiag", "self_bytes", "bytes"): 2e5 + STEPS * 10.0,
              ("process", "process", "rss", "bytes"): np.full(STEPS.shape, 1e8)}, "r")
    table = verdicts_table(verdicts(tl))
    assert table.index.tolist() == ["Job", "RSS"]  # no gc_gen1, no tokdiag buffers, Job once
    job = table.loc["Job"]
    assert job["verdict"] == "leak" and job["growth per step"] == "+1 object/step"
    assert job["also measured"] == "census instances: leak, +1 object/step"
    assert table.loc["RSS", "growth per step"] == "" and table.loc["RSS", "projected at 10,000 steps"] == "95.4 MiB"
    assert "run" not in table.columns


def test_runs_table_says_how_each_run_ended_and_what_its_rss_did_with_units(tmp_path) -> None:
    def keep_a_mib(i: int) -> None:
        # fresh pages, written: a bytearray could come from memory an earlier test of the process freed
        m = mmap.mmap(-1, 1024 * KB)
        m.write(b"x" * (1024 * KB))
        _KEPT.append(m)

    grow = td.track(
        keep_a_mib,
        steps=20,
        every=5,
        census=False,
        progress=False,
        name="grows",
        journal=tmp_path / "grows.jsonl",
    )
    flat = td.track(lambda i: None, steps=10, every=5, census=False, progress=False, name="flat")
    table = td.analysis.runs_table([str(tmp_path / "grows.jsonl"), flat])  # a journal path, or a Run
    assert list(table.index) == ["grows", "flat"]
    assert list(table.columns) == [
        "status",
        "steps",
        "snapshots",
        "seconds",
        "RSS at start",
        "RSS at end",
        "RSS growth",
    ]
    assert table.loc["grows", "steps"] == "0 to 20" and table.loc["grows", "snapshots"] == 5
    assert table.loc["flat", "status"] == "completed"
    growth = table.loc["grows", "RSS growth"]
    assert growth.startswith("+") and growth.endswith("MiB")  # 20 x 1 MiB written and kept, shown in MiB
    assert float(growth[1:].split()[0]) >= 10
    for m in _KEPT:
        m.close()
    _KEPT.clear()
    labelled = td.analysis.runs_table({"before": grow})  # a dict's labels name the rows
    assert list(labelled.index) == ["before"]


_KEPT: list[mmap.mmap] = []
_SHARED: dict[str, list[int]] = {"ranks": [1, 2, 3]}


def test_mutations_finds_a_cached_value_changed_in_place_and_not_a_cache_that_grows() -> None:
    def step(i: int) -> None:
        if i == 4:
            _SHARED["ranks"].append(99)  # same entry count, different payload
        if i == 6:
            _SHARED[f"extra-{i}"] = [i]  # a new entry: growth, not a mutation

    run = td.track(step, steps=8, every=1, census=False, progress=False, caches=[f"{__name__}:_SHARED"])
    found = td.analysis.mutations(run, f"{__name__}:_SHARED")
    assert found["step"].tolist() == [5]  # seen in the snapshot after step 4 (snapshots count steps done)
    assert found["entries"].tolist() == [1]
    with pytest.raises(ConfigError, match=r"no fingerprint of cache 'nope:_X'.*_SHARED"):
        td.analysis.mutations(run, "nope:_X")


def test_severity_orders_every_table_the_same_way() -> None:
    from tokdiag.analysis import SEVERITY
    from tokdiag.analysis.classification import LABELS

    assert sorted(SEVERITY) == sorted(LABELS)
    assert SEVERITY[0] == "leak" and SEVERITY[-1] == "flat"
