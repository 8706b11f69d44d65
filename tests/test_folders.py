"""Run folders without a kernel: tokdiag deletes only what its last run wrote, and refuses the rest."""

from __future__ import annotations

from pathlib import Path

import pytest

from tokdiag.errors import ConfigError
from tokdiag.report.folders import (
    RUN_MARKER,
    FolderPlan,
    inspect_folder,
    prepare_folder,
    seal_folder,
)


def test_run_folder_rules_without_a_kernel(tmp_path: Path) -> None:
    folder = tmp_path / "run"
    plan = prepare_folder(folder)
    (folder / "sub").mkdir()
    (folder / "sub" / "j.jsonl").write_text("x")
    (folder / "nb.ipynb").write_text("{}")
    seal_folder(plan, set())
    (folder / "yours.txt").write_text("y")
    again = inspect_folder(folder, writes=("nb.ipynb",))
    assert again.remove == ("nb.ipynb", "sub/j.jsonl") and again.keep == frozenset({"yours.txt"})
    prepare_folder(folder, ("nb.ipynb",))
    assert sorted(p.name for p in folder.iterdir()) == [RUN_MARKER, "yours.txt"]  # its folder 'sub' went too
    with pytest.raises(ConfigError, match="never finished"):  # marked in progress: tokdiag was stopped
        inspect_folder(folder)
    seal_folder(_plan_keeping(folder, keep={"yours.txt"}), set())
    with pytest.raises(ConfigError, match="yours.txt in .* was not written by tokdiag and the run would overwrite it"):
        inspect_folder(folder, writes=("yours.txt",))
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="is a file"):
        inspect_folder(tmp_path / "file")


def _plan_keeping(folder: Path, keep: set[str]):
    return FolderPlan(folder, keep=frozenset(keep))
