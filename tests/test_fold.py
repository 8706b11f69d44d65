"""fold_verdicts: one row per owner and measure, noise and tokdiag's own cost apart."""

from __future__ import annotations

import pandas as pd
import pytest

from tokdiag.analysis import fold_verdicts, verdicts
from tokdiag.analysis.fold import FOLD_COLUMNS
from tokdiag.errors import ConfigError
from tokdiag.records import COLUMNS


def _tl(series: dict[tuple[str, str, str, str], object], run: str = "r") -> pd.DataFrame:
    rows = [(run, s, 0.0, p, subj, m, float(f(s)), u)  # type: ignore[operator]
            for (p, subj, m, u), f in series.items() for s in range(0, 201, 10)]
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _roles(folded: pd.DataFrame) -> dict[tuple[str, str, str], tuple[str, str, str]]:
    return {(r.probe, r.subject, r.metric): (r.owner, r.measure, r.role) for r in folded.itertuples()}


def test_watch_and_census_of_one_class_become_one_row_per_measure():
    tl = _tl({
        ("watch", "app.Job", "count", "objects"): lambda s: 1.0 * s,
        ("census", "app.Job", "count", "objects"): lambda s: 0.8 * s,  # they may disagree: both kept, one shown
        ("watch", "app.Job", "bytes", "bytes"): lambda s: 10240.0 * s,
        ("census", "app.Job", "bytes", "bytes"): lambda s: 560.0 * s,
        ("census", "app.Job", "unowned_bytes", "bytes"): lambda s: 0.0,
        ("census", "builtins.dict", "bytes", "bytes"): lambda s: 1e6 + 4096.0 * s,
        ("census", "builtins.dict", "unowned_bytes", "bytes"): lambda s: 1e6 + 4096.0 * s,
    })
    folded = fold_verdicts(verdicts(tl))
    assert list(folded.columns) == list(FOLD_COLUMNS)
    roles = _roles(folded)
    assert roles[("watch", "app.Job", "count")] == ("app.Job", "count", "main")
    assert roles[("census", "app.Job", "count")] == ("app.Job", "count", "merged")
    assert roles[("watch", "app.Job", "bytes")] == ("app.Job", "bytes", "main")
    assert roles[("census", "app.Job", "bytes")][2] == "merged"
    assert roles[("census", "app.Job", "unowned_bytes")][2] == "merged"  # flat while shallow bytes grow: not the same
    # the same growth twice: unowned_bytes with the verdict of bytes is a duplicate
    assert roles[("census", "builtins.dict", "unowned_bytes")] == ("builtins.dict", "bytes", "duplicate")
    main = folded[folded["role"] == "main"]
    assert len(main) == 3  # Job count, Job bytes, dict bytes
    job_count = main[(main["owner"] == "app.Job") & (main["measure"] == "count")]["folded"].iloc[0]
    assert job_count == "census instances: leak, +0.8 objects/step"


def test_noise_and_tokdiag_are_set_apart_and_gc_objects_goes_to_the_class_that_explains_it():
    tl = _tl({
        ("process", "process", "rss", "bytes"): lambda s: 1e8 + 40960.0 * s,
        ("process", "process", "gc_objects", "objects"): lambda s: 1e5 + 3.0 * s,
        ("process", "process", "gc_gen0", "objects"): lambda s: float(s % 70),
        ("tracker", "tokdiag", "self_bytes", "bytes"): lambda s: 2e5 + 100.0 * s,
        ("watch", "app.Job", "count", "objects"): lambda s: 1.0 * s,
        ("census", "app.Message", "count", "objects"): lambda s: 2.0 * s,
        ("allocator", "glibc", "in_use", "bytes"): lambda s: 9e7 + 40000.0 * s,
        ("allocator", "glibc", "free", "bytes"): lambda s: 2e6 + 1000.0 * s,
    })
    roles = _roles(fold_verdicts(verdicts(tl)))
    assert roles[("process", "process", "gc_gen0")][2] == "noise"
    assert roles[("tracker", "tokdiag", "self_bytes")] == ("tokdiag", "self_bytes", "self")
    assert roles[("process", "process", "gc_objects")] == ("app.Message", "count", "merged")  # 1 + 2 of 3 per step
    assert roles[("allocator", "glibc", "in_use")] == ("process", "rss", "merged")  # a whole-process total
    assert roles[("allocator", "glibc", "free")] == ("glibc free (kept by malloc)", "bytes", "main")
    assert roles[("process", "process", "rss")] == ("process", "rss", "main")
    # when the classes counted explain less than half of it, gc_objects stays a finding of its own
    tl2 = tl.copy()
    tl2.loc[tl2["metric"] == "gc_objects", "value"] = 1e5 + 10.0 * tl2.loc[tl2["metric"] == "gc_objects", "step"]
    assert _roles(fold_verdicts(verdicts(tl2)))[("process", "process", "gc_objects")] == (
        "process", "gc_objects", "main")


def test_several_runs_are_folded_each_on_its_own_and_bad_input_is_refused():
    both = pd.concat([_tl({("watch", "app.Job", "count", "objects"): lambda s: 1.0 * s}, run="a"),
                      _tl({("census", "app.Job", "count", "objects"): lambda s: 1.0 * s}, run="b")])
    folded = fold_verdicts(verdicts(both))
    assert sorted(folded[folded["role"] == "main"]["run"]) == ["a", "b"]
    with pytest.raises(ConfigError, match="lacks column"):
        fold_verdicts(pd.DataFrame({"verdict": ["leak"]}))
    with pytest.raises(ConfigError, match="pass the DataFrame"):
        fold_verdicts([1, 2])
