"""The ``%%tokdiag`` cell magic, run in a real IPython InteractiveShell."""

from __future__ import annotations

import pytest
from IPython.core.error import UsageError
from IPython.core.interactiveshell import InteractiveShell
from IPython.utils.capture import capture_output

from tokdiag.magic import PLOTLY_MIME, RUN_VARIABLE


@pytest.fixture(scope="module")
def shell() -> InteractiveShell:
    sh = InteractiveShell.instance()
    sh.run_line_magic("load_ext", "tokdiag")
    sh.run_cell("class MagicLeak:\n    pass\nKEPT = []\nSEEN = []", store_history=False)
    yield sh
    sh.user_ns.pop(RUN_VARIABLE, None)
    sh.user_ns["KEPT"] = []


def _figures(cap) -> list[dict]:
    return [o.data[PLOTLY_MIME] for o in cap.outputs if PLOTLY_MIME in o.data]


def _table_rows(spec: dict) -> list[tuple[str, str]]:
    """(verdict, series cell) per row of the verdict table figure."""
    cells = spec["data"][0]["cells"]["values"]
    return [(v.replace("<b>", "").replace("</b>", ""), s) for v, s in zip(cells[0], cells[1], strict=True)]


def test_a_leaking_cell_is_tracked_and_reported(shell):
    shell.user_ns["KEPT"] = []
    with capture_output() as cap:
        shell.run_cell_magic("tokdiag", "--steps 40 --every 4 --watch MagicLeak --no-progress",
                             "KEPT.append(MagicLeak())")
    assert len(shell.user_ns["KEPT"]) == 40  # the body ran once per step, in the user namespace
    run = shell.user_ns[RUN_VARIABLE]
    assert run.status == "completed" and run.steps[-1] == 40
    count = run.series("watch", "__main__.MagicLeak", "count")
    assert count.iloc[-1] - count.iloc[0] == 40
    figures = _figures(cap)
    assert len(figures) == 2  # verdict table, then ledger
    table, ledger = figures
    assert table["data"][0]["type"] == "table"
    rows = _table_rows(table)
    leak = [v for v, s in rows if "MagicLeak" in s and "count" in s]
    assert leak == ["leak"]
    assert not any("gc_gen" in s for _, s in rows)  # collector bookkeeping left out
    assert ledger["data"][-1]["name"] == "RSS growth"
    assert RUN_VARIABLE in cap.outputs[0].data["text/plain"]


def test_a_cell_that_does_not_leak_comes_out_flat(shell):
    with capture_output() as cap:
        shell.run_cell_magic("tokdiag", "--steps 30 --every 3 --watch MagicLeak --no-progress",
                             "tmp = [MagicLeak() for _ in range(5)]\ndel tmp")
    run = shell.user_ns[RUN_VARIABLE]
    count = run.series("watch", "__main__.MagicLeak", "count")
    assert count.max() - count.min() == 0
    rows = _table_rows(_figures(cap)[0])
    assert [v for v, s in rows if "MagicLeak" in s and "count" in s] == ["flat"]
    assert "leak" not in [v for v, s in rows if "MagicLeak" in s]


def test_step_index_is_available_as_i(shell):
    shell.user_ns["SEEN"] = []
    with capture_output():
        shell.run_cell_magic("tokdiag", "--steps 6 --every 2 --no-progress", "SEEN.append(i)")
    assert shell.user_ns["SEEN"] == list(range(6))


def test_the_notebooks_own_step_and_i_survive_the_cell(shell):
    shell.run_cell("CALLS = []\ndef step(k):\n    CALLS.append(k)\ni = 'mine'", store_history=False)
    user_step = shell.user_ns["step"]
    with capture_output():
        shell.run_cell_magic("tokdiag", "--steps 5 --every 1 --no-progress", "step(i)")
    assert shell.user_ns["CALLS"] == [0, 1, 2, 3, 4]  # the body called the notebook's step with the index
    assert shell.user_ns["step"] is user_step and shell.user_ns["i"] == "mine"
    run = shell.user_ns[RUN_VARIABLE]
    assert run.status == "completed"
    with capture_output(), pytest.raises(ZeroDivisionError):  # restored when the cell fails too
        shell.run_cell_magic("tokdiag", "--steps 5 --every 1 --no-progress", "step(1 / (2 - i))")
    shell.user_ns[RUN_VARIABLE].journal.unlink()  # kept with the error; not needed here
    assert shell.user_ns["step"] is user_step and shell.user_ns["i"] == "mine"
    del shell.user_ns["i"], shell.user_ns["step"]
    with capture_output():
        shell.run_cell_magic("tokdiag", "--steps 2 --every 1 --no-progress", "pass")
    assert "i" not in shell.user_ns and "step" not in shell.user_ns  # nothing left behind


def test_the_progress_bar_shows(shell):
    with capture_output() as cap:
        shell.run_cell_magic("tokdiag", "--steps 5 --every 1 --name barrun", "pass")
    assert "barrun" in cap.stderr and "5/5" in cap.stderr


def test_a_failing_cell_keeps_the_run_and_raises(shell):
    shell.user_ns.pop(RUN_VARIABLE, None)
    with capture_output(), pytest.raises(ZeroDivisionError):
        shell.run_cell_magic("tokdiag", "--steps 10 --every 1 --no-progress", "x = 1 / (3 - i)")
    run = shell.user_ns[RUN_VARIABLE]
    assert run.status == "error" and "ZeroDivisionError" in run.message
    assert run.journal is not None and run.journal.is_file()  # the temporary journal is kept with the error
    run.journal.unlink()


