"""Libraries the test modules import at first use, not at collection, and the test files that run late.

``pytest -n 2`` collects every test module in every worker, so whatever a module imports at its top is in
both workers' heaps from the first test on. Most tests measure that heap: every snapshot runs a full
collection and the containers probe walks every module, so a worker that had imported nbformat (128,000
objects with jsonschema) and openai (60,000) ran tests/test_containers_probe.py in 174 s instead of 46 s
(measured side by side, one run each, load ~4). So these libraries load on first use (:func:`lazy`), and the
files that need them run after the rest (:data:`LATE`, applied by conftest's ``pytest_collection_modifyitems``;
``make test`` passes ``--no-loadscope-reorder``, without which pytest-xdist hands out the files with the most
tests first, whatever the collection order).
"""

from __future__ import annotations

import importlib
from typing import Any

LATE = (
    # the batch of the five notebooks first: the other worker meanwhile runs what follows, not waits for it
    "test_layout.py",
    "test_batch.py", "test_cli.py", "test_cli_reports.py", "test_summary.py", "test_report_notebook.py",
    "test_export.py", "test_scrub.py", "test_catalog.py", "test_progress.py", "test_async_kernel.py",
    "test_service_report.py", "test_browser.py", "test_cluster.py", "test_stub_server.py", "test_service.py",
    "test_owners_aworld.py", "test_workloads_aworld.py", "test_disk_probe.py", "test_native_trace.py",
    "test_magic.py", "test_packaging.py",
    "test_notebooks.py",  # last: by then the batch test_layout started is done
)
"""Test files that run kernels, a browser, Dask or AWorld, or import nbformat or openai: after every other file."""


class lazy:  # noqa: N801  (it stands where a module would: `nbformat = lazy("nbformat")`)
    """The module ``name``, imported when one of its public attributes is first read.

    Not ``importlib.util.LazyLoader``: pytest reads every module-level name's ``_pytestfixturefunction`` (and
    the like) while it collects, which would load the module then. Private names are not forwarded."""

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("_"):
            raise AttributeError(attr)
        return getattr(importlib.import_module(self._name), attr)

    def __repr__(self) -> str:
        return f"<{self._name}, imported at first use>"
