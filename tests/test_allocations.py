"""The allocation-site probe (``alloc_sites=N``): the measured code's own lines, never tokdiag's."""

from __future__ import annotations

import inspect
import os
from pathlib import Path

import tokdiag as td


def test_a_built_in_workload_shows_its_own_line_as_the_top_allocation_site(tmp_path: Path) -> None:
    # The agent app keeps every page snapshot (keep_browser): 20-50 KB of new bytes per step, built in
    # BrowserSession.visit. The built-in workloads are a package outside tokdiag, measured like user code.
    from tokdiag_workloads import agents

    agents.count_tokens("warm up")  # the app's one cached Encoding is built before tracing starts
    step = agents.agent_workload(keep_agents=False, keep_messages=False, keep_browser=True,
                                 unbounded_history=False)
    try:
        run = td.track(step, steps=30, every=10, alloc_sites=5, census=False, progress=False,
                       journal=tmp_path / "alloc.jsonl")
    finally:
        step.app.close()
    tl = run.timeline
    last = tl[(tl["probe"] == "alloc") & (tl["metric"] == "bytes") & (tl["step"] == tl["step"].max())]
    sites = last.sort_values("value", ascending=False)["subject"].tolist()
    assert len(sites) == 5
    lines, first = inspect.getsourcelines(agents.BrowserSession.visit)
    top_file, top_line = sites[0].rsplit(":", 1)
    assert os.path.basename(top_file) == os.path.basename(inspect.getsourcefile(agents.BrowserSession)), sites
    assert first <= int(top_line) < first + len(lines), sites
    # tokdiag's own frames stay hidden
    tokdiag_dir = os.path.dirname(os.path.abspath(td.__file__))
    assert not any(os.path.abspath(s.rsplit(":", 1)[0]).startswith(tokdiag_dir + os.sep) for s in sites), sites
