"""Self-contained, offline HTML from executed notebooks.

What an export promises (tests check each):

* **Charts draw offline.** Figures are stored in the notebook as plotly's JSON
  mime type (:data:`PLOTLY_MIME`, what JupyterLab renders natively; see
  :func:`plotly_renderer_setup`). nbconvert cannot render that mime type
  (plotly >= 6 figures come out blank), so :func:`export_html` turns each one
  into a ``<div>`` holding the figure as inert JSON, and the page carries
  *one* inline copy of plotly.js plus a short script that draws every such
  div. No CDN, no require.js, no MathJax, no widget manager.
* **Nothing on the page can load or run anything else.** A
  Content-Security-Policy ``<meta>`` allows exactly the two inline scripts
  tokdiag wrote (by SHA-256 hash) and no network fetch at all
  (:func:`tokdiag.report.pages.content_security_policy`). HTML outputs are
  sanitized (:func:`tokdiag.report.scrub.sanitize_html`: tables and text
  survive; ``<script>``, ``onerror=`` and the like are escaped so they show
  as text), and JavaScript and widget outputs are dropped.
* **The answer first.** Code cells are hidden unless the page's "show code"
  checkbox is ticked (CSS only, no script; ``with_code=True`` ticks it), and
  progress bars on stderr are plain output: the red stderr box is kept for
  what needs a look (warnings, tracebacks).
* **No absolute paths of the machine** (:func:`tokdiag.report.scrub.scrub_notebook`):
  paths under the page's folder, the current folder and the tokdiag checkout
  become relative; the Python prefix, the home folder and the temp folder
  become ``$PYTHON``, ``~`` and ``$TMPDIR``.

The page is nbconvert's ``lab`` template extended by
``templates/report_page.html.j2`` (see :mod:`tokdiag.report.pages`).
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from tokdiag.errors import ConfigError, TokdiagError
from tokdiag.report.folders import GENERATOR, refuse_foreign
from tokdiag.report.pages import (
    content_security_policy,
    environment,
    template_loader,
    template_source,
)
from tokdiag.report.scrub import sanitize_html, scrub_notebook

__all__ = ["PLOTLY_MIME", "RENDERER_NAME", "export_html", "plotly_renderer_setup"]

PLOTLY_MIME = "application/vnd.plotly.v1+json"
"""The mime type plotly figures are stored under in a notebook (and that :mod:`tokdiag.magic` displays)."""

RENDERER_NAME = "tokdiag"
"""The plotly renderer :func:`plotly_renderer_setup` registers and makes the default."""

_SAFE_MIMES = ("text/plain", "text/latex", "image/png", "image/jpeg", "image/svg+xml", "application/json")
_SANITIZED_MIMES = ("text/html", "text/markdown")
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

    class _TokdiagRenderer(PlotlyRenderer):
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
# converting outputs


def _json_for_script(value: Any) -> str:
    """JSON that is inert inside ``<script type="application/json">`` (no ``</script>`` possible)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return (text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
            .replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def _figure_html(spec: Mapping[str, Any], index: int) -> str:
    layout = spec.get("layout") or {}
    height, width = layout.get("height"), layout.get("width")
    return environment().get_template("tokdiag/figure.html.j2").render(
        index=index, spec_json=_json_for_script(dict(spec)), caption=_figure_caption(spec),
        height=int(height) if isinstance(height, (int, float)) else 450,
        width=int(width) if isinstance(width, (int, float)) else None)


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
    split: list[Any] = []
    for output in merged:
        if output.get("output_type") == "stream" and "\r" in output.get("text", ""):
            output["text"] = _terminal_text(output["text"])
        if output.get("output_type") == "stream" and output.get("name") == "stderr":
            split += _split_progress(output)  # a progress bar is not an error: not in the red stderr box
        else:
            split.append(output)
    return split


def _split_progress(output: Any) -> list[Any]:
    """A stderr output cut where its lines change between progress bars and the rest, in order.

    The progress lines become ``stdout`` (plain output); anything else (a
    warning, a traceback) stays ``stderr``, in the box that says "look here".
    """
    parts: list[tuple[str, list[str]]] = []
    for line in output["text"].splitlines(keepends=True):
        name = "stdout" if _PROGRESS_LINE.match(line.rstrip("\n")) else "stderr"
        if not line.strip() and parts:
            name = parts[-1][0]  # a blank line stays with what it follows
        if parts and parts[-1][0] == name:
            parts[-1][1].append(line)
        else:
            parts.append((name, [line]))
    if len(parts) <= 1:
        output["name"] = parts[0][0] if parts else output["name"]
        return [output]
    return [{**output, "name": name, "text": "".join(lines)} for name, lines in parts]


_PROGRESS_LINE = re.compile(r"^.*\d+%\|.*\|.*\[.*(it/s|s/it|\?it/s).*\]\s*$")
"""A tqdm bar as it ends: ``label: 100%|█████| 300/300 [00:04<00:00, 70.1it/s, rss=120 MiB]``."""


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


@lru_cache(maxsize=1)
def _plotly_js() -> str:
    from plotly.offline import get_plotlyjs

    return str(get_plotlyjs())


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
                subtitle: str = "", with_code: bool = False) -> Path:
    """Write ``notebook`` (an executed ``.ipynb`` path or a NotebookNode) as self-contained HTML.

    The page opens offline: plotly.js is inlined once (only if there is a
    figure), no script or stylesheet is loaded from anywhere, HTML outputs
    are sanitized, and absolute paths are scrubbed relative to the folder of
    ``out_html``. An existing ``out_html`` that tokdiag did not write is a
    :class:`ConfigError`, never overwritten. ``title`` defaults to the notebook's ``metadata.title`` or
    file name; both it and ``subtitle`` (e.g. the parameters) head the page,
    escaped. Code cells are hidden (the answer comes first): a "show code"
    checkbox on the page shows them, by CSS alone (no script, so it works
    whatever the page's Content-Security-Policy); ``with_code=True`` exports
    them shown. Returns the path written.
    """
    from nbconvert import HTMLExporter

    nb, name = _load_notebook(notebook)
    out = Path(out_html)
    refuse_foreign([out], fix="pass another out_html")
    out.parent.mkdir(parents=True, exist_ok=True)
    nb = scrub_notebook(nb, base_dir=out.parent)
    figures = _prepare_outputs(nb)
    page_title = title or str(nb.metadata.get("title") or name)
    nb.metadata.pop("title", None)
    scripts = [_plotly_js(), template_source("draw_figures.js")] if figures else []
    exporter = HTMLExporter(template_name="lab", template_file="tokdiag/report_page.html.j2",
                            extra_loaders=[template_loader()])
    resources = {"metadata": {"name": page_title},
                 "tokdiag": {"policy": content_security_policy(scripts), "generator": GENERATOR, "scripts": scripts,
                             "subtitle": subtitle or "tokdiag report · opens offline",
                             "code_cells": sum(1 for c in nb.cells if c.cell_type == "code" and c.source.strip()),
                             "with_code": bool(with_code)}}
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
