"""Re-fitting the native models on this machine (``tokdiag calibrate``), in fresh subprocesses.

Each point runs in its own interpreter (``tokdiag/probes/_native_child.py``);
:func:`calibrate` fits the models of :mod:`tokdiag.probes.native_models` and
writes them where the registry reads them
(:func:`tokdiag.probes.native_registry.calibration_path`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tokdiag.errors import ConfigError, TokdiagError, did_you_mean
from tokdiag.probes.native_models import tiktoken_structure, version_of
from tokdiag.probes.native_registry import CALIBRATION_ENV, calibration_path, forget_calibration_file

__all__ = ["Calibration", "calibrate"]


# ----------------------------------------------------------------------------- calibrate


@dataclass(frozen=True)
class Calibration:
    """The result of :func:`calibrate`: per kind, the fitted coefficients, the points and the fit's errors."""

    path: Path | None
    kinds: dict[str, dict[str, Any]]

    def report(self) -> str:
        """A few lines per kind, for the command line."""
        lines: list[str] = []
        for kind, k in self.kinds.items():
            coef = ", ".join(f"{n}={v:,.4g}" for n, v in k["coefficients"].items())
            lines.append(f"{kind} ({k['version']}): {coef}; max error {k['max_error']:.1%} over "
                         f"{len(k['points'])} points, measured as {k['measured']}")
            for p in k["points"]:
                lines.append(f"  {p['label']}: measured {p['bytes']:,.0f} B, fit {p['fit']:,.0f} B "
                             f"({p['error']:+.1%})")
        if self.path is not None:
            lines.append(f"written to {self.path}")
        return "\n".join(lines)


_CHILD = Path(__file__).with_name("_native_child.py")


