"""Self-contained, offline HTML from executed notebooks, and reports from journals alone.

What an export promises (tests check each):

* **Charts draw offline.** Figures are stored in the notebook as plotly's JSON
  mime type (``application/vnd.plotly.v1+json``, what JupyterLab renders
  natively; see :func:`plotly_renderer_setup`). nbconvert cannot render that
  mime type (plotly >= 6 figures come out blank), so :func:`export_html`
  turns each one into a ``<div>`` holding the figure as inert JSON, and the
  page carries *one* inline copy of plotly.js plus a short script that draws
  every such div. No CDN, no require.js, no MathJax, no widget manager.
* **Nothing on the page can load or run anything else.** A
  Content-Security-Policy ``<meta>`` allows exactly the two inline scripts
  tokdiag wrote (by SHA-256 hash) and no network fetch at all. HTML outputs
  are also sanitized with bleach (tables and text survive; ``<script>``,
  ``onerror=`` and the like are escaped so they show as text), and
  JavaScript and widget outputs are dropped.
* **No absolute paths of the machine.** Paths under the report's folder, the
  current folder and the tokdiag checkout become relative; the Python prefix,
  the home folder and the temp folder become ``$PYTHON``, ``~`` and
  ``$TMPDIR`` (see :func:`scrub_notebook`), in cell sources, outputs and
  metadata (papermill records input/output paths).

This module sits at the top of the stack: it may import any part of tokdiag,
and nothing in tokdiag imports it except the command line.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import html
import json
import os
import re
import sys
import tempfile
from collections.abc import Iterable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from tokdiag.errors import ConfigError, TokdiagError

PLOTLY_MIME = "application/vnd.plotly.v1+json"
"""The mime type plotly figures are stored under in a notebook."""

GENERATOR = "tokdiag"
"""How tokdiag marks the files it writes: ``<meta name="generator">`` in pages, ``"generator"`` in
``index.json`` (``"tokdiag_summary"`` in ``summary.json``), ``metadata.tokdiag.generator`` in the journal
report's executed notebook. A file without the mark is never overwritten (:func:`refuse_foreign`)."""

_PAGE_MARK = f'<meta name="generator" content="{GENERATOR}">'
_PAGE_MARK_FOUND = re.compile(  # in either attribute order (nbconvert's post-processing sorts them)
    rf"""<meta\b(?=[^>]*\bname=["']generator["'])(?=[^>]*\bcontent=["']{GENERATOR}["'])[^>]*>""", re.I)


RENDERER_NAME = "tokdiag"
"""The plotly renderer :func:`plotly_renderer_setup` registers and makes the default."""

_WIDGET_MIMES = ("application/vnd.jupyter.widget-view+json", "application/vnd.jupyter.widget-state+json")
_SAFE_MIMES = ("text/plain", "text/latex", "image/png", "image/jpeg", "image/svg+xml", "application/json")
_SANITIZED_MIMES = ("text/html", "text/markdown")
_BINARY_MIMES = ("image/png", "image/jpeg", "image/gif")
_PLOTLY_BUNDLE_MARKERS = ("* plotly.js v", "window.PlotlyConfig")

# ---------------------------------------------------------------------------
# kernel side: how notebooks display figures


def plotly_renderer_setup() -> None:
    """Make plotly figures display in JupyterLab *and* export offline; call in a notebook's first cell.

    Registers and selects a renderer that emits the figure as plotly's JSON
    mime type (JupyterLab and VS Code draw it natively) plus a ``text/plain``
    line naming the figure, shown by viewers that cannot draw it. It emits no
    HTML and no script: :func:`export_html` draws the JSON with one inline
    plotly.js per page. Calling it again is harmless.

    >>> plotly_renderer_setup()
    >>> import plotly.io as pio; pio.renderers.default
    'tokdiag'
    """
    import plotly.io as pio
    from plotly.io._base_renderers import PlotlyRenderer

    class _TokdiagRenderer(PlotlyRenderer):  # type: ignore[misc]
        """Plotly's mime-type renderer plus a plain-text fallback line."""

        def to_mimebundle(self, fig_dict: dict[str, Any]) -> dict[str, Any]:
            bundle: dict[str, Any] = super().to_mimebundle(fig_dict)
            bundle["text/plain"] = _figure_caption(bundle.get(PLOTLY_MIME, {}))
            return bundle

    pio.renderers[RENDERER_NAME] = _TokdiagRenderer(config={"displaylogo": False})
    pio.renderers.default = RENDERER_NAME


