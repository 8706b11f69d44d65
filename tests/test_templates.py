"""The report's jinja templates ship with the package and are found where it is installed, not only in a checkout."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from tokdiag.report.pages import TEMPLATES

ROOT = Path(__file__).resolve().parents[1]


def test_every_template_file_is_listed_and_every_listed_one_exists() -> None:
    folder = ROOT / "tokdiag" / "report" / "templates"
    assert sorted(p.name for p in folder.iterdir() if p.is_file()) == sorted(TEMPLATES)


@pytest.mark.slow
def test_templates_are_found_from_an_installed_layout(tmp_path: Path) -> None:
    # setuptools' build_py copies what an install gets (the packages' modules and their package data, as
    # [tool.setuptools.package-data] says) into site/; a fresh interpreter imports tokdiag from there alone.
    tool = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    src, site, out = tmp_path / "src", tmp_path / "site", tmp_path / "out"
    src.mkdir()
    (src / "tokdiag").symlink_to(ROOT / "tokdiag")
    build = textwrap.dedent(f"""
        from setuptools import find_namespace_packages, setup
        setup(name="tokdiag", packages=find_namespace_packages(include=["tokdiag", "tokdiag.*"]),
              package_data={tool["package-data"]!r}, script_args=["-q", "build_py", "--build-lib", {str(site)!r}])
        """)
    subprocess.run([sys.executable, "-c", build], cwd=src, check=True, capture_output=True)
    check = textwrap.dedent(f"""
        import importlib.resources, pathlib, nbformat
        import tokdiag
        from tokdiag.report.export import PLOTLY_MIME, export_html
        from tokdiag.report.index import write_index
        from tokdiag.report.pages import TEMPLATES
        assert pathlib.Path(tokdiag.__file__).is_relative_to({str(site)!r}), tokdiag.__file__
        folder = importlib.resources.files("tokdiag.report").joinpath("templates")
        print(sorted(name for name in TEMPLATES if folder.joinpath(name).is_file()))
        index = write_index([], {str(out)!r}).read_text()
        figure = nbformat.v4.new_output("display_data", data={{PLOTLY_MIME: {{"data": [], "layout": {{}}}}}})
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("fig", outputs=[figure])])
        page = export_html(nb, {str(out / "page.html")!r}, title="installed").read_text()
        print("Content-Security-Policy" in index, 'class="tokdiag-figure"' in page, "Plotly.newPlot" in page)
        """)
    found = subprocess.run([sys.executable, "-c", check], cwd=tmp_path, capture_output=True, text=True,
                           env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HOME": str(Path.home())})
    assert found.returncode == 0, found.stderr[-2000:]
    assert found.stdout.splitlines() == [str(sorted(TEMPLATES)), "True True True"]
