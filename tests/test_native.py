"""The native probe: every instance of a registered type counted, its native bytes estimated or read."""

from __future__ import annotations

import gc
import json
import os
import sqlite3
import ssl
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import tiktoken

import tokdiag as td
from tokdiag.errors import ConfigError, TokdiagWarning
from tokdiag.probes import native, native_models, native_registry
from tokdiag.probes.allocator import read_glibc
from tokdiag.probes.base import SnapshotContext
from tokdiag.probes.native import NativeProbe, calibrate, coefficients, estimate_tiktoken_native, native_types

ROOT = Path(__file__).resolve().parent.parent
KB = 1024
MiB = 1024 * 1024


def _cafile() -> str:
    paths = ssl.get_default_verify_paths()
    for p in (paths.cafile, paths.openssl_cafile):
        if p and os.path.isfile(p):
            return p
    import certifi

    return certifi.where()


def _values(probe: NativeProbe, ctx: SnapshotContext | None = None) -> dict[tuple[str, str], float]:
    ctx = ctx or SnapshotContext()
    try:
        return {(r.subject, r.metric): r.value for r in probe.collect(ctx) if r.probe == "native"}
    finally:
        ctx.release()


def _encoding(n: int = 2000) -> tiktoken.Encoding:
    ranks = {bytes([i]): i for i in range(256)}
    for i in range(256, n):
        ranks[f"tok{i}".encode()] = i
    return tiktoken.Encoding("tiny", pat_str=r"\S+|\s+", mergeable_ranks=ranks, special_tokens={})


def test_ssl_contexts_are_counted_and_estimated_from_their_certificate_stores():
    gc.collect()
    probe = NativeProbe(full_every=1)
    before = _values(probe)
    cafile = _cafile()
    made = [ssl.create_default_context(cafile=cafile) for _ in range(3)] + [ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)]
    x509 = made[0].cert_store_stats()["x509"]
    assert x509 > 50
    after = _values(probe)
    c = coefficients("ssl")
    assert after[("ssl.SSLContext", "count")] - before[("ssl.SSLContext", "count")] == 4
    assert after[("ssl.SSLContext", "certificates")] - before[("ssl.SSLContext", "certificates")] == 3 * x509
    grown = after[("ssl.SSLContext", "native_bytes")] - before[("ssl.SSLContext", "native_bytes")]
    assert grown == pytest.approx(4 * c["base"] + 3 * x509 * c["per_certificate"], abs=4)
    del made
    gc.collect()
    assert _values(probe)[("ssl.SSLContext", "count")] == before[("ssl.SSLContext", "count")]


def test_estimate_matches_the_heap_in_use_of_new_contexts():
    cafile = _cafile()
    warm = [ssl.create_default_context(cafile=cafile) for _ in range(2)]
    gc.collect()
    probe = NativeProbe(["ssl"], full_every=1)
    b0, h0 = _values(probe)[("ssl.SSLContext", "native_bytes")], read_glibc().in_use
    made = [ssl.create_default_context(cafile=cafile) for _ in range(20)]
    gc.collect()
    b1, h1 = _values(probe)[("ssl.SSLContext", "native_bytes")], read_glibc().in_use
    assert b1 - b0 == pytest.approx(h1 - h0, rel=0.05)
    del warm, made


class _Meta(type):
    def __eq__(cls, other):
        raise AssertionError("the probe compared a class")

    __hash__ = None  # type: ignore[assignment]

    def __subclasscheck__(cls, sub):
        raise AssertionError("the probe called __subclasscheck__")

    def __instancecheck__(cls, obj):
        raise AssertionError("the probe called __instancecheck__")


class _HostileContext(ssl.SSLContext, metaclass=_Meta):
    def __getattribute__(self, name):
        raise AssertionError(f"the probe read .{name}")

    def cert_store_stats(self):
        raise AssertionError("the probe called the subclass' cert_store_stats")

    @property
    def __class__(self):
        raise AssertionError("the probe read __class__")


class _HostileEncoding(tiktoken.Encoding):
    @property
    def _mergeable_ranks(self):  # a class attribute of that name: the probe must not read it
        raise AssertionError("the probe ran a property")

    @_mergeable_ranks.setter
    def _mergeable_ranks(self, value):
        object.__setattr__(self, "_shadow", value)

    def __getattr__(self, name):
        raise AssertionError(f"the probe called __getattr__ for {name}")


