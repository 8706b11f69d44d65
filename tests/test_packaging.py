"""Packaging: the public surface, and pyproject.toml agreeing with environment.yml."""

from __future__ import annotations
import __future__

import ast
import importlib
import inspect
import pkgutil
import re
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import yaml

import tokdiag

ROOT = Path(__file__).resolve().parents[1]


def _public_names(module: ModuleType) -> set[str]:
    """The names ``module`` offers: not private, not its own submodules, not ``from __future__`` features.

    A submodule is bound in its package's namespace by the import system the
    first time anything imports it (so what ``dir()`` shows depends on what ran
    before); it is reached by its dotted name, not offered by the package. A
    ``from __future__`` import binds a compiler directive, not an object.
    """
    return {n for n in dir(module) if not n.startswith("_")
            and sys.modules.get(f"{module.__name__}.{n}") is not getattr(module, n)
            and type(getattr(module, n)) is not __future__._Feature}


def _packages() -> list[ModuleType]:
    names = [i.name for i in pkgutil.walk_packages(tokdiag.__path__, "tokdiag.") if i.ispkg]
    return [tokdiag, *(importlib.import_module(n) for n in sorted(names))]


def _check_exported(module: ModuleType, name: str) -> None:
    """``module.name`` exists; a class or function exported there is the one defined under that name."""
    obj = getattr(module, name)  # AttributeError: __all__ names a missing object
    if inspect.isclass(obj) or inspect.isfunction(obj):
        assert obj.__module__.split(".")[0] == "tokdiag", f"{module.__name__}.{name} is {obj.__module__}'s"
        assert obj.__name__ == name, f"{module.__name__}.{name} is {obj.__name__}, exported under another name"
        assert getattr(sys.modules[obj.__module__], name) is obj  # the definition itself, not a stand-in
    elif inspect.ismodule(obj):
        assert obj.__name__.rsplit(".", 1)[-1] == name and obj.__name__.startswith("tokdiag.")


def test_public_api_is_exactly_all():
    """The httpx rule: every public name of the package is in ``__all__``, and nothing else is."""
    _packages()  # every subpackage imported first: bound in the namespace, they must still not count
    assert {n for n in tokdiag.__all__ if not n.startswith("__")} == _public_names(tokdiag)
    assert tokdiag.__all__ == sorted(tokdiag.__all__, key=lambda s: (s[0].islower(), s))
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    assert tokdiag.__version__ == version
    for name in tokdiag.__all__:
        if not name.startswith("__"):
            _check_exported(tokdiag, name)
    assert tokdiag.Run is tokdiag.recording.run.Run and tokdiag.track is tokdiag.recording.steps.track
    assert tokdiag.why_alive is importlib.import_module("tokdiag.analysis.retention").why_alive  # served lazily


def test_every_subpackage_exports_exactly_its_public_names():
    checked = []
    for package in _packages()[1:]:
        exported = getattr(package, "__all__", None)
        if exported is None:  # a folder of modules only: it offers no names of its own
            assert _public_names(package) == set(), package.__name__
            continue
        assert set(exported) == _public_names(package), package.__name__
        assert len(exported) == len(set(exported)), package.__name__
        for name in exported:
            _check_exported(package, name)
        checked.append(package.__name__)
    assert {"tokdiag.analysis", "tokdiag.charts", "tokdiag.probes"} <= set(checked)


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


def _third_party_imports(path: Path) -> dict[str, bool]:
    """Top-level names of the non-stdlib modules ``path`` imports -> whether the import is unconditional.

    Unconditional: at module level, outside ``try: ... except ImportError`` and ``if TYPE_CHECKING``.
    An import inside a function, or guarded, runs only when that feature is used: an extra may provide it.
    """
    found: dict[str, bool] = {}

    def visit(node: ast.AST, conditional: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = conditional or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Try) and any(
                    h.type is not None and "ImportError" in ast.unparse(h.type) for h in child.handlers):
                inner = True
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                inner = True
            if isinstance(child, ast.Import):
                names = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                names = [child.module]
            else:
                names = []
            for top in {n.split(".")[0] for n in names}:
                if top not in sys.stdlib_module_names and top not in ("__future__", "tokdiag"):
                    found[top] = found.get(top, False) or not inner
            visit(child, inner)

    visit(ast.parse(path.read_text(), str(path)), False)
    return found


def test_dependencies_are_exactly_what_the_tool_imports():
    from importlib.metadata import packages_distributions

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    required = {canonicalize_name(Requirement(r).name) for r in project["dependencies"]}
    extras = {canonicalize_name(Requirement(r).name) for reqs in project["optional-dependencies"].values()
              for r in reqs}
    distributions = packages_distributions()  # import name -> the installed distributions providing it
    always: dict[str, set[str]] = {}
    sometimes: dict[str, set[str]] = {}
    for path in sorted((ROOT / "tokdiag").rglob("*.py")):
        for top, unconditional in _third_party_imports(path).items():
            assert top in distributions, f"{path.relative_to(ROOT)} imports {top}, which no installed package provides"
            for dist in distributions[top]:
                (always if unconditional else sometimes).setdefault(canonicalize_name(dist), set()).add(
                    str(path.relative_to(ROOT)))
    # imported whenever its module is: a dependency of every install
    assert {d: sorted(p) for d, p in always.items() if d not in required} == {}
    # imported when a feature runs: a dependency, or the extra of that feature
    assert {d: sorted(p) for d, p in sometimes.items() if d not in required | extras} == {}
    # nothing declared that the tool never imports
    assert required - set(always) - set(sometimes) == set()
    assert {"numpy", "pandas", "bleach", "jupyter-client", "pyzmq", "ipython"} <= set(always) | set(sometimes)


def test_the_readme_layout_table_names_every_module_of_each_pipeline_folder_and_no_other() -> None:
    section = (ROOT / "README.md").read_text(encoding="utf-8").split("\n## Layout", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| `(tokdiag/\w+/)` \| (.*) \|$", section, flags=re.M))
    for folder in ("probes", "recording", "analysis", "charts", "report"):
        row, here = rows[f"tokdiag/{folder}/"], ROOT / "tokdiag" / folder
        for module in here.glob("*.py"):  # named as a file or as a word ("verdicts" for verdicts.py)
            if module.stem != "__init__":
                assert module.name in row or re.search(rf"\b{module.stem.lstrip('_')}", row, flags=re.I), \
                    f"README's layout table does not name tokdiag/{folder}/{module.name}"
        for named in re.findall(r"`([\w/]+\.py)`", row):
            assert (here / named).is_file(), f"README's layout table names tokdiag/{folder}/{named}: no such file"
        for sub in here.iterdir():
            if sub.is_dir() and sub.name != "__pycache__":
                assert sub.name in row, f"README's layout table does not name tokdiag/{folder}/{sub.name}/"
