"""The examples in the package's docstrings run: they are its documentation, so they must stay true.

Every module of ``tokdiag`` whose source holds an example is imported by name
and its examples run with :mod:`doctest` (the same finder, and the same
``ELLIPSIS`` option, as ``pytest --doctest-modules``). A module that needs an optional extra which is
not installed is skipped, saying which extra.
"""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import io
import pkgutil

import pytest

import tokdiag

# import name of an optional dependency -> the extra of pyproject.toml that installs it
EXTRAS = {
    "memray": "native",
    "distributed": "cluster",
    "dask": "cluster",
    "uvicorn": "service",
    "starlette": "service",
    "httpx": "service",
    "aworld": "aworld",
}


def _modules_with_examples() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(tokdiag.__path__, "tokdiag."):
        if info.name.rsplit(".", 1)[-1] == "__main__":  # importing it runs the command line
            continue
        spec = importlib.util.find_spec(info.name)
        if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
            continue  # a C extension: no docstring examples
        with open(spec.origin, encoding="utf-8") as fh:
            if ">>> " in fh.read():
                names.append(info.name)
    return sorted(names)


MODULES = _modules_with_examples()


def test_the_package_has_examples_to_run():
    assert {"tokdiag.analysis.ledger", "tokdiag.probes.caches", "tokdiag.report.cluster"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    try:
        module = importlib.import_module(name)
    except ModuleNotFoundError as exc:
        top = (exc.name or "").split(".")[0]
        if top in EXTRAS:
            pytest.skip(f"{name} needs {top}: pip install 'tokdiag[{EXTRAS[top]}]'")
        raise
    examples = [t for t in doctest.DocTestFinder().find(module) if t.examples]
    assert examples, f"{name} has '>>> ' in its source but doctest finds no example in it"
    out = io.StringIO()
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)  # pytest's default doctest_optionflags
    for test in examples:
        runner.run(test, out=out.write)
    assert runner.failures == 0, out.getvalue()