def test_subclasses_are_counted_without_running_their_code():
    probe = NativeProbe(full_every=1)
    before = _values(probe)
    ctx = _HostileContext(ssl.PROTOCOL_TLS_CLIENT)
    ranks = {bytes([i]): i for i in range(256)}
    enc = _HostileEncoding("hostile", pat_str=r"\S+", mergeable_ranks=ranks, special_tokens={})
    after = _values(probe)
    assert after[("ssl.SSLContext", "count")] == before[("ssl.SSLContext", "count")] + 1
    assert after[("ssl.SSLContext", "native_bytes")] - before[("ssl.SSLContext", "native_bytes")] == \
        pytest.approx(coefficients("ssl")["base"], abs=2)  # no CA loaded: the C method says 0 certificates
    assert after[("tiktoken.core.Encoding", "count")] == before[("tiktoken.core.Encoding", "count")] + 1
    # its ranks are behind a property: not read, so no bytes (rather than running the subclass' code)
    assert after[("tiktoken.core.Encoding", "native_bytes")] == before[("tiktoken.core.Encoding", "native_bytes")]
    del ctx, enc


def test_an_encoding_a_cache_counted_adds_no_bytes_under_its_type():
    enc = _encoding()
    estimate = estimate_tiktoken_native(enc._mergeable_ranks, enc._special_tokens)
    probe = NativeProbe(["tiktoken"], full_every=1)
    alone = _values(probe)[("tiktoken.core.Encoding", "native_bytes")]
    claimed = SnapshotContext()
    claimed.native_seen.add(id(enc))  # what the cache probe does when a cache holds it
    v = _values(probe, claimed)
    assert alone - v[("tiktoken.core.Encoding", "native_bytes")] == estimate
    assert v[("tiktoken.core.Encoding", "count")] >= 1
    assert v[("tiktoken.core.Encoding", "tokens")] >= 2000


HELD: dict[str, object] = {}


def test_ledger_counts_an_encoding_once_when_a_cache_and_the_registry_both_see_it():
    HELD.clear()

    def step(i: int) -> None:
        if i == 1:
            HELD["enc"] = _encoding(5000)

    try:
        run = td.track(step, steps=3, every=1, census=False, progress=False, probes=[NativeProbe()],
                       caches=[td.cache(f"{__name__}:HELD", name="held")])
    finally:
        HELD.clear()
    led = run.ledger(since="start")  # the encoding is loaded at step 1: a warm-up baseline after it would hide it
    last = led[led["step"] == 3].set_index("owner")["bytes"]
    est = run.series("cache", "held", "native_bytes").iloc[-1]
    assert est > 0 and last["held (native estimate)"] == est
    assert last["tiktoken.core.Encoding (native)"] == 0.0
    assert run.series("native", "tiktoken.core.Encoding", "count").diff().iloc[-2] == 1


def test_one_new_context_per_step_is_in_the_journal_from_the_first_snapshot():
    kept: list[ssl.SSLContext] = []
    run = td.track(lambda i: kept.append(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)), steps=6, every=1,
                   census=False, progress=False, probes=[NativeProbe()])
    counts = run.series("native", "ssl.SSLContext", "count")
    assert list(counts.diff().dropna()) == [1.0] * 6
    # from the first snapshot: the default baseline, the end of a warm-up read from RSS noise, may be step 1
    assert run.ledger(since="start").query("step == 6").set_index("owner").loc[
        "ssl.SSLContext (native)", "bytes"] == pytest.approx(6 * coefficients("ssl")["base"], abs=8)


