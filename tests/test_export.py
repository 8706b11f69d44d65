"""HTML export: offline, plotly.js once, no absolute paths, hostile strings stay text."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import pytest
from late_imports import lazy

from tokdiag.errors import ConfigError
from tokdiag.report.export import PLOTLY_MIME, export_html, plotly_renderer_setup
from tokdiag.report.journal_report import report_from_journals
from tokdiag.report.kernel import execute
from tokdiag.report.scrub import scrub_notebook

nbformat = lazy("nbformat")  # at first use, not at collection (tests/late_imports.py)

HERE = Path(__file__).parent
NOTEBOOKS = HERE / "notebooks"
REPO = HERE.parent
PLOTLY_BANNER = "* plotly.js v"


@pytest.fixture(scope="module")
def executed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """simple_plot.ipynb executed by a real kernel and exported: (run folder, html path, page text)."""
    run_dir = tmp_path_factory.mktemp("export") / "run"
    result = execute(NOTEBOOKS / "simple_plot.ipynb", run_dir / "simple_plot.ipynb",
                     {"points": 4, "output_dir": "."}, cwd=run_dir)
    assert result.ok, result.failure
    page = export_html(result.output, run_dir / "simple_plot.html")
    return run_dir, page, page.read_text(encoding="utf-8")


def _csp(page: str) -> dict[str, list[str]]:
    """The page's Content-Security-Policy ``<meta>``, as {directive: [sources]}."""
    from html.parser import HTMLParser

    found: list[str] = []

    class Meta(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            values = dict(attrs)
            if tag == "meta" and (values.get("http-equiv") or "").lower() == "content-security-policy":
                found.append(values.get("content") or "")

    Meta().feed(page)
    assert len(found) == 1, "the page must carry exactly one CSP meta tag"
    return {part.split()[0]: part.split()[1:] for part in found[0].split(";") if part.strip()}


def _machine_paths(*extra: Path) -> list[str]:
    paths = {str(REPO), str(REPO.resolve()), str(Path.home()), sys.prefix, sys.base_prefix, os.getcwd(),
             *(str(p) for p in extra)}
    return sorted(p for p in paths if len(p) > 1)


def test_page_loads_nothing_from_the_network(executed: tuple[Path, Path, str]) -> None:
    _, _, page = executed
    assert 'src="http' not in page and "src='http" not in page
    markup = re.sub(r"<script\b[^>]*>.*?</script>", "", page, flags=re.S)  # plotly.js mentions URLs in strings
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", markup)
    assert "require" not in markup and "mathjax" not in markup.lower()
    policy = _csp(page)
    assert policy["default-src"] == ["'none'"] and "connect-src" not in policy


def test_plotly_js_is_inlined_exactly_once_for_two_figures(executed: tuple[Path, Path, str]) -> None:
    _, _, page = executed
    assert page.count(PLOTLY_BANNER) == 1
    assert page.count('class="tokdiag-figure"') == 2


def test_every_inline_script_is_allowed_by_hash_and_nothing_else(executed: tuple[Path, Path, str]) -> None:
    _, _, page = executed
    scripts = re.findall(r"<script>(.*?)</script>", page, flags=re.S)
    assert len(scripts) == 2  # plotly.js and the drawing script; figure specs are inert JSON
    allowed = _csp(page)["script-src"]
    expected = ["'sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() + "'" for s in scripts]
    assert sorted(allowed) == sorted(expected)
    others = re.findall(r"<script\b([^>]+)>", page)
    assert len(others) == 2 and all('type="application/json"' in attrs for attrs in others)


def test_no_absolute_paths_of_the_machine(executed: tuple[Path, Path, str]) -> None:
    run_dir, _, page = executed
    notebook_text = (run_dir / "simple_plot.ipynb").read_text(encoding="utf-8")
    scrubbed = json.dumps(scrub_notebook(nbformat.reads(notebook_text, as_version=4), base_dir=run_dir))
    for path in _machine_paths(run_dir, run_dir.parent):
        assert path not in page, f"{path!r} leaked into the HTML"
        assert path not in scrubbed, f"{path!r} left in the scrubbed notebook"
    assert "working folder: .\n" in page  # the kernel's cwd, printed by the notebook, became relative
    # module paths, the interpreter and tracebacks through tokdiag and the standard library
    assert "package: tokdiag/__init__.py" in page and "python: $PYTHON/bin/python" in page
    assert "tokdiag/recording/journal.py" in page and "$PYTHON/lib/python3" in page and "JSONDecodeError" in page


def test_canary_strings_stay_text(executed: tuple[Path, Path, str]) -> None:
    _, _, page = executed
    assert "<script>window.__canary" not in page
    assert not re.search(r"<img[^>]*onerror", page, flags=re.I)
    escaped = "&lt;script&gt;window.__canary=1&lt;/script&gt;&lt;img src=x onerror="
    # DataFrame cells, the printed string, its repr and the unescaped Styler table all show as text
    assert page.count(escaped) >= 4


def test_renderer_emits_the_plotly_mime_type_and_a_text_line() -> None:
    import plotly.io as pio

    plotly_renderer_setup()
    assert pio.renderers.default == "tokdiag"
    fig = go.Figure(go.Bar(x=["a"], y=[1])).update_layout(title="Owners")
    bundle = pio.renderers["tokdiag"].to_mimebundle(fig.to_dict())
    assert set(bundle) == {PLOTLY_MIME, "text/plain"}
    assert bundle["text/plain"] == "<plotly figure: Owners>"


def _figure_output(fig: go.Figure) -> nbformat.NotebookNode:
    import plotly.io as pio

    plotly_renderer_setup()
    return nbformat.v4.new_output("display_data", data=pio.renderers["tokdiag"].to_mimebundle(fig.to_dict()))


def test_export_without_a_kernel_handles_foreign_plotly_outputs(tmp_path: Path) -> None:
    spec_with_script_end = go.Figure(go.Scatter(x=[1], y=[1], name="</script><script>window.__canary=3</script>"))
    bundle_only = nbformat.v4.new_output("display_data", data={
        "text/html": "<script>/**\n* plotly.js v9.9.9\n*/ window.PlotlyConfig = {};</script>"})
    cdn_figure = nbformat.v4.new_output("display_data", data={
        "text/html": '<div id="x"></div><script>require(["plotly"], function(P){P.newPlot("x", [])});'
                     "window.Plotly.newPlot('x', [])</script>"})
    widget = nbformat.v4.new_output("display_data", data={
        "application/vnd.jupyter.widget-view+json": {"model_id": "abc"}, "text/plain": "  0%|  | 0/5"})
    js = nbformat.v4.new_output("display_data", data={"application/javascript": "window.__canary=4"})
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "...", outputs=[bundle_only, _figure_output(spec_with_script_end), cdn_figure, widget, js])])
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    page = export_html(nb, tmp_path / "page.html", title="foreign outputs").read_text(encoding="utf-8")
    assert page.count(PLOTLY_BANNER) == 1 and "9.9.9" not in page
    assert "</script><script>window.__canary=3" not in page
    assert "cannot be exported offline" in page and "newPlot('x'" not in page
    assert "0/5" in page and "unpkg" not in page and "window.__canary=4" not in page
    assert "<title>foreign outputs</title>" in page


