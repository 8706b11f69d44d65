"""Layout of every kind of page at 800 and 1,400 px, in headless Chromium: the answer on the first screen, no
horizontal overflow, no chart text clipped. Screenshots go to ``test-artifacts/screenshots/`` (git-ignored) for a
person to look at.

Pages: a batch of two shipped notebooks on tiny parameters (its index and both reports), ``tokdiag report`` of
two journals and ``tokdiag compare`` of the same two.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tokdiag.cli import main
from tokdiag.report.batch import run_batch

pytestmark = pytest.mark.slow

SHOTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "screenshots"
WIDTHS = (800, 1400)
HEIGHT = 900


@pytest.fixture(scope="module")
def pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{name: page}: the batch index, its two reports, a journal report of two journals and their A/B report."""
    root = tmp_path_factory.mktemp("layout")
    (root / "plan.yaml").write_text(
        "title: layout check\nruns:\n"
        "  - notebook: agent_objects\n    parameters: {tasks: 40}\n"
        "  - notebook: your_workload\n    parameters: {steps: 40}\n", encoding="utf-8")
    batch = run_batch(root / "plan.yaml", root / "batch", jobs=2, progress=None)
    assert [r.status for r in batch.runs] == ["ok", "ok"], [r.failure for r in batch.runs]
    agents = batch.runs[0]
    assert agents.html is not None and batch.runs[1].html is not None and len(agents.journals) == 2
    first, second = agents.journals
    assert main(["report", str(first), str(second), "-o", str(root / "report"),
                 "--name", "as configured", "--name", "fixed"]) == 0
    assert main(["compare", str(first), str(second), "-o", str(root / "compare")]) == 0
    return {"index": batch.index, "agent_objects": agents.html, "your_workload": batch.runs[1].html,
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
@pytest.mark.parametrize("name", ["index", "agent_objects", "your_workload", "report", "compare"])
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