def _figure_caption(spec: Mapping[str, Any]) -> str:
    layout = spec.get("layout") or {}
    title = layout.get("title")
    if isinstance(title, Mapping):
        title = title.get("text")
    return f"<plotly figure: {title}>" if title else "<plotly figure>"


# ---------------------------------------------------------------------------
# scrubbing absolute paths


def _path_variants(path: str | os.PathLike[str]) -> list[str]:
    text = os.fspath(path).rstrip("/")
    variants = {text, os.path.realpath(text).rstrip("/")} if text else set()
    return [v for v in variants if len(v) > 1]


_Rule = tuple[str, re.Pattern[str], str]


def _replacements(base_dir: Path | None, extra: Iterable[tuple[str | os.PathLike[str], str]]) -> list[_Rule]:
    """(prefix, pattern, replacement) rules, longest prefix first; "" means "make relative"."""
    from tokdiag.report.kernel import _source_root

    pairs: list[tuple[str, str]] = []
    for path, token in extra:
        pairs += [(v, token) for v in _path_variants(path)]
    if base_dir is not None:
        pairs += [(v, "") for v in _path_variants(base_dir)]
    pairs += [(v, "") for v in _path_variants(os.getcwd())]
    root = _source_root()
    if root is not None:
        pairs += [(v, "") for v in _path_variants(root)]
    for prefix in {sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix}:
        pairs += [(v, "$PYTHON") for v in _path_variants(prefix)]
    pairs += [(v, "$TMPDIR") for v in _path_variants(tempfile.gettempdir())]
    pairs += [(v, "~") for v in _path_variants(Path.home())]
    seen: dict[str, str] = {}
    for prefix, token in pairs:  # the first claim of a prefix wins
        seen.setdefault(prefix, token)
    rules: list[_Rule] = []
    for prefix in sorted(seen, key=len, reverse=True):
        token = seen[prefix]
        esc = re.escape(prefix)
        if token:
            rules.append((prefix, re.compile(esc + r"(?![\w.-])"), token))
        else:  # relative: "<prefix>/x" -> "x", "<prefix>" alone -> "."
            rules.append((prefix, re.compile(esc + r"/"), ""))
            rules.append((prefix, re.compile(esc + r"(?![\w.-])"), "."))
    return rules


def _scrub_value(value: Any, rules: list[_Rule], key: str = "") -> Any:
    if isinstance(value, str):
        if key in _BINARY_MIMES:
            return value
        for prefix, pattern, token in rules:
            if prefix in value:
                value = pattern.sub(token, value)
        return value
    if isinstance(value, list):
        return [_scrub_value(v, rules, key) for v in value]
    if isinstance(value, dict):
        return type(value)((k, _scrub_value(v, rules, k)) for k, v in value.items())
    return value


def scrub_notebook(nb: Any, *, base_dir: str | os.PathLike[str] | None = None,
                   extra_paths: Iterable[tuple[str | os.PathLike[str], str]] = ()) -> Any:
    """A copy of ``nb`` fit to share: no absolute paths of this machine, no widget state.

    Paths under ``base_dir`` (the folder the shared file will sit in), the
    current folder and the tokdiag source checkout become relative; the Python
    prefix, the temp folder and the home folder become ``$PYTHON``,
    ``$TMPDIR`` and ``~``. ``extra_paths`` adds ``(path, replacement)`` pairs.
    Applies to cell sources, every output and all metadata. Widget state
    (which would make nbconvert load a widget manager from a CDN) is removed;
    widget outputs keep their text fallback.
    """
    import nbformat

    rules = _replacements(Path(base_dir).resolve() if base_dir is not None else None, extra_paths)
    out = nbformat.from_dict(_scrub_value(copy.deepcopy(dict(nb)), rules))
    out.metadata.pop("widgets", None)
    for cell in out.cells:
        for output in cell.get("outputs", []):
            data = output.get("data")
            if data:
                for mime in _WIDGET_MIMES:
                    data.pop(mime, None)
    return out