def test_a_page_without_figures_carries_no_plotly(tmp_path: Path) -> None:
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# nothing to draw")])
    page = export_html(nb, tmp_path / "plain.html").read_text(encoding="utf-8")
    assert PLOTLY_BANNER not in page and _csp(page)["script-src"] == ["'none'"]


def test_missing_notebook_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        export_html(tmp_path / "nope.ipynb", tmp_path / "x.html")


def test_report_from_journals_rejects_missing_journal(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"journal .*missing\.jsonl.* does not exist"):
        report_from_journals([tmp_path / "missing.jsonl"], tmp_path / "out")
    with pytest.raises(ConfigError, match="no journal given"):
        report_from_journals([], tmp_path / "out")


def test_report_from_journals_runs_the_bundled_notebook(tmp_path: Path) -> None:
    import tokdiag as td

    journal = tmp_path / "runs" / "service.jsonl"
    td.track(lambda i: None, steps=3, census=False, progress=False, journal=str(journal))
    page = report_from_journals([journal], tmp_path / "report")
    text = page.read_text(encoding="utf-8")
    assert page.name == "journal_report.html" and "service.jsonl" in text
    assert "rss" in text  # the verdict table was displayed
    # growers, verdict table, RSS, ledger and start-up; nothing was watched, so no counts, caches or chains
    assert text.count('class="tokdiag-figure"') == 5
    assert "No leak shown in 3 steps" in text  # the answer, in words (3 steps are too few to be an all-clear)
    assert "no watched classes or caches" in text
    summary = json.loads((page.parent / "summary.json").read_text())
    assert summary["headlines"][0]["subject"] == "RSS"
    assert str(tmp_path) not in text and "../runs/service.jsonl" in text


def test_a_markdown_image_from_the_network_is_refused_with_the_fix(tmp_path: Path) -> None:
    from tokdiag.errors import TokdiagError

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell('<img src="https://example.org/a.png">')])
    with pytest.raises(TokdiagError, match="from the network .*embed it as a cell attachment"):
        export_html(nb, tmp_path / "page.html")
    assert not (tmp_path / "page.html").exists()


def test_a_progress_bar_is_exported_in_its_last_state_not_one_line_per_refresh(tmp_path: Path) -> None:
    refreshes = [nbformat.v4.new_output("stream", name="stderr", text=f"\rtask: {p:3d}%|bar| {p}/100")
                 for p in (0, 25, 50, 75, 100)]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("...", outputs=[
        *refreshes, nbformat.v4.new_output("stream", name="stderr", text="\n"),
        nbformat.v4.new_output("stream", name="stdout", text="done\n")])])
    page = export_html(nb, tmp_path / "page.html", title="progress").read_text(encoding="utf-8")
    assert "100/100" in page and "50/100" not in page and "0/100" not in page.replace("100/100", "")
    assert "done" in page