@pytest.mark.parametrize(("line", "named"), [
    ("--every 2", "--steps"),             # required
    ("--steps many", "--steps"),          # not an int
    ("--steps 0", "--steps"),             # not positive
    ("--steps 5 --every 0", "--every"),
    ("--steps 5 --every often", "--every"),
    ("--steps 5 --budget-mb -1", "--budget-mb"),
    ("--steps 5 --colour red", "--colour"),
    ("--steps 5 --cache nocolon", "nocolon"),
])
def test_bad_options_are_usage_errors_naming_the_option(shell, line, named):
    with pytest.raises(UsageError, match=named):
        shell.run_cell_magic("tokdiag", line, "pass")


def test_an_empty_body_is_a_usage_error(shell):
    with pytest.raises(UsageError, match="cell body"):
        shell.run_cell_magic("tokdiag", "--steps 3", "   \n")


def test_help_lists_every_option_and_a_typo_shows_the_usage(shell):
    with pytest.raises(UsageError, match=r"(?s)--steps.*--watch.*--budget-mb"):
        shell.run_cell_magic("tokdiag", "--help", "pass")
    with pytest.raises(
        UsageError, match=r"(?s)unknown option --stpes; did you mean --steps\?.*usage: %%tokdiag --steps"
    ):
        shell.run_cell_magic("tokdiag", "--stpes 10", "pass")
    with pytest.raises(UsageError, match=r"(?s)required: --steps.*usage: %%tokdiag.*--help lists every option"):
        shell.run_cell_magic("tokdiag", "--every 2", "pass")


# -- await in the cell (issue 13 item 4) ------------------------------------------------------------------

AWAITING = "await asyncio.sleep(0)\nLOOPS.add(id(asyncio.get_running_loop()))\nKEPT.append(MagicLeak())\n"


def test_a_cell_that_awaits_is_awaited_step_by_step_on_the_shells_event_loop(shell):
    from IPython.core.async_helpers import get_asyncio_loop

    shell.run_cell("import asyncio\nLOOPS = set()\nKEPT = []", store_history=False)
    assert shell.autoawait
    with capture_output() as cap:
        result = shell.run_cell(f"%%tokdiag --steps 24 --every 3 --watch MagicLeak --no-progress\n{AWAITING}")
    assert result.success, result.error_in_exec or result.error_before_exec
    assert len(shell.user_ns["KEPT"]) == 24
    assert shell.user_ns["LOOPS"] == {id(get_asyncio_loop())}  # IPython's own loop, running while the cell ran
    run = shell.user_ns[RUN_VARIABLE]
    v = run.verdicts()
    assert v[(v.subject == "__main__.MagicLeak") & (v.metric == "count")].verdict.tolist() == ["leak"]
    assert len(_figures(cap)) == 2 and "i" not in shell.user_ns
    shell.user_ns["KEPT"] = []


def test_an_awaited_cell_that_raises_keeps_the_run_and_shows_the_error(shell):
    shell.run_cell("import asyncio", store_history=False)
    shell.user_ns.pop(RUN_VARIABLE, None)
    with capture_output():
        result = shell.run_cell("%%tokdiag --steps 10 --every 1 --no-progress\nawait asyncio.sleep(0)\nx = 1 / (3 - i)")
    assert type(result.error_in_exec) is ZeroDivisionError
    run = shell.user_ns[RUN_VARIABLE]
    assert run.status == "error" and run.steps == [0, 1, 2, 3]
    run.journal.unlink()


def test_an_awaiting_body_with_no_loop_running_gets_one_loop_for_the_cell(shell):
    shell.run_cell("import asyncio\nLOOPS = set()\nKEPT = []", store_history=False)
    with capture_output():
        shell.run_cell_magic("tokdiag", "--steps 6 --every 2 --no-progress", AWAITING)
    assert len(shell.user_ns["KEPT"]) == 6 and len(shell.user_ns["LOOPS"]) == 1
    assert shell.user_ns[RUN_VARIABLE].steps == [0, 2, 4, 6]
    shell.user_ns["KEPT"] = []


def test_with_autoawait_off_in_a_running_loop_the_magic_says_how_to_await(shell):
    import asyncio

    async def inside_a_kernel() -> None:
        shell.run_cell_magic("tokdiag", "--steps 3 --no-progress", "await asyncio.sleep(0)")

    shell.autoawait = False
    try:
        assert not shell.transform_cell(f"%%tokdiag --steps 3\n{AWAITING}").startswith("await")
        with pytest.raises(UsageError, match=r"autoawait.*%autoawait asyncio.*td\.atrack"):
            asyncio.run(inside_a_kernel())
    finally:
        shell.autoawait = True


def test_only_tokdiag_cells_that_await_are_awaited(shell):
    assert shell.transform_cell("%%tokdiag --steps 3\nawait f(i)\n").startswith("await get_ipython().run_cell_magic(")
    for cell in ("%%tokdiag --steps 3\nf(i)\n", "%%timeit\nawait f()\n", "x = 'run_cell_magic'\n",
                 "%%tokdiag --steps 3\nasync def g():\n    await f()\n"):
        assert not shell.transform_cell(cell).startswith("await"), cell
    shell.run_line_magic("reload_ext", "tokdiag")  # loading again does not stack a second transformer
    assert sum(type(t).__name__ == "AwaitTokdiagCells" for t in shell.input_transformers_post) == 1