# ---------------------------------------------------------------------------
# sanitizing and converting outputs


_ALLOWED_TAGS = frozenset({
    "a", "abbr", "b", "blockquote", "br", "caption", "code", "col", "colgroup", "dd", "del", "div", "dl", "dt",
    "em", "h1", "h2", "h3", "h4", "h5", "h6", "hr", "i", "kbd", "li", "ol", "p", "pre", "q", "s", "samp",
    "small", "span", "strong", "style", "sub", "sup", "table", "tbody", "td", "tfoot", "th", "thead", "tr",
    "u", "ul", "var",
})
_ALLOWED_ATTRIBUTES = {
    "*": ["class", "id", "title", "style", "align", "valign", "lang", "dir"],
    "a": ["href", "title", "name"],
    "table": ["class", "id", "style", "border", "cellpadding", "cellspacing", "summary"],
    "td": ["class", "id", "style", "colspan", "rowspan", "align", "valign", "title"],
    "th": ["class", "id", "style", "colspan", "rowspan", "align", "valign", "title", "scope"],
    "col": ["span", "style", "class"],
    "colgroup": ["span", "style", "class"],
    "style": ["type", "scoped"],
}


def sanitize_html(fragment: str) -> str:
    """``fragment`` with every tag or attribute that could run code or load something escaped.

    Tables, text formatting, classes and inline styles survive (pandas
    DataFrames and Stylers render as tables); ``<script>``, ``<img
    onerror=...>``, iframes, forms and ``javascript:`` links are escaped and
    show as text.

    >>> sanitize_html('<b>ok</b><script>alert(1)</script>')
    '<b>ok</b>&lt;script&gt;alert(1)&lt;/script&gt;'
    """
    import bleach
    from bleach.css_sanitizer import ALLOWED_CSS_PROPERTIES, CSSSanitizer

    return str(bleach.clean(fragment, tags=_ALLOWED_TAGS, attributes=_ALLOWED_ATTRIBUTES,
                            protocols={"http", "https", "mailto"}, strip=False, strip_comments=True,
                            css_sanitizer=CSSSanitizer(allowed_css_properties=ALLOWED_CSS_PROPERTIES)))


