"""Packaging: the public surface, and pyproject.toml agreeing with environment.yml."""

from __future__ import annotations

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
        "retention", "workloads", "annotations", "export", "batch", "cli", "summary", "charts", "magic", "isolated",
        "record", "report",
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