def _child(kind: str, arg: str, n: int, timeout: float) -> dict[str, Any]:
    cmd = [sys.executable, "-P", str(_CHILD), kind, arg, str(n)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise TokdiagError(f"calibrate: measuring {kind} {arg!r} took more than {timeout:.0f} s; "
                           "pass a larger timeout= on a busy machine") from None
    if out.returncode != 0:
        raise TokdiagError(f"calibrate: measuring {kind} {arg!r} failed (exit {out.returncode}): "
                           f"{out.stderr.strip()[-500:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _fit(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """Least-squares ``y = a + b x``."""
    import numpy as np

    b, a = np.polyfit(np.asarray(x, dtype=float), np.asarray(y, dtype=float), 1)
    return float(a), float(b)


def _bundles(workdir: Path) -> list[tuple[str, str]]:
    """(label, cafile or "-") for the SSL points: no CA, 1/10/40 of the system bundle's certificates, the
    system bundle, certifi's when installed."""
    import importlib.util
    import ssl

    paths = ssl.get_default_verify_paths()
    system = next((p for p in (paths.cafile, paths.openssl_cafile) if p and os.path.isfile(p)), None)
    spec = importlib.util.find_spec("certifi")
    certifi = None
    if spec is not None and spec.origin:
        candidate = Path(spec.origin).with_name("cacert.pem")
        certifi = str(candidate) if candidate.is_file() else None
    source = system or certifi
    out: list[tuple[str, str]] = [("no CA file", "-")]
    if source is not None:
        end = "-----END CERTIFICATE-----"
        certs = [c + end + "\n" for c in Path(source).read_text(errors="replace").split(end) if "BEGIN" in c]
        for k in (1, 10, 40):
            if k < len(certs):
                f = workdir / f"first-{k}.pem"
                f.write_text("".join(certs[:k]))
                out.append((f"first {k} certificate(s) of {Path(source).name}", str(f)))
    if system:
        out.append((f"system bundle {system}", system))
    if certifi:
        out.append((f"certifi {certifi}", certifi))
    return out


def _calibrate_ssl(n: int, timeout: float) -> dict[str, Any]:
    import ssl

    with tempfile.TemporaryDirectory(prefix="tokdiag-calibrate-") as tmp:
        points = []
        for label, arg in _bundles(Path(tmp)):
            m = _child("ssl", arg, n, timeout)
            per = m["heap_per"] if m["heap_per"] is not None else m["rss_per"]
            points.append({"label": label, "certificates": m["certificates"], "bytes": per, "rss": m["rss_per"]})
    if len({p["certificates"] for p in points}) < 2:
        raise TokdiagError("calibrate('ssl'): no CA bundle found (neither OpenSSL's default file nor certifi's "
                           "cacert.pem), so there is nothing to fit the per-certificate cost to; install "
                           "ca-certificates or certifi")
    a, b = _fit([p["certificates"] for p in points], [p["bytes"] for p in points])
    return _summary(points, {"base": a, "per_certificate": b}, lambda p: a + b * p["certificates"],
                    version=ssl.OPENSSL_VERSION, n=n)


def _calibrate_tiktoken(n: int, timeout: float) -> dict[str, Any]:
    from tokdiag.probes._native_child import synthetic_ranks

    points = []
    for tokens in (20_000, 60_000, 100_000):
        m = _child("tiktoken", str(tokens), n, timeout)
        per = m["heap_per"] if m["heap_per"] is not None else m["rss_per"]
        ranks = synthetic_ranks(tokens)
        structure = tiktoken_structure(ranks, {"<|endoftext|>": len(ranks)})
        points.append({"label": f"{tokens:,} synthetic tokens, cl100k's pattern", "structure": structure,
                       "bytes": per, "rss": m["rss_per"]})
    constant, scale = _fit([p["structure"] for p in points], [p["bytes"] for p in points])
    return _summary(points, {"constant": constant, "scale": scale}, lambda p: scale * p["structure"] + constant,
                    version=version_of("tiktoken")(), n=n)


def _summary(points: list[dict[str, Any]], coef: dict[str, float], fit: Callable[[dict[str, Any]], float],
             *, version: str | None, n: int) -> dict[str, Any]:
    for p in points:
        p["fit"] = fit(p)
        p["error"] = (p["fit"] - p["bytes"]) / p["bytes"] if p["bytes"] else 0.0
    measured = (f"glibc heap in use per object (mallinfo2), {n} objects after 3 in a fresh process per point"
                if all(p["bytes"] != p["rss"] for p in points) else f"RssAnon per object, {n} objects after 3")
    return {"version": version, "coefficients": coef, "points": points,
            "max_error": max(abs(p["error"]) for p in points), "measured": measured}


_CALIBRATORS: dict[str, tuple[Callable[[int, float], dict[str, Any]], int]] = {
    "ssl": (_calibrate_ssl, 20),
    "tiktoken": (_calibrate_tiktoken, 2),
}


def calibrate(kinds: Sequence[str] | None = None, *, path: str | os.PathLike[str] | None = None,
              write: bool = True, timeout: float = 60.0) -> Calibration:
    """Re-fit the native models on this machine, in fresh subprocesses, and write them for the registry.

    ``kinds``: ``"ssl"`` (contexts with no CA file, 1/10/40 certificates,
    the system bundle and certifi's: ``base + per_certificate * x509``) and
    ``"tiktoken"`` (Encodings of 20k/60k/100k synthetic tokens with
    cl100k's pattern: ``scale * structure + constant``); default both of
    those whose library is installed. ``sqlite3`` is read, not modelled.
    Each point runs in its own interpreter (``tokdiag/probes/_native_child.py``)
    and measures glibc's heap in use per object (``RssAnon`` without glibc).
    About 10-20 s in all.

    ``path``: where to write (default :func:`calibration_path`); ``write=False``
    fits without writing. The file keeps the kinds not re-fitted now.
    Returns a :class:`Calibration` (``.report()`` for people).
    """
    import importlib.util

    if kinds is None:
        kinds = [k for k in _CALIBRATORS if k != "tiktoken" or importlib.util.find_spec("tiktoken") is not None]
    elif isinstance(kinds, str):
        kinds = [kinds]
    for k in kinds:
        if k not in _CALIBRATORS:
            raise ConfigError(f"calibrate: kind {k!r} has no calibration{did_you_mean(k, _CALIBRATORS, start='; ')}; "
                              f"pass some of {sorted(_CALIBRATORS)}")
    results = {k: _CALIBRATORS[k][0](_CALIBRATORS[k][1], timeout) for k in kinds}
    target = Path(path) if path is not None else calibration_path()
    if write:
        if target is None:
            raise ConfigError(f"calibrate: ${CALIBRATION_ENV} is 'none', so there is no file to write; pass "
                              "path=... or unset the variable")
        existing: dict[str, Any] = {}
        if target.is_file():
            try:
                existing = json.loads(target.read_text()).get("kinds", {})
            except (OSError, ValueError, AttributeError):
                existing = {}
        doc = {"format": 1, "written": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "python": sys.version.split()[0], "kinds": {**existing, **results}}
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(json.dumps(doc, indent=2) + "\n")
        tmp.replace(target)
        forget_calibration_file()  # read again at the next snapshot
    return Calibration(target if write else None, results)