def test_a_finished_progress_bar_is_not_shown_as_an_error_but_a_warning_still_is(tmp_path: Path) -> None:
    bar = "\rrun: 100%|##########| 300/300 [00:04<00:00, 70.1it/s, rss=120 MiB]\n"
    warning = "UserWarning: no class matches 'Jbo'\n"
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("a", outputs=[nbformat.v4.new_output("stream", name="stderr", text=bar)]),
        nbformat.v4.new_code_cell("b", outputs=[nbformat.v4.new_output("stream", name="stderr", text=bar + warning)]),
    ])
    page = export_html(nb, tmp_path / "page.html", title="progress").read_text(encoding="utf-8")
    assert page.count('data-mime-type="application/vnd.jupyter.stderr"') == 1  # only the warning keeps the stderr box
    assert "no class matches" in page and page.count("300/300") == 2


def test_report_and_export_never_overwrite_a_page_tokdiag_did_not_write(tmp_path: Path) -> None:
    import tokdiag as td

    journal = tmp_path / "j.jsonl"
    td.track(lambda i: None, steps=2, journal=journal, census=False, progress=False)
    out = tmp_path / "out"
    out.mkdir()
    (out / "journal_report.html").write_text("<p>my page</p>")
    with pytest.raises(ConfigError, match=r"journal_report.html' is a file tokdiag did not write"):
        report_from_journals([journal], out)
    assert sorted(p.name for p in out.iterdir()) == ["journal_report.html"]  # no kernel ran
    mine = tmp_path / "mine.html"
    mine.write_text("<p>mine</p>")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("hello")])
    with pytest.raises(ConfigError, match="tokdiag will not overwrite it"):
        export_html(nb, mine)
    assert mine.read_text() == "<p>mine</p>"
    page = export_html(nb, tmp_path / "ours.html")
    export_html(nb, page)  # its own page: replaced


def _code_page(tmp_path: Path, **options: bool) -> Any:
    """A page of two code cells (one printing, one silent) and a markdown cell, parsed with BeautifulSoup."""
    from bs4 import BeautifulSoup

    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# Answer first"),
        nbformat.v4.new_code_cell("SECRET_SOURCE = 1\nprint('answer: leak')",
                                  outputs=[nbformat.v4.new_output("stream", name="stdout", text="answer: leak\n")]),
        nbformat.v4.new_code_cell("import os  # silent"),
    ])
    page = export_html(nb, tmp_path / "page.html", title="code", **options).read_text(encoding="utf-8")
    return BeautifulSoup(page, "html.parser")


def test_code_is_hidden_by_default_behind_a_show_code_toggle_that_needs_no_script(tmp_path: Path) -> None:
    soup = _code_page(tmp_path)
    toggle = soup.find("input", id="tokdiag-show-code")
    assert toggle is not None and toggle.get("type") == "checkbox" and not toggle.has_attr("checked")
    label = soup.find("label", attrs={"for": "tokdiag-show-code"})
    assert label is not None and label.get_text(strip=True) == "show code"
    # the CSS that hides the code reaches the cells: they follow the checkbox as siblings (~ selector)
    cells = toggle.find_next_siblings("div", class_="jp-CodeCell")
    assert len(cells) == 2 and "SECRET_SOURCE" in cells[0].get_text()
    css = "".join(style.get_text() for style in soup.find_all("style"))
    assert re.search(r"#tokdiag-show-code:not\(:checked\)\s*~\s*\.jp-CodeCell\s+\.jp-Cell-inputWrapper", css)
    assert not any(attr.startswith("on") for tag in soup.find_all(True) for attr in tag.attrs)  # no inline handler


def test_with_code_exports_the_code_shown(tmp_path: Path) -> None:
    toggle = _code_page(tmp_path, with_code=True).find("input", id="tokdiag-show-code")
    assert toggle is not None and toggle.has_attr("checked")


def test_progress_lines_mixed_with_a_warning_leave_the_stderr_box_to_the_warning(tmp_path: Path) -> None:
    from bs4 import BeautifulSoup

    bar = "\rload: 100%|##########| 3/3 [00:01<00:00, 2.9it/s]\n"
    warning = "TokdiagWarning: no class matches 'Jobb'; did you mean Job?\n"
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("a", outputs=[
        nbformat.v4.new_output("stream", name="stderr", text=bar + warning + bar)])])
    soup = BeautifulSoup(export_html(nb, tmp_path / "page.html").read_text(encoding="utf-8"), "html.parser")
    boxes = soup.find_all(attrs={"data-mime-type": "application/vnd.jupyter.stderr"})
    assert len(boxes) == 1 and "did you mean Job?" in boxes[0].get_text()
    assert "3/3" not in boxes[0].get_text()
    assert soup.get_text().count("3/3 [00:01") == 2  # the bars are still shown, as plain output
