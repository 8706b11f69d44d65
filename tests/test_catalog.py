"""Shipped notebooks found by name: tokdiag's own, and other packages' through entry points, never imported."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest
from late_imports import lazy

from tokdiag.errors import ConfigError
from tokdiag.report import catalog

nbformat = lazy("nbformat")  # at first use, not at collection (tests/late_imports.py)

ROOT = Path(__file__).resolve().parents[1]


def _notebook(path: Path, title: str, answers: str = "") -> None:
    nb = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_markdown_cell(f"# {title}"),
            nbformat.v4.new_code_cell(
                'steps = 3  # steps\noutput_dir = "."  # folder', metadata={"tags": ["parameters"]}
            ),
        ]
    )
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    if answers:
        nb.metadata["tokdiag"] = {"answers": answers}
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)


@pytest.fixture
def plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An installed distribution 'tdplugin' declaring a notebook folder; importing its package raises."""
    site = tmp_path / "site"
    (site / "tdplugin").mkdir(parents=True)
    (site / "tdplugin" / "__init__.py").write_text("raise RuntimeError('tdplugin was imported')\n")
    _notebook(site / "tdplugin" / "books" / "plugin_check.ipynb", "Plugin check", "Is the plugin found?")
    _notebook(site / "tdplugin" / "books" / "your_workload.ipynb", "A clash")
    info = site / "tdplugin-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tdplugin\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[tokdiag.notebooks]\ntdplugin = tdplugin.books\n")
    monkeypatch.syspath_prepend(str(site))
    return site


def test_tokdiag_and_the_workloads_notebooks_are_found_by_name() -> None:
    found = {n.name: n for n in catalog.notebooks()}
    assert found["your_workload"].path == ROOT / "tokdiag" / "report" / "notebooks" / "your_workload.ipynb"
    assert found["agent_objects"].path == ROOT / "tokdiag_workloads" / "notebooks" / "agent_objects.ipynb"
    assert found["agent_objects"].source == "tokdiag_workloads"
    assert catalog.resolve("agent_objects") == found["agent_objects"].path
    assert catalog.resolve("agent_objects.ipynb") == found["agent_objects"].path


def test_an_entry_point_adds_a_folder_without_importing_its_package(plugin: Path) -> None:
    found = {n.name: n for n in catalog.notebooks()}
    assert found["plugin_check"].path == plugin / "tdplugin" / "books" / "plugin_check.ipynb"
    assert found["plugin_check"].source == "tdplugin"
    assert "tdplugin" not in sys.modules  # its __init__ raises: it never ran
    assert catalog.describe(found["plugin_check"]) == ("Is the plugin found?", ("steps=3",))
    with pytest.raises(ConfigError, match=r"name 'your_workload' is ambiguous: .*\(tokdiag\) and .*\(tdplugin\)"):
        catalog.resolve("your_workload")


def test_a_path_wins_and_mistakes_get_a_suggestion(tmp_path: Path) -> None:
    _notebook(tmp_path / "agent_objects.ipynb", "Mine")
    assert catalog.resolve("agent_objects.ipynb", base_dirs=[tmp_path]) == tmp_path / "agent_objects.ipynb"
    with pytest.raises(ConfigError, match=r"notebook 'agent_objets' not found .*did you mean 'agent_objects'\? "
                                          r"`tokdiag notebooks` lists"):
        catalog.resolve("agent_objets", base_dirs=[tmp_path])
    # a path into the old notebooks/ folder of a checkout: the name it ships under
    with pytest.raises(ConfigError, match=r"a notebook named 'compare_runs' ships with tokdiag: give its name, "
                                          r"e\.g\. `tokdiag run compare_runs`"):
        catalog.resolve("notebooks/compare_runs.ipynb", base_dirs=[tmp_path])
    (tmp_path / "run.jsonl").write_text("{}\n")
    (tmp_path / "plan.yaml").write_text("runs: []\n")
    with pytest.raises(ConfigError, match=r"'run.jsonl' is a journal: make a report from it with `tokdiag report"):
        catalog.resolve("run.jsonl", base_dirs=[tmp_path])
    with pytest.raises(ConfigError, match=r"'plan.yaml' is a plan: run it with `tokdiag batch plan.yaml`"):
        catalog.resolve("plan.yaml", base_dirs=[tmp_path])


@pytest.mark.slow
def test_an_installed_layout_finds_the_notebooks_through_its_metadata_alone(tmp_path: Path) -> None:
    """The files an install gets (build_py with pyproject's package-data; egg_info writes the entry points):
    a fresh interpreter importing tokdiag from there alone lists and resolves every notebook, from another
    folder, with no pyproject.toml beside the packages, and never imports tokdiag_workloads."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    tool = project["tool"]["setuptools"]
    groups = {group: [f"{k} = {v}" for k, v in table.items()]
              for group, table in project["project"]["entry-points"].items()}
    src, site = tmp_path / "src", tmp_path / "site"
    src.mkdir()
    for top in ("tokdiag", "tokdiag_workloads"):
        (src / top).symlink_to(ROOT / top)
    build = textwrap.dedent(f"""
        from setuptools import find_namespace_packages, setup
        setup(name="tokdiag", version="0",
              packages=find_namespace_packages(include={tool["packages"]["find"]["include"]!r}),
              package_data={tool["package-data"]!r}, entry_points={groups!r},
              script_args=["-q", "build_py", "--build-lib", {str(site)!r}, "egg_info", "--egg-base", {str(site)!r}])
        """)
    subprocess.run([sys.executable, "-c", build], cwd=src, check=True, capture_output=True)
    check = textwrap.dedent("""
        import sys
        from tokdiag.report import catalog
        found = {n.name: n for n in catalog.notebooks()}
        print(sorted(found))
        print(catalog.resolve("agent_objects").relative_to(catalog.folders()[1][1].parent.parent))
        print("tokdiag_workloads" in sys.modules, catalog.__file__.startswith(sys.argv[1]))
        """)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    done = subprocess.run([sys.executable, "-c", check, str(site)], cwd=elsewhere, capture_output=True, text=True,
                          env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HOME": str(Path.home())})
    assert done.returncode == 0, done.stderr[-2000:]
    names, where, flags = done.stdout.splitlines()
    assert set(ast.literal_eval(names)) >= {
        "agent_objects",
        "aworld_agents",
        "tokenizer_caches",
        "your_workload",
        "compare_runs",
        "journal_report",
    }
    assert where == "tokdiag_workloads/notebooks/agent_objects.ipynb"
    assert flags == "False True"  # tokdiag_workloads never imported; tokdiag came from the installed layout
    assert not (site / "pyproject.toml").exists()
