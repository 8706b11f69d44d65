"""Cached values changed in place: a cache whose payload fingerprint changed while its entry count did not.

The cache probe records, per cache and snapshot, its ``entries`` and a
``fingerprint`` of its payloads (:mod:`tokdiag.probes.caches`). A cache that
gains or loses entries changes its fingerprint as a matter of course; one
whose entry count stays the same while the fingerprint changes had a cached
value mutated in place (a shared ranks dict that another tokenizer extended,
a cached list someone appended to): every user of that entry now sees the
change.

>>> import pandas as pd
>>> from tokdiag.recording.run import Run
>>> cols = ["run", "step", "elapsed_s", "probe", "subject", "metric", "value", "unit"]
>>> rows = [("r", s, 0.0, "cache", "m:_C", "entries", 1.0, "entries") for s in range(5)]
>>> rows += [("r", s, 0.0, "cache", "m:_C", "fingerprint", 7.0 if s < 3 else 9.0, "") for s in range(5)]
>>> mutations(Run("r", pd.DataFrame(rows, columns=cols)), "m:_C")["step"].tolist()
[3]
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from tokdiag.errors import ConfigError

__all__ = ["MUTATION_COLUMNS", "mutations"]

MUTATION_COLUMNS: tuple[str, ...] = ("step", "entries", "fingerprint_before", "fingerprint_after")
"""Columns of :func:`mutations`."""


def mutations(run: Any, cache: str) -> pd.DataFrame:
    """The snapshots at which ``cache``'s payload changed in place: fingerprint changed, entry count did not.

    ``run``: a :class:`tokdiag.Run` (or a timeline DataFrame); ``cache``: the
    cache's label as the run recorded it (``"module:attr"``). One row per
    change, columns :data:`MUTATION_COLUMNS`: ``step`` is the snapshot that
    first shows it (snapshots are labelled by steps completed, so the change
    happened during the step numbered ``step - 1``, counting from 0).
    Raises :class:`ConfigError` when the run has no fingerprint for ``cache``.
    """
    from tokdiag.recording.timeline import series

    timeline = run if isinstance(run, pd.DataFrame) else run.timeline
    fingerprint = series(timeline, "cache", cache, "fingerprint").dropna()
    entries = series(timeline, "cache", cache, "entries").dropna()
    if fingerprint.empty:
        known = sorted(timeline.loc[(timeline["probe"] == "cache") & (timeline["metric"] == "fingerprint"),
                                    "subject"].unique())
        raise ConfigError(f"mutations: no fingerprint of cache {cache!r} in this run; the caches it fingerprinted: "
                          f"{known or 'none (was the cache measured? td.track(..., caches=[...]))'}")
    both = pd.DataFrame({"fingerprint": fingerprint, "entries": entries}).dropna()
    rows = []
    for (_, before), (step, after) in zip(both.iloc[:-1].iterrows(), both.iloc[1:].iterrows(), strict=True):
        if before["fingerprint"] != after["fingerprint"] and before["entries"] == after["entries"]:
            rows.append({"step": int(step), "entries": int(after["entries"]),
                         "fingerprint_before": int(before["fingerprint"]),
                         "fingerprint_after": int(after["fingerprint"])})
    return pd.DataFrame(rows, columns=list(MUTATION_COLUMNS))
