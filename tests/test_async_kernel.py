"""``await`` in a real Jupyter kernel, whose event loop is already running (issue 13 item 4)."""

from __future__ import annotations

from pathlib import Path

import pytest
from late_imports import lazy

from tokdiag.report.kernel import execute

nbformat = lazy("nbformat")  # at first use, not at collection (tests/late_imports.py)

pytestmark = pytest.mark.slow

CELLS = [
    "%load_ext tokdiag\nimport asyncio\nimport tokdiag as td\nkernel_loop = asyncio.get_running_loop()  # running",
    "class KernelLeak:\n    pass\nKEPT = []\nLOOPS = set()",
    "%%tokdiag --steps 24 --every 3 --watch KernelLeak --no-progress\n"
    "await asyncio.sleep(0)\nLOOPS.add(id(asyncio.get_running_loop()))\nKEPT.append(KernelLeak())",
    "v = _tokdiag_run.verdicts()\n"
    "assert v[(v.subject == '__main__.KernelLeak') & (v.metric == 'count')].verdict.tolist() == ['leak'], v\n"
    "assert len(KEPT) == 24 and LOOPS == {id(kernel_loop)}",
    "async def step(i):\n    await asyncio.sleep(0)\n"
    "try:\n    td.track(step, steps=2, census=False, progress=False)\n    said = ''\n"
    "except td.ConfigError as exc:\n    said = str(exc)\n"
    "assert 'await td.atrack(step, steps=N)' in said, said",
    "run = await td.atrack(step, steps=4, census=False, progress=False)\nassert run.steps == [0, 1, 2, 3, 4], run",
]


def test_percent_tokdiag_with_await_and_atrack_in_a_kernel_whose_loop_is_running(tmp_path: Path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in CELLS])
    source = tmp_path / "awaits.ipynb"
    nbformat.write(nb, source)
    result = execute(source, tmp_path / "out.ipynb", {}, cwd=tmp_path, timeout=300)
    assert result.ok, result.failure.describe() if result.failure else ""