def test_listing_is_skipped_while_no_instance_was_made_or_freed():
    probe = NativeProbe(["ssl"], full_every=5)
    kept = [ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)]
    counts = []
    for k in range(11):
        if k == 3:
            kept.append(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
        if k == 5:
            del kept[0]
        counts.append(_values(probe)[("ssl.SSLContext", "count")])
    n = counts[0]
    assert counts == [n, n, n, n + 1, n + 1] + [n] * 6
    assert probe.passes == 4  # the first, the two changes, and the 5th snapshot after the last pass (k=10)
    del kept


def test_sqlite_memory_is_read_from_sqlite():
    probe = NativeProbe(["sqlite3"])
    con = sqlite3.connect(":memory:")
    con.execute("create table t (k integer primary key, v text)")
    gc.collect()
    b0, h0 = _values(probe)[("sqlite3.Connection", "native_bytes")], read_glibc().in_use
    for _ in range(4):
        con.executemany("insert into t(v) values (?)", ((f"row {i} " * 10,) for i in range(20_000)))
        con.commit()
    gc.collect()
    v = _values(probe)
    pages = con.execute("pragma page_count").fetchone()[0] * con.execute("pragma page_size").fetchone()[0]
    grown = v[("sqlite3.Connection", "native_bytes")] - b0
    assert v[("sqlite3.Connection", "count")] >= 1
    assert grown == pytest.approx(read_glibc().in_use - h0, rel=0.1)
    assert grown == pytest.approx(pages, rel=0.2)
    con.close()


def test_the_probe_imports_nothing():
    code = textwrap.dedent("""
        import sys
        from tokdiag.probes.base import SnapshotContext
        from tokdiag.probes.native import NativeProbe
        before = set(sys.modules)
        recs = NativeProbe().collect(SnapshotContext())
        print(sorted(set(sys.modules) - before), sorted({r.subject for r in recs if r.probe == "native"}))
    """)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    new, subjects = out.stdout.strip().split("] [")
    assert new == "["
    assert "tiktoken" not in subjects and "sqlite3" not in subjects


def test_unknown_type_is_a_config_error_with_a_hint():
    with pytest.raises(ConfigError, match="did you mean 'ssl'"):
        native_types(["sssl"])
    assert [t.name for t in native_types(["ssl", "ssl.SSLContext"])] == ["ssl.SSLContext"]


def test_every_entry_says_how_it_was_calibrated():
    for t in native.REGISTRY:
        assert t.calibration and t.holds
        assert (t.per_instance is None) != (t.process_wide is None)


# ----------------------------------------------------------------------------- calibration


def _write(path: Path, kinds: dict) -> Path:
    path.write_text(json.dumps({"format": 1, "kinds": kinds}))
    return path


def test_calibration_file_is_used_only_for_the_library_version_it_measured(tmp_path, monkeypatch):
    monkeypatch.setattr(native_registry, "_warned_versions", set())
    good = _write(tmp_path / "good.json", {"ssl": {"version": ssl.OPENSSL_VERSION,
                                                    "coefficients": {"base": 1.0, "per_certificate": 2.0}}})
    monkeypatch.setenv("TOKDIAG_CALIBRATION", str(good))
    assert coefficients("ssl") == {"base": 1.0, "per_certificate": 2.0}
    ctx = ssl.create_default_context(cafile=_cafile())
    bytes_, x509 = native_models.ssl_instance(ctx, coefficients("ssl"))
    assert bytes_ == 1 + 2 * x509
    old = _write(tmp_path / "old.json", {"ssl": {"version": "OpenSSL 0.9.8", "coefficients": {"base": 1.0,
                                                                                            "per_certificate": 2.0}}})
    monkeypatch.setenv("TOKDIAG_CALIBRATION", str(old))
    with pytest.warns(TokdiagWarning, match="tokdiag calibrate"):
        assert coefficients("ssl") == native_models.SSL_DEFAULTS
    monkeypatch.setenv("TOKDIAG_CALIBRATION", "none")
    assert coefficients("ssl") == native_models.SSL_DEFAULTS
    del ctx


@pytest.mark.slow
def test_calibrate_fits_ssl_contexts_in_fresh_processes(tmp_path, monkeypatch):
    target = tmp_path / "cal.json"
    result = calibrate(["ssl"], path=target)
    fit = result.kinds["ssl"]
    assert {p["label"].split()[0] for p in fit["points"]} >= {"no", "first", "system"}
    # within 5% wherever a store holds 10 or more certificates (the first certificate costs a little more)
    assert max(abs(p["error"]) for p in fit["points"] if p["certificates"] >= 10) < 0.05
    assert fit["coefficients"]["per_certificate"] > 1000
    assert "written to" in result.report()
    monkeypatch.setattr(native_registry, "_warned_versions", set())
    monkeypatch.setenv("TOKDIAG_CALIBRATION", str(target))
    assert coefficients("ssl") == pytest.approx(fit["coefficients"])
    # the file keeps kinds not re-fitted now
    doc = json.loads(target.read_text())
    doc["kinds"]["tiktoken"] = {"version": "x", "coefficients": {"constant": 1.0, "scale": 1.0}}
    target.write_text(json.dumps(doc))
    calibrate(["ssl"], path=target)
    assert set(json.loads(target.read_text())["kinds"]) == {"ssl", "tiktoken"}


def test_calibrate_refuses_an_unknown_kind():
    with pytest.raises(ConfigError, match="did you mean 'tiktoken'"):
        calibrate(["tiktokn"], write=False)


@pytest.mark.slow
def test_calibrate_tiktoken_recovers_the_structure_of_the_model(tmp_path):
    fit = calibrate(["tiktoken"], write=False).kinds["tiktoken"]
    assert fit["coefficients"]["scale"] == pytest.approx(1.0, abs=0.05)
    assert fit["max_error"] < 0.03
