"""Make notebooks and pages fit to share: no absolute paths of the machine, no active content.

* **No absolute paths of the machine.** Paths under the shared file's
  folder, the current folder and the tokdiag checkout become relative; the
  Python prefix, the home folder and the temp folder become ``$PYTHON``,
  ``~`` and ``$TMPDIR`` (:func:`path_rules`, applied by :func:`scrub_value`
  to any JSON-like value and by :func:`scrub_notebook` to cell sources,
  outputs and metadata: papermill records input/output paths).
* **HTML outputs are sanitized** with bleach (:func:`sanitize_html`): tables
  and text survive; ``<script>``, ``onerror=`` and the like are escaped so
  they show as text.
"""

from __future__ import annotations

import copy
import os
import re
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tokdiag.report.kernel import source_root

__all__ = ["PathRule", "path_rules", "sanitize_html", "scrub_notebook", "scrub_value"]

_WIDGET_MIMES = ("application/vnd.jupyter.widget-view+json", "application/vnd.jupyter.widget-state+json")
_BINARY_MIMES = ("image/png", "image/jpeg", "image/gif")


# ---------------------------------------------------------------------------
# scrubbing absolute paths


def _path_variants(path: str | os.PathLike[str]) -> list[str]:
    text = os.fspath(path).rstrip("/")
    variants = {text, os.path.realpath(text).rstrip("/")} if text else set()
    return [v for v in variants if len(v) > 1]


PathRule = tuple[str, re.Pattern[str], str]
"""One rule of :func:`path_rules`: (prefix, pattern, replacement)."""


def path_rules(base_dir: Path | None, extra: Iterable[tuple[str | os.PathLike[str], str]]) -> list[PathRule]:
    """(prefix, pattern, replacement) rules, longest prefix first; "" means "make relative".

    ``base_dir`` is the folder the shared file will sit in; ``extra`` adds ``(path, replacement)`` pairs.
    """
    pairs: list[tuple[str, str]] = []
    for path, token in extra:
        pairs += [(v, token) for v in _path_variants(path)]
    if base_dir is not None:
        pairs += [(v, "") for v in _path_variants(base_dir)]
    pairs += [(v, "") for v in _path_variants(os.getcwd())]
    root = source_root()
    if root is not None:
        pairs += [(v, "") for v in _path_variants(root)]
    for prefix in {sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix}:
        pairs += [(v, "$PYTHON") for v in _path_variants(prefix)]
    pairs += [(v, "$TMPDIR") for v in _path_variants(tempfile.gettempdir())]
    pairs += [(v, "~") for v in _path_variants(Path.home())]
    seen: dict[str, str] = {}
    for prefix, token in pairs:  # the first claim of a prefix wins
        seen.setdefault(prefix, token)
    rules: list[PathRule] = []
    for prefix in sorted(seen, key=len, reverse=True):
        token = seen[prefix]
        esc = re.escape(prefix)
        if token:
            rules.append((prefix, re.compile(esc + r"(?![\w.-])"), token))
        else:  # relative: "<prefix>/x" -> "x", "<prefix>" alone -> "."
            rules.append((prefix, re.compile(esc + r"/"), ""))
            rules.append((prefix, re.compile(esc + r"(?![\w.-])"), "."))
    return rules


def scrub_value(value: Any, rules: list[PathRule], key: str = "") -> Any:
    """``value`` (text, or lists and dicts of them) with ``rules`` applied to every text; binary mime data kept.

    >>> rules = path_rules(Path("/srv/out"), [("/data/models", "$MODELS")])
    >>> scrub_value({"cmd": "cat /srv/out/run/journal.jsonl", "w": ["/data/models/a.bin"]}, rules)
    {'cmd': 'cat run/journal.jsonl', 'w': ['$MODELS/a.bin']}
    """
    if isinstance(value, str):
        if key in _BINARY_MIMES:
            return value
        for prefix, pattern, token in rules:
            if prefix in value:
                value = pattern.sub(token, value)
        return value
    if isinstance(value, list):
        return [scrub_value(v, rules, key) for v in value]
    if isinstance(value, dict):
        return type(value)((k, scrub_value(v, rules, k)) for k, v in value.items())
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

    rules = path_rules(Path(base_dir).resolve() if base_dir is not None else None, extra_paths)
    out = nbformat.from_dict(scrub_value(copy.deepcopy(dict(nb)), rules))
    out.metadata.pop("widgets", None)
    for cell in out.cells:
        for output in cell.get("outputs", []):
            data = output.get("data")
            if data:
                for mime in _WIDGET_MIMES:
                    data.pop(mime, None)
    return out


# ---------------------------------------------------------------------------
# sanitizing HTML


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
