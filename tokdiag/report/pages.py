"""What every page tokdiag writes shares: its Content-Security-Policy and the jinja templates.

Pages are rendered from the jinja templates in ``tokdiag/report/templates/``
(shipped as package data), every one named ``tokdiag/<file>`` so that they
never shadow nbconvert's own templates when nbconvert loads them too:

* ``batch_index.html.j2``: a batch's ``index.html`` (:mod:`tokdiag.report.index`);
* ``report_page.html.j2``: an exported notebook, an nbconvert template extending
  its ``lab`` template (:func:`tokdiag.report.export.export_html`);
* ``figure.html.j2``: one plotly figure of an exported notebook, inert JSON in a div;
* ``page_head.html.j2``: the CSP ``<meta>`` and tokdiag's mark, included by both pages;
* ``draw_figures.js``: the one script that draws those figures.

:func:`environment` autoescapes everything (a value is text unless a
template says otherwise).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import jinja2

__all__ = ["TEMPLATES", "content_security_policy", "environment", "template_loader", "template_source"]

TEMPLATES = ("batch_index.html.j2", "report_page.html.j2", "figure.html.j2", "page_head.html.j2", "draw_figures.js")
"""The files in ``tokdiag/report/templates/``; each is loaded as ``tokdiag/<name>``."""


def _script_hash(script: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode("ascii") + "'"


def content_security_policy(scripts: Iterable[str] = ()) -> str:
    """The CSP of every tokdiag page: only the given inline scripts run, nothing is fetched.

    >>> content_security_policy().split("; ")[:2]
    ["default-src 'none'", "script-src 'none'"]
    """
    sources = " ".join(_script_hash(s) for s in scripts) or "'none'"
    return ("default-src 'none'; "
            f"script-src {sources}; "
            "style-src 'unsafe-inline'; img-src data: blob:; font-src data:; "
            "base-uri 'none'; form-action 'none'")


def template_loader() -> jinja2.BaseLoader:
    """A jinja loader of tokdiag's templates (package data), each named ``tokdiag/<file>``.

    Given to nbconvert as an extra loader as well: the prefix keeps these
    names apart from its own (``index.html.j2``, ``base.html.j2``...).
    """
    import jinja2

    return jinja2.PrefixLoader({"tokdiag": jinja2.PackageLoader("tokdiag.report", "templates")})


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """The jinja environment of tokdiag's own pages: autoescaped, strict about undefined names.

    >>> environment().from_string("<b>{{ name }}</b>").render(name="<script>")
    '<b>&lt;script&gt;</b>'
    """
    import jinja2

    return jinja2.Environment(loader=template_loader(), autoescape=True, undefined=jinja2.StrictUndefined,
                              trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)


def template_source(name: str) -> str:
    """The text of the template file ``name`` (one of :data:`TEMPLATES`), e.g. a script to inline and hash."""
    env = environment()
    assert env.loader is not None
    return env.loader.get_source(env, f"tokdiag/{name}")[0]
