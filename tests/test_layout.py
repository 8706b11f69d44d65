"""Layout of every kind of page at 800 and 1,400 px, in headless Chromium: the answer on the first screen, no
horizontal overflow, no chart text clipped. Screenshots go to ``test-artifacts/screenshots/`` (git-ignored) for a
person to look at.

Pages: every page ``make report`` writes, from the same five notebooks on small parameters (the batch of
tests/small_suite.py, shared with test_notebooks.py): the index and each notebook's report; then ``tokdiag
report`` of two journals and ``tokdiag compare`` of the same two.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from small_suite import SUITE

from tokdiag.cli import main

pytestmark = pytest.mark.slow

SHOTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "screenshots"
WIDTHS = (800, 1400)
HEIGHT = 900


@pytest.fixture(scope="module")
def pages(small_suite: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{name: page}: every page ``make report`` writes (the index and the five notebooks' reports, on small
    parameters: tests/small_suite.py), a journal report of two journals and their A/B report."""
    assert [r.status for r in small_suite.runs] == ["ok"] * len(SUITE), [r.failure for r in small_suite.runs]
    found = {r.spec.notebook.stem: r for r in small_suite.runs}
    assert set(found) == set(SUITE) and all(r.html is not None for r in found.values())
    first, second = found["agent_objects"].journals
    root = tmp_path_factory.mktemp("layout")
    assert main(["report", str(first), str(second), "-o", str(root / "report"),
                 "--name", "as configured", "--name", "fixed"]) == 0
    assert main(["compare", str(first), str(second), "-o", str(root / "compare")]) == 0
    return {"index": small_suite.index, **{name: r.html for name, r in found.items()},
            "report": root / "report" / "journal_report.html", "compare": root / "compare" / "compare_runs.html"}


_CLIPPED_TEXT = """() => {
  // every text of every drawn chart: inside its chart's box, and not hidden under the next label of its row
  const out = [];
  for (const plot of document.querySelectorAll('div.tokdiag-plot')) {
    const box = plot.getBoundingClientRect();
    const title = (plot.getAttribute('aria-label') || '').slice(0, 60);
    for (const t of plot.querySelectorAll('svg text')) {
      const r = t.getBoundingClientRect();
      if (!t.textContent.trim() || r.width === 0) continue;
      if (r.left < box.left - 1 || r.right > box.right + 1 || r.top < box.top - 1 || r.bottom > box.bottom + 1)
        out.push(`${title}: "${t.textContent.slice(0, 40)}" outside its chart`);
    }
    const labels = [...plot.querySelectorAll('g.annotation text')].map(t => [t, t.getBoundingClientRect()])
      .filter(([t, r]) => r.width > 0 && t.textContent.trim());
    for (let i = 0; i < labels.length; i++) for (let j = i + 1; j < labels.length; j++) {
      const [a, ra] = labels[i], [b, rb] = labels[j];
      const w = Math.min(ra.right, rb.right) - Math.max(ra.left, rb.left);
      const h = Math.min(ra.bottom, rb.bottom) - Math.max(ra.top, rb.top);
      if (w > 2 && h > 2)
        out.push(`${title}: "${a.textContent.slice(0, 30)}" overlaps "${b.textContent.slice(0, 30)}"`);
    }
  }
  return out;
}"""


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("name", ["index", *SUITE, "report", "compare"])
def test_page_layout(pages: dict[str, Path], browser: Any, name: str, width: int) -> None:
    context = browser.new_context(viewport={"width": width, "height": HEIGHT})
    try:
        page = context.new_page()
        page.route("**/*", lambda route: route.continue_() if route.request.url.startswith("file://")
                   else route.abort())
        page.goto(pages[name].resolve().as_uri(), wait_until="load")
        if name != "index":
            page.wait_for_function("() => [...document.querySelectorAll('div.tokdiag-plot')]"
                                   ".every(d => d.querySelector('svg.main-svg'))", timeout=30_000)
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"{name}-{width}.png"), full_page=True)
        page.screenshot(path=str(SHOTS / f"{name}-{width}-first-screen.png"))
        overflow = page.evaluate("() => document.scrollingElement.scrollWidth")
        assert overflow <= width, f"{name} at {width} px is {overflow} px wide"
        answer = page.locator("p.answer" if name == "index" else "div.tokdiag-answer").first
        box = answer.bounding_box()
        assert box is not None and box["y"] < HEIGHT, f"{name}: answer below the first screen"
        assert answer.inner_text().strip()
        assert page.evaluate(_CLIPPED_TEXT) == []
        if name != "index":  # the code is hidden, and the page's own checkbox shows it
            code = page.locator(".jp-CodeCell .jp-Cell-inputWrapper").first
            assert not code.is_visible()
            page.get_by_text("show code").click()
            assert code.is_visible()
    finally:
        context.close()
