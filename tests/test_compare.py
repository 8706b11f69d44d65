"""compare: per series, did b change a's growth, and is the difference real?"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import tokdiag as td
from tokdiag.analysis import CHANGES, COMPARE_COLUMNS, compare
from tokdiag.errors import ConfigError
from tokdiag.records import COLUMNS

STEPS = np.arange(0, 201, 10)


def _tl(series: dict[tuple[str, str, str, str], np.ndarray], run: str) -> pd.DataFrame:
    rows = []
    for (probe, subject, metric, unit), values in series.items():
        for s, v in zip(STEPS, values, strict=True):
            rows.append((run, int(s), float(s), probe, subject, metric, float(v), unit))
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _noisy(rng: np.random.Generator, per_step: float, sigma: float = 2048.0) -> np.ndarray:
    return 1e8 + per_step * STEPS + rng.normal(0, sigma, STEPS.shape)


def _pair() -> tuple[pd.DataFrame, pd.DataFrame]:
    rng = np.random.default_rng(7)
    flat = np.full(STEPS.shape, 5.0)
    a = {
        ("watch", "app.Agent", "count", "objects"): STEPS * 1.0,             # leak -> fixed
        ("watch", "app.Message", "count", "objects"): flat,                   # flat -> new leak
        ("process", "process", "rss", "bytes"): _noisy(rng, 8192),            # leak, then leaks less
        ("cache", "enc", "bytes", "bytes"): _noisy(rng, 2048),                # leak, then leaks more
        ("census", "builtins.dict", "count", "objects"): flat + 100,          # flat both: unchanged
        ("watch", "app.OnlyA", "count", "objects"): STEPS * 2.0,              # only in a
    }
    b = {
        ("watch", "app.Agent", "count", "objects"): flat,
        ("watch", "app.Message", "count", "objects"): STEPS * 3.0,
        ("process", "process", "rss", "bytes"): _noisy(rng, 2048),
        ("cache", "enc", "bytes", "bytes"): _noisy(rng, 8192),
        ("census", "builtins.dict", "count", "objects"): flat + 100,
        ("watch", "app.OnlyB", "count", "objects"): flat,                     # only in b
    }
    return _tl(a, "shipped"), _tl(b, "patched")


def test_columns_labels_and_one_row_per_series():
    a, b = _pair()
    df = compare(a, b)
    assert list(df.columns) == list(COMPARE_COLUMNS)
    assert df.attrs["labels"] == ("shipped", "patched")
    assert compare(a, b, labels=("before", "after")).attrs["labels"] == ("before", "after")
    assert len(df) == 7
    assert set(df["change"]) <= set(CHANGES)
    assert df["real"].dtype == bool


def test_each_kind_of_change():
    df = compare(*_pair()).set_index(["probe", "subject", "metric"])
    assert df.loc[("watch", "app.Agent", "count"), "change"] == "fixed"
    assert df.loc[("watch", "app.Message", "count"), "change"] == "new leak"
    rss = df.loc[("process", "process", "rss")]
    assert (rss["verdict_a"], rss["verdict_b"]) == ("leak", "leak")
    assert rss["change"] == "less growth" and rss["real"]
    assert rss["difference_low"] < -6144 < rss["difference_high"] < 0
    enc = df.loc[("cache", "enc", "bytes")]
    assert enc["change"] == "more growth" and enc["real"]
    d = df.loc[("census", "builtins.dict", "count")]
    assert d["change"] == "unchanged" and not d["real"] and d["difference"] == 0


def test_compare_headlines_name_each_series_once_with_what_it_measures():
    heads = {subject: change for subject, change, _ in td.analysis.compare_headlines(compare(*_pair()))}
    assert heads == {"patched: Agent instances": "fixed", "patched: Message instances": "new leak",
                     "patched: RSS": "less growth", "patched: enc deep bytes": "more growth"}  # not "RSS RSS"


def test_difference_interval_combines_the_two_intervals_conservatively():
    df = compare(*_pair())
    both = df.dropna(subset=["per_step_a", "per_step_b"])
    np.testing.assert_allclose(both["difference"], both["per_step_b"] - both["per_step_a"])
    np.testing.assert_allclose(both["difference_low"], both["per_step_b_low"] - both["per_step_a_high"])
    np.testing.assert_allclose(both["difference_high"], both["per_step_b_high"] - both["per_step_a_low"])
    assert (both["difference_low"] <= both["difference"]).all()
    assert (both["difference"] <= both["difference_high"]).all()


def test_subjects_in_only_one_run_have_nan_on_the_other_side():
    df = compare(*_pair()).set_index("subject")
    only_a, only_b = df.loc["app.OnlyA"], df.loc["app.OnlyB"]
    assert only_a["verdict_a"] == "leak" and pd.isna(only_a["verdict_b"]) and np.isnan(only_a["per_step_b"])
    # a watched class only one run watched: no evidence that the other fixed (or introduced) anything
    assert only_a["change"] == "not compared" and not only_a["real"] and np.isnan(only_a["difference"])
    assert pd.isna(only_b["verdict_a"]) and only_b["verdict_b"] == "flat" and only_b["change"] == "not compared"


def test_a_difference_below_the_practical_minimum_is_not_real():
    # 100 bytes/step less over 200 steps: surely different (exact lines) but 20 KB, below 64 KiB
    a = _tl({("cache", "c", "bytes", "bytes"): 1e6 + 300.0 * STEPS}, "a")
    b = _tl({("cache", "c", "bytes", "bytes"): 1e6 + 200.0 * STEPS}, "b")
    row = compare(a, b).iloc[0]
    assert row["difference_high"] < 0 and not row["real"] and row["change"] == "unchanged"


def test_runs_and_journal_paths_are_accepted(tmp_path):
    pa, pb = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    ra = td.track(lambda i: None, steps=8, every=2, census=False, progress=False, journal=pa, name="alpha")
    td.track(lambda i: None, steps=8, every=2, census=False, progress=False, journal=pb, name="beta")
    df = compare(ra, pb)
    assert df.attrs["labels"] == ("alpha", "beta")
    assert (df["probe"] == "process").any()
    assert compare(str(pa), td.load(pb)).attrs["labels"] == ("alpha", "beta")


def test_bad_inputs_raise_config_errors(tmp_path):
    a, b = _pair()
    with pytest.raises(ConfigError, match="no such journal"):
        compare(tmp_path / "missing.jsonl", b)
    with pytest.raises(ConfigError, match="2 runs"):
        compare(pd.concat([a, b]), b)
    with pytest.raises(ConfigError, match="labels"):
        compare(a, b, labels=("only one",))  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        compare(42, b)


# ----------------------------------------------------------------------------- real runs


class Job:
    def __init__(self, i: int) -> None:
        self.i = i
        self.result = bytearray(8 * 1024)


JOBS: list[Job] = []


def _track(step, name: str) -> td.Run:
    return td.track(step, steps=40, every=4, watch=["Job"], census=False, progress=False, name=name)


def test_real_leak_against_its_fix_says_fixed():
    JOBS.clear()

    def leaky(i: int) -> None:
        JOBS.append(Job(i))  # every job kept forever

    def fixed(i: int) -> None:
        JOBS.append(Job(i))
        if len(JOBS) > 3:  # the fix: keep the last three
            del JOBS[0]

    try:
        a = _track(leaky, "leaky")
        JOBS.clear()
        b = _track(fixed, "fixed")
    finally:
        JOBS.clear()
    df = compare(a, b).set_index(["probe", "subject", "metric"])
    name = f"{__name__}.Job"
    for metric in ("count", "bytes"):
        row = df.loc[("watch", name, metric)]
        assert row["verdict_a"] == "leak" and row["verdict_b"] != "leak", row
        assert row["change"] == "fixed" and row["real"]
        assert row["difference_high"] < 0
    assert df.loc[("watch", name, "count"), "per_step_a"] == pytest.approx(1.0)


def test_two_runs_of_the_same_clean_workload_are_unchanged():
    def clean(i: int) -> None:
        jobs = [Job(i) for _ in range(5)]
        del jobs

    a = _track(clean, "one")
    b = _track(clean, "two")
    df = compare(a, b)
    assert not df["change"].isin(["fixed", "new leak"]).any(), df[["subject", "metric", "change"]]
    watched = df[df["probe"] == "watch"]
    assert len(watched) == 2 and (watched["change"] == "unchanged").all()
    assert (df.loc[(df["probe"] == "process") & (df["metric"] == "rss"), "change"] == "unchanged").all()


def test_a_series_only_one_run_measured_is_not_compared_but_a_census_type_gone_is_fixed():
    import pandas as pd

    cols = ["run", "step", "elapsed_s", "probe", "subject", "metric", "value", "unit"]
    a = pd.DataFrame([("a", s, 0.0, p, subj, "count", float(s), "objects")
                      for s in range(0, 100, 10)
                      for p, subj in (("watch", "app.Agent"), ("census", "app.Blob"), ("watch", "app.Both"))],
                     columns=cols)
    b = pd.DataFrame([("b", s, 0.0, "watch", "app.Both", "count", 5.0, "objects") for s in range(0, 100, 10)],
                     columns=cols)
    got = td.compare(a, b).set_index("subject")["change"].to_dict()
    assert got == {"app.Agent": "not compared", "app.Blob": "fixed", "app.Both": "fixed"}


def _journal_on(tmp_path, name: str, host: str | None, leak: bool):
    """A tracked run's journal, its header's host rewritten (None: the field removed, as in older journals)."""
    import json
    import socket

    kept: list[bytes] = []
    path = tmp_path / f"{name}.jsonl"
    td.track(lambda i: kept.append(bytes(4096)) if leak else None, steps=20, every=2, journal=path, census=False,
             progress=False, name=name)
    lines = path.read_text().splitlines()
    header = json.loads(lines[0])
    assert header["host"] == socket.gethostname()  # every journal says where it was taken
    if host is None:
        del header["host"]
    else:
        header["host"] = host
    path.write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n")
    return path


def test_runs_from_different_hosts_are_compared_with_a_warning(tmp_path):
    import warnings

    from tokdiag.errors import TokdiagWarning

    a = _journal_on(tmp_path, "a", "gpu-box-1", leak=True)
    b = _journal_on(tmp_path, "b", "gpu-box-2", leak=False)
    with pytest.warns(TokdiagWarning, match=r"runs 'a' and 'b' ran on different hosts \(gpu-box-1, gpu-box-2\)"):
        df = compare(a, td.load(b))
    assert len(df)  # a warning, not a refusal
    same = _journal_on(tmp_path, "c", "gpu-box-1", leak=False)
    older = _journal_on(tmp_path, "d", None, leak=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TokdiagWarning)
        compare(a, same)
        compare(a, older)  # unknown host: nothing to say
        compare(td.load(a).timeline, b)  # a bare timeline has no header
