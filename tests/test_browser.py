"""Exported pages in a real browser: headless Chromium, no network, charts drawn, canary never ran.

Drives the Debian ``chromium`` package (``/usr/bin/chromium``, installed by
``.ci/run``) with Playwright's Python package. Every request that is not a
``file://`` URL is aborted and recorded; the tests assert there were none.
Full-page screenshots are kept in ``test-artifacts/`` (git-ignored) for a
person to look at.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tokdiag.report.batch import run_batch
from tokdiag.report.results import BatchResult

pytestmark = pytest.mark.slow

NOTEBOOKS = Path(__file__).parent / "notebooks"
ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts"
CANARY_TEXT = '<script>window.__canary=1</script><img src=x onerror="window.__canary=2">'


@pytest.fixture(scope="module")
def batch(tmp_path_factory: pytest.TempPathFactory) -> BatchResult:
    """simple_plot (two plotly figures, canary strings in a DataFrame, a Styler and print) and broken."""
    root = tmp_path_factory.mktemp("browser")
    for name in ("simple_plot.ipynb", "broken.ipynb"):
        shutil.copy(NOTEBOOKS / name, root / name)
    (root / "plan.yaml").write_text("title: browser check\nruns:\n  - notebook: simple_plot.ipynb\n"
                                    "    parameters: {points: 5}\n  - notebook: broken.ipynb\n", encoding="utf-8")
    result = run_batch(root / "plan.yaml", root / "out", jobs=2, progress=None)
    assert [r.status for r in result.runs] == ["ok", "failed"]
    return result



@dataclass
class Visit:
    """A page opened offline, with what it tried to fetch and what it logged."""

    page: Any
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@pytest.fixture
def visit(browser: Any) -> Iterator[Any]:
    contexts = []

    def open_page(path: Path) -> Visit:
        context = browser.new_context(viewport={"width": 1200, "height": 900}, java_script_enabled=True)
        contexts.append(context)
        seen = Visit(page=context.new_page())

        def route(request_route: Any) -> None:
            url = request_route.request.url
            if url.startswith("file://"):
                request_route.continue_()
            else:
                seen.requests.append(url)
                request_route.abort()

        context.route("**/*", route)
        seen.page.on("console", lambda m: seen.errors.append(m.text) if m.type == "error" else None)
        seen.page.on("pageerror", lambda e: seen.errors.append(f"uncaught: {e}"))
        seen.page.goto(path.resolve().as_uri(), wait_until="load")
        return seen

    yield open_page
    for context in contexts:
        context.close()


def _screenshot(visit: Visit, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    visit.page.screenshot(path=str(path), full_page=True)
    return path


def test_report_draws_both_charts_offline_and_the_canary_never_runs(batch: BatchResult, visit: Any) -> None:
    good = batch.runs[0]
    assert good.html is not None
    seen = visit(good.html)
    plots = seen.page.locator("div.tokdiag-plot")
    assert plots.count() == 2
    seen.page.wait_for_function(
        "() => [...document.querySelectorAll('div.tokdiag-plot')].every(d => d.querySelector('svg.main-svg'))",
        timeout=15_000)
    for i in range(2):  # each plot div holds an SVG with drawn marks, not an empty frame
        assert plots.nth(i).locator("svg.main-svg").count() >= 1
    assert plots.nth(0).locator("path.js-line").count() == 1  # the line through the 5 points
    assert plots.nth(0).locator("path.point").count() == 5
    assert plots.nth(1).locator("g.point").count() == 3  # three bars
    shot = _screenshot(seen, "report_simple_plot.png")
    assert seen.page.evaluate("typeof window.__canary") == "undefined"
    body = seen.page.inner_text("body")
    assert body.count(CANARY_TEXT) >= 3  # printed, repr'd and in the Styler table, shown as text
    assert seen.requests == [] and seen.errors == []
    assert shot.stat().st_size > 10_000


def test_failed_report_shows_the_error_offline(batch: BatchResult, visit: Any) -> None:
    broken = batch.runs[1]
    assert broken.html is not None
    seen = visit(broken.html)
    text = seen.page.inner_text("body")
    assert "ZeroDivisionError" in text and "FAILED at In [4], cell 2" in text
    _screenshot(seen, "report_broken.png")
    assert seen.requests == [] and seen.errors == []


def test_index_page_shows_both_runs_and_its_links_open(batch: BatchResult, visit: Any) -> None:
    seen = visit(batch.index)
    rows = seen.page.locator("table.runs tbody tr")
    assert rows.count() == 2
    assert "ZeroDivisionError: division by zero" in rows.nth(0).inner_text()  # a failed run comes first
    assert "leak" in rows.nth(1).inner_text()
    _screenshot(seen, "batch_index.png")
    assert seen.page.evaluate("typeof window.__canary") == "undefined"  # the summary carries the canary too
    assert CANARY_TEXT in rows.nth(1).inner_text()
    rows.nth(1).get_by_role("link", name="report").click()
    seen.page.wait_for_load_state("load")
    assert seen.page.url.endswith("/01-simple_plot/simple_plot.html")
    assert seen.page.locator("div.tokdiag-plot").count() == 2
    assert seen.requests == [] and seen.errors == []