def _json_for_script(value: Any) -> str:
    """JSON that is inert inside ``<script type="application/json">`` (no ``</script>`` possible)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def _figure_html(spec: Mapping[str, Any], index: int) -> str:
    layout = spec.get("layout") or {}
    height = layout.get("height") if isinstance(layout.get("height"), (int, float)) else 450
    caption = html.escape(_figure_caption(spec))
    return (f'<div class="tokdiag-figure" id="tokdiag-figure-{index}">'
            f'<script type="application/json" class="tokdiag-figure-spec">{_json_for_script(dict(spec))}</script>'
            f'<div class="tokdiag-plot plotly-graph-div" style="width:100%;height:{int(height)}px" '
            f'role="img" aria-label="{caption}"></div></div>')


_UNEXPORTABLE_PLOT = ('<p class="tokdiag-note">This plotly figure was displayed with a renderer that needs '
                      'a network connection and cannot be exported offline. Call '
                      '<code>tokdiag.report.export.plotly_renderer_setup()</code> in the notebook\'s first cell.</p>')


def _terminal_text(text: str) -> str:
    """Stream text as a terminal shows it: each carriage return overwrites its line (progress bars)."""
    return "\n".join(line.rsplit("\r", 1)[-1] for line in text.split("\n"))


def _merge_streams(outputs: list[Any]) -> list[Any]:
    """Consecutive outputs of one stream joined, as Jupyter shows them, and carriage returns applied.

    A tqdm bar arrives as one stream output per refresh; exported as is, it is a
    dozen lines in the stderr box. Joined and overwritten, it is its last state.
    """
    merged: list[Any] = []
    for output in outputs:
        if (output.get("output_type") == "stream" and merged and merged[-1].get("output_type") == "stream"
                and merged[-1].get("name") == output.get("name")):
            merged[-1]["text"] = merged[-1]["text"] + output["text"]
        else:
            merged.append(output)
    for output in merged:
        if output.get("output_type") == "stream" and "\r" in output.get("text", ""):
            output["text"] = _terminal_text(output["text"])
        if output.get("output_type") == "stream" and output.get("name") == "stderr" and _only_progress(output["text"]):
            output["name"] = "stdout"  # a finished progress bar is not an error: not in the red stderr box
    return merged


_PROGRESS_LINE = re.compile(r"^.*\d+%\|.*\|.*\[.*(it/s|s/it|\?it/s).*\]\s*$")
"""A tqdm bar as it ends: ``label: 100%|█████| 300/300 [00:04<00:00, 70.1it/s, rss=120 MiB]``."""


def _only_progress(text: str) -> bool:
    lines = [line for line in text.split("\n") if line.strip()]
    return bool(lines) and all(_PROGRESS_LINE.match(line) for line in lines)


def _prepare_outputs(nb: Any) -> int:
    """Turn plotly outputs into figure divs, sanitize HTML, drop scripts; return the number of figures."""
    figures = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        kept = []
        for output in _merge_streams(list(cell.get("outputs", []))):
            data = output.get("data")
            if data is None:  # stream / error: nbconvert escapes these itself
                kept.append(output)
                continue
            if PLOTLY_MIME in data:
                spec = data[PLOTLY_MIME]
                output["data"] = {"text/html": _figure_html(spec, figures),
                                  "text/plain": _figure_caption(spec)}
                output.setdefault("metadata", {})["tokdiag_figure"] = True
                figures += 1
                kept.append(output)
                continue
            page = data.get("text/html", "")
            if isinstance(page, list):
                page = "".join(page)
            if any(marker in page for marker in _PLOTLY_BUNDLE_MARKERS) and "Plotly.newPlot" not in page:
                continue  # plotly's init_notebook_mode bundle: tokdiag includes plotly.js itself
            if "Plotly.newPlot" in page or "require([\"plotly\"]" in page:
                output["data"] = {"text/html": _UNEXPORTABLE_PLOT}
                kept.append(output)
                continue
            clean: dict[str, Any] = {}
            for mime, value in data.items():
                if mime in _SANITIZED_MIMES:
                    text = "".join(value) if isinstance(value, list) else str(value)
                    clean[mime] = sanitize_html(text)
                elif mime in _SAFE_MIMES:
                    clean[mime] = value
            if clean:
                output["data"] = clean
                kept.append(output)
        cell["outputs"] = kept
    return figures


# ---------------------------------------------------------------------------
# the page


_BOOTSTRAP_JS = """(function () {
  "use strict";
  function draw() {
    var figures = document.querySelectorAll("div.tokdiag-figure");
    for (var i = 0; i < figures.length; i++) {
      var figure = figures[i];
      var target = figure.querySelector("div.tokdiag-plot");
      try {
        var spec = JSON.parse(figure.querySelector("script.tokdiag-figure-spec").textContent);
        var config = Object.assign({responsive: true, displaylogo: false}, spec.config || {});
        window.Plotly.newPlot(target, spec.data || [], spec.layout || {}, config);
      } catch (err) {
        target.textContent = "This chart could not be drawn: " + err;
        console.error("tokdiag: chart " + i + " could not be drawn", err);
      }
    }
  }
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", draw);
  } else {
    draw();
  }
})();"""

_EXTRA_CSS = """
.tokdiag-header { padding: 12px 16px 4px; border-bottom: 1px solid #e3e6eb; margin-bottom: 8px; }
.tokdiag-header h1 { font: 600 20px/1.3 system-ui, sans-serif; margin: 0; color: #1d2430; }
.tokdiag-sub { font: 13px system-ui, sans-serif; color: #5b6474; margin: 2px 0 6px; }
.tokdiag-figure { width: 100%; margin: 0.5em 0; }
.tokdiag-note { color: #8a5300; background: #fff4e0; padding: 0.5em 0.8em; border-radius: 4px; }
"""

_TEMPLATE = r"""{%- extends 'index.html.j2' -%}
{%- block html_head -%}
{{ resources.tokdiag.csp_meta }}
{{ super() }}
<style type="text/css">{{ resources.tokdiag.css }}</style>
{%- endblock html_head -%}
{%- block body_header -%}
{{ super() }}
<header class="tokdiag-header"><h1>{{ resources.metadata.name | e }}</h1>
<div class="tokdiag-sub">{{ resources.tokdiag.subtitle | e }}</div></header>
{%- endblock body_header -%}
{%- block html_head_js -%}{%- endblock html_head_js -%}
{%- block jupyter_widgets -%}{%- endblock jupyter_widgets -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block footer_js -%}
{%- for script in resources.tokdiag.scripts %}
<script>{{ script }}</script>
{%- endfor %}
{%- endblock footer_js -%}
"""


@lru_cache(maxsize=1)
def _plotly_js() -> str:
    from plotly.offline import get_plotlyjs

    return str(get_plotlyjs())


def _script_hash(script: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii") + "'"


def content_security_policy(scripts: Iterable[str] = ()) -> str:
    """The CSP of every tokdiag page: only the given inline scripts run, nothing is fetched."""
    sources = " ".join(_script_hash(s) for s in scripts) or "'none'"
    return ("default-src 'none'; "
            f"script-src {sources}; "
            "style-src 'unsafe-inline'; img-src data: blob:; font-src data:; "
            "base-uri 'none'; form-action 'none'")


def csp_meta(scripts: Iterable[str] = ()) -> str:
    """``<meta http-equiv="Content-Security-Policy" ...>`` for :func:`content_security_policy`, and tokdiag's mark."""
    return (f'<meta http-equiv="Content-Security-Policy" content="{html.escape(content_security_policy(scripts))}">'
            f"\n{_PAGE_MARK}")


def written_by_tokdiag(path: str | os.PathLike[str]) -> bool:
    """Whether the file at ``path`` carries tokdiag's mark (see :data:`GENERATOR`): a page, index or notebook it wrote."""
    p = Path(path)
    try:
        if p.suffix in (".html", ".htm"):
            with open(p, encoding="utf-8", errors="replace") as fh:
                return _PAGE_MARK_FOUND.search(fh.read(65536)) is not None
        if p.suffix in (".json", ".ipynb"):
            data = json.loads(p.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                return False
            if p.suffix == ".json":  # index.json, or a summary.json (tokdiag.report.summary marks it its own way)
                return data.get("generator") == GENERATOR or "tokdiag_summary" in data
            meta = data.get("metadata", {}).get("tokdiag", {})
            return isinstance(meta, dict) and meta.get("generator") == GENERATOR
    except (OSError, ValueError, AttributeError):
        return False
    return False


def refuse_foreign(paths: Iterable[str | os.PathLike[str]], *, fix: str) -> None:
    """Raise :class:`ConfigError` if any of ``paths`` exists and tokdiag did not write it (so it is not overwritten)."""
    for path in paths:
        p = Path(path)
        if p.exists() and (p.is_dir() or not written_by_tokdiag(p)):
            what = "a folder" if p.is_dir() else "a file tokdiag did not write"
            raise ConfigError(f"{str(p)!r} is {what}; tokdiag will not overwrite it: move it, or {fix}")


def _load_notebook(source: Any) -> tuple[Any, str]:
    import nbformat

    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.is_file():
            raise ConfigError(f"executed notebook {str(path)!r} does not exist; give the path of an .ipynb file")
        try:
            return nbformat.read(path, as_version=4), path.stem
        except Exception as exc:
            raise ConfigError(f"{str(path)!r} is not a readable notebook ({type(exc).__name__}: {exc})") from None
    if isinstance(source, Mapping) and "cells" in source:
        return nbformat.from_dict(copy.deepcopy(dict(source))), "notebook"
    raise ConfigError(f"export_html needs a notebook path or NotebookNode, not {type(source).__name__}")


def export_html(notebook: Any, out_html: str | os.PathLike[str], *, title: str | None = None,
                subtitle: str = "") -> Path:
    """Write ``notebook`` (an executed ``.ipynb`` path or a NotebookNode) as self-contained HTML.

    The page opens offline: plotly.js is inlined once (only if there is a
    figure), no script or stylesheet is loaded from anywhere, HTML outputs
    are sanitized, and absolute paths are scrubbed relative to the folder of
    ``out_html``. An existing ``out_html`` that tokdiag did not write is a
    :class:`ConfigError`, never overwritten. ``title`` defaults to the notebook's ``metadata.title`` or
    file name; both it and ``subtitle`` (e.g. the parameters) head the page,
    escaped. Returns the path written.
    """
    from jinja2 import DictLoader
    from nbconvert import HTMLExporter

    nb, name = _load_notebook(notebook)
    out = Path(out_html)
    refuse_foreign([out], fix="pass another out_html")
    out.parent.mkdir(parents=True, exist_ok=True)
    nb = scrub_notebook(nb, base_dir=out.parent)
    figures = _prepare_outputs(nb)
    page_title = title or str(nb.metadata.get("title") or name)
    nb.metadata.pop("title", None)
    scripts = [_plotly_js(), _BOOTSTRAP_JS] if figures else []
    exporter = HTMLExporter(template_name="lab", template_file="tokdiag_report.html.j2",
                            extra_loaders=[DictLoader({"tokdiag_report.html.j2": _TEMPLATE})])
    resources = {"metadata": {"name": page_title},
                 "tokdiag": {"csp_meta": csp_meta(scripts), "css": _EXTRA_CSS, "scripts": scripts,
                             "subtitle": subtitle or "tokdiag report · opens offline"}}
    body, _ = exporter.from_notebook_node(nb, resources=resources)
    _check_page(body, figures)
    out.write_text(body, encoding="utf-8")
    return out


_EXTERNAL = re.compile(r"""<(?:script|link|img|iframe)\b[^>]*\b(?:src|href)\s*=\s*["']?(?:https?:)?//""", re.I)


def _check_page(page: str, figures: int) -> None:
    """Refuse to write a page that would reach the network or carry plotly.js more than once."""
    found = _EXTERNAL.search(page)
    if found:
        raise TokdiagError(f"the exported page would load {found.group(0)!r} from the network (an image or "
                           "link in a markdown cell?); embed it as a cell attachment or data: URL, or remove it")
    copies = page.count(_PLOTLY_BUNDLE_MARKERS[0])
    if copies != (1 if figures else 0):
        raise TokdiagError(f"internal error: the exported page carries plotly.js {copies} times "
                           f"for {figures} figures; please report this with the notebook")


# ---------------------------------------------------------------------------
# reports from journals alone

JOURNAL_REPORT_NOTEBOOK = Path(__file__).parent / "notebooks" / "journal_report.ipynb"
"""The bundled notebook ``tokdiag report`` runs; its parameters are ``journals`` and ``output_dir``."""


def check_journals(journals: Iterable[str | os.PathLike[str]]) -> None:
    """A :class:`ConfigError` naming, as given, the first journal that is missing or is not a tokdiag journal.

    Reads each one here, before a kernel starts.
    """
    from tokdiag.errors import JournalError
    from tokdiag.recording.journal import read_journal

    for journal in journals:
        if not Path(journal).is_file():
            raise ConfigError(f"journal {str(journal)!r} does not exist; give the path of a .jsonl journal "
                              "written by td.track(..., journal=...) or a tokdiag recorder")
        try:
            read_journal(journal)
        except JournalError as exc:
            raise ConfigError(f"{str(journal)!r} is not a tokdiag journal ({exc}); give a .jsonl file written by "
                              "td.track(..., journal=...)") from None


def run_report_notebook(notebook: Path, journals: Iterable[str | os.PathLike[str]], out_dir: str | os.PathLike[str],
                        *, title: str, parameters: Mapping[str, Any] | None = None) -> Path:
    """Run a bundled report ``notebook`` on ``journals`` into ``out_dir``; return the HTML path.

    The kernel runs in ``out_dir`` with the parameters ``journals`` (paths
    relative to it), ``output_dir`` (``"."``) and ``parameters``; writes
    ``NAME.ipynb``, ``NAME.html`` (``title`` on top) and ``summary.json``.
    Raises :class:`ConfigError` when one of those exists and tokdiag did not
    write it (nothing is overwritten), and :class:`TokdiagError` (naming the
    cell and exception; the HTML is still written) when the notebook fails.
    """
    from tokdiag.report.kernel import check_parameters, execute
    from tokdiag.report.summary import SUMMARY_FILE

    folder = Path(out_dir).resolve()
    executed = folder / notebook.name
    page = executed.with_suffix(".html")
    refuse_foreign([executed, page, folder / SUMMARY_FILE], fix="choose another output folder (-o)")
    folder.mkdir(parents=True, exist_ok=True)
    values = {"journals": [os.path.relpath(Path(j).resolve(), folder) for j in journals], "output_dir": ".",
              **(parameters or {})}
    check_parameters(notebook, values)
    result = execute(notebook, executed, values, cwd=folder)
    if executed.is_file():
        import nbformat

        scrubbed = scrub_notebook(nbformat.read(executed, as_version=4), base_dir=folder)
        scrubbed.metadata["tokdiag"] = {"generator": GENERATOR}
        nbformat.write(scrubbed, executed)
        export_html(executed, page, title=title)
    if result.failure is not None:
        what = notebook.stem.replace("_", " ")
        what = what if what.endswith("report") else f"{what} report"
        raise TokdiagError(f"the {what} failed at {result.failure.describe()}; "
                           f"see {page if page.is_file() else executed} for the traceback")
    return page


def report_from_journals(paths: Iterable[str | os.PathLike[str]], out_dir: str | os.PathLike[str], *,
                         limit: int | float | str | None = None) -> Path:
    """Build an HTML report from journal files alone (e.g. written by a service); return the HTML path.

    Runs the bundled :data:`JOURNAL_REPORT_NOTEBOOK` with papermill in a new
    kernel (cwd ``out_dir``, journals passed as paths relative to it), writes
    ``journal_report.ipynb``, ``journal_report.html`` and ``summary.json``
    into ``out_dir`` (see :func:`run_report_notebook`). ``limit``: the memory
    limit a leak's headline counts down to (``"4GiB"``; default: the one
    each journal recorded). Raises :class:`ConfigError` for a missing
    journal or a bad ``limit`` before any kernel starts. The journals of
    one service's processes get :func:`tokdiag.report.service.report_from_service`.
    """
    journals = [Path(p) for p in paths]
    if not journals:
        raise ConfigError("no journal given; pass one or more journal files (.jsonl) written by tokdiag")
    check_journals(journals)
    if limit is not None:
        from tokdiag.analysis.limit import parse_size

        parse_size(limit)
    return run_report_notebook(JOURNAL_REPORT_NOTEBOOK, journals, out_dir, parameters={"limit": limit},
                               title="tokdiag report: " + ", ".join(j.name for j in journals))
