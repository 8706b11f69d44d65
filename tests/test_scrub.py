"""Sharing without a kernel: absolute paths become relative or symbolic, active HTML shows as text."""

from __future__ import annotations

import sys
from pathlib import Path

from late_imports import lazy

from tokdiag.report.scrub import path_rules, sanitize_html, scrub_notebook, scrub_value

nbformat = lazy("nbformat")  # at first use, not at collection (tests/late_imports.py)

HERE = Path(__file__).parent
REPO = HERE.parent
CANARY = '<script>window.__canary=1</script><img src=x onerror="window.__canary=2">'


def test_sanitize_html_keeps_tables_and_escapes_active_content() -> None:
    table = ('<table class="dataframe" border="1"><tbody><tr><th style="text-align: right;">a</th>'
             "<td>1</td></tr></tbody></table>")
    assert sanitize_html(table) == table
    hostile = sanitize_html(f'<div onclick="x()">{CANARY}</div><a href="javascript:alert(1)">x</a>')
    assert "<script" not in hostile and "onclick" not in hostile and "<img" not in hostile
    assert "javascript:" not in hostile


def test_scrub_notebook_makes_paths_relative_or_symbolic(tmp_path: Path) -> None:
    run_dir = tmp_path / "out" / "run"
    home = Path.home()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        f"open('{run_dir}/journal.jsonl')\nos.chdir('{run_dir}')\nsys.prefix == '{sys.prefix}'",
        outputs=[nbformat.v4.new_output("stream", name="stdout", text=f"{home}/data/x.bin\n")])])
    nb.metadata["papermill"] = {"input_path": str(REPO / "notebooks" / "x.ipynb"), "cwd": str(run_dir)}
    clean = scrub_notebook(nb, base_dir=run_dir)
    source = clean.cells[0].source
    assert "open('journal.jsonl')" in source and "os.chdir('.')" in source and "'$PYTHON'" in source
    assert clean.cells[0].outputs[0].text == "~/data/x.bin\n"
    assert clean.metadata.papermill == {"input_path": "notebooks/x.ipynb", "cwd": "."}
    assert nb.cells[0].source.startswith(f"open('{run_dir}")  # the original is untouched


def test_scrub_value_rewrites_every_text_of_a_json_value_but_binary_outputs(tmp_path: Path) -> None:
    base = tmp_path / "out"
    rules = path_rules(base, [(tmp_path / "models", "$MODELS")])
    value = {"a": [f"{base}/run/j.jsonl", f"cd {base}"], "b": f"{tmp_path}/models/m.bin", "n": 3,
             "image/png": f"{base}/not-a-path-in-base64"}
    assert scrub_value(value, rules) == {"a": ["run/j.jsonl", "cd ."], "b": "$MODELS/m.bin", "n": 3,
                                         "image/png": f"{base}/not-a-path-in-base64"}
    assert scrub_value(f"{sys.prefix}/bin/python", rules) == "$PYTHON/bin/python"
    assert scrub_value(f"{base}x/y", rules) != "x/y"  # a longer name that only starts like the folder is not it
