"""Packaging: the public surface, and pyproject.toml agreeing with environment.yml."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import yaml

import tokdiag

ROOT = Path(__file__).resolve().parents[1]


def test_public_api_is_exactly_all():
    public = {n for n in dir(tokdiag) if not n.startswith("_")} - {
        # submodules imported as a side effect of importing the package
        "errors", "journal", "probes", "records", "run", "sizing", "timeline", "tracker", "analysis",
        "retention", "annotations", "export", "batch", "cli", "summary", "charts", "magic", "isolated",
        "recording", "report",
        # IPython's hook for `%load_ext tokdiag`, not API
        "load_ipython_extension",
    }
    assert set(tokdiag.__all__) - {"__version__"} == public
    assert tokdiag.__all__ == sorted(tokdiag.__all__, key=lambda s: (s[0].islower(), s))
    for name in tokdiag.__all__:
        assert getattr(tokdiag, name) is not None


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[ ]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_environment_yml_lists_the_same_packages_as_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = set(project["dependencies"])
    for extra in project["optional-dependencies"].values():  # every extra, the ones added later too
        wanted |= set(extra)
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict) and "pip" in d)
    listed = {p for p in pip if not p.startswith("-e")}
    assert {r.replace(" ", "") for r in listed} == {r.replace(" ", "") for r in wanted}


def test_readme_commands_exist_in_the_makefile():
    readme = (ROOT / "README.md").read_text()
    makefile = (ROOT / "Makefile").read_text()
    for target in ("report", "test"):
        assert f"make {target}" in readme
        assert re.search(rf"^{target}:", makefile, re.M)
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci


def _imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    return names


def test_the_tool_never_imports_the_built_in_workloads():
    offending = [f"{p.relative_to(ROOT)}: {name}" for p in sorted((ROOT / "tokdiag").rglob("*.py"))
                 for name in _imports(p)
                 if name.split(".")[0] == "tokdiag_workloads" or name.startswith("tokdiag.workloads")]
    assert offending == []
    assert not (ROOT / "tokdiag" / "workloads").exists()


def test_both_packages_are_installed_by_pyproject():
    # The package list setuptools builds from [tool.setuptools.packages.find] (its finder, the same call
    # the build makes; building a wheel would need setuptools>=77 from the network, in build isolation).
    import setuptools

    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    finder = setuptools.find_namespace_packages if find.get("namespaces", True) else setuptools.find_packages
    found = set(finder(str(ROOT / find.get("where", ["."])[0]), include=find.get("include", ["*"]),
                       exclude=find.get("exclude", ())))
    regular = {".".join(p.parent.relative_to(ROOT).parts) for top in ("tokdiag", "tokdiag_workloads")
               for p in (ROOT / top).rglob("__init__.py")}
    assert {"tokdiag", "tokdiag_workloads"} <= regular
    assert regular <= found  # every package of both trees ships
    assert {p.split(".")[0] for p in found} == {"tokdiag", "tokdiag_workloads"}  # and nothing else (tests, bench)


def test_make_installs_the_extras_the_tests_need():
    makefile = (ROOT / "Makefile").read_text()
    installed = re.search(r"pip install .*-e '\.\[([^]]*)\]'", makefile)
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert installed and set(extras) <= set(installed.group(1).split(","))  # every extra: the tests use each
