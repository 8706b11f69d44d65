"""Plans without a kernel: grids, run-folder parameters, and every mistake a ConfigError naming the fix."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tokdiag.errors import ConfigError
from tokdiag.report.plan import (
    format_parameters,
    load_plan,
    parse_plan,
    run_folder_parameters,
)

NOTEBOOKS = Path(__file__).parent / "notebooks"


def _copy_fixtures(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("rendezvous.ipynb", "broken.ipynb", "simple_plot.ipynb", "no_parameters.ipynb"):
        shutil.copy(NOTEBOOKS / name, folder / name)
    return folder


def _plan(tmp_path: Path, text: str) -> Path:
    _copy_fixtures(tmp_path)
    path = tmp_path / "plan.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_grid_expands_into_one_run_per_combination(tmp_path: Path) -> None:
    plan = load_plan(_plan(tmp_path, """\
jobs: 3
runs:
  - notebook: simple_plot.ipynb
    parameters: {title: x}
    grid: {points: [2, 3]}
"""))
    assert plan.jobs == 3
    assert [r.folder_name for r in plan.runs] == ["01-simple_plot-points=2", "02-simple_plot-points=3"]
    assert [dict(r.parameters) for r in plan.runs] == [{"title": "x", "points": 2}, {"title": "x", "points": 3}]
    assert plan.runs[0].kernel_parameters() == {"title": "x", "points": 2, "output_dir": "."}


def test_run_folder_parameters_follow_what_the_notebook_declares() -> None:
    assert run_folder_parameters({"steps": 1, "output_dir": ".", "journal": "x.jsonl"}) == {
        "output_dir": ".", "journal": "journal.jsonl"}
    assert run_folder_parameters({"out_dir": "."}) == {"out_dir": "."}
    assert run_folder_parameters({"steps": 1}) == {} and run_folder_parameters(None) == {}


@pytest.mark.parametrize(("text", "message"), [
    ("runs:\n  - notebook: simple_plot.ipynb\n    paramters: {points: 2}\n",
     r"runs\[0\]: unknown key 'paramters'; did you mean 'parameters'\?"),
    ("title: x\nrun: []\n", r"unknown key 'run' at the top level; did you mean 'runs'\?"),
    ("jobs: two\nruns:\n  - notebook: simple_plot.ipynb\n", r"jobs must be a whole number >= 1, got 'two'"),
    ("runs: {notebook: simple_plot.ipynb}\n", r"'runs' must be a non-empty list"),
    ("runs:\n  - notebook: simple_plot.ipynb\n    parameters: [1]\n", r"'parameters' must be a mapping"),
    ("runs:\n  - notebook: simple_plot.ipynb\n    grid: {points: 3}\n", r"grid.points must be a non-empty list"),
    ("runs:\n  - notebook: missing.ipynb\n", r"runs\[0\]: notebook 'missing.ipynb' not found"),
    ("runs:\n  - notebook: simple_plot.ipynb\n    parameters: {pionts: 2}\n",
     r"has no parameter 'pionts'; did you mean 'points'\? its documented parameters are: title .*points"),
    ("runs:\n  - notebook: simple_plot.ipynb\n    parameters: {output_dir: /tmp}\n",
     r"parameter 'output_dir' is set by tokdiag"),
    ("runs:\n  - notebook: no_parameters.ipynb\n    parameters: {x: 1}\n", r"has no cell tagged 'parameters'"),
    ("runs:\n  - notebook: simple_plot.ipynb\n   parameters: {}\n", r"not valid YAML at line 3"),
])
def test_bad_plans_raise_config_errors_naming_the_problem(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_plan(_plan(tmp_path, text))


def test_a_missing_plan_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"plan file .*nope\.yaml.* does not exist"):
        load_plan(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="a plan is a mapping"):
        parse_plan(["runs"])


def test_parameters_read_as_one_line_text_quoted_the_rest_as_json() -> None:
    assert format_parameters({"tasks": 300, "mode": "fast", "keep": True, "sizes": [1, 2], "none": None}) == (
        "tasks=300, mode='fast', keep=true, sizes=[1, 2], none=null")
    assert format_parameters({}) == ""
