"""The ``tokdiag`` command: run a notebook, run a plan of notebooks, report on journals.

Exit status: 0 when everything ran, 1 when a notebook failed (its error is
printed and shown in the HTML), 2 for a usage or configuration error (one
line on stderr naming the problem and the fix, no traceback), 130 on Ctrl-C.
A run that completed exits 0 whatever it found: ``tokdiag run`` prints the
run's answer (from its ``summary.json``) as its last lines, and the very last
line says plainly ``leak found``, ``no leak found`` or that it is undecided,
followed by every warning (``warning: watch: no class matches 'Jobb'...``).
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from tokdiag.errors import TokdiagError

EPILOG = """\
examples:
  tokdiag notebooks                                         # the notebooks that ship, what each answers
  tokdiag run your_workload -p target mypkg.service:handle -p steps 200
  tokdiag run agent_objects -p tasks 300 -o reports/agents
  tokdiag run tokenizer_caches --list-parameters
  tokdiag run ./my_notebook.ipynb -p steps 50               # any notebook with a `parameters` cell
  tokdiag batch plans/default.yaml --jobs 2 -o reports      # then open reports/index.html
  tokdiag batch plans/default.yaml --cluster tcp://HOST:8786 --retries 1   # on a Dask cluster
  tokdiag report runs/service.jsonl -o reports/service      # HTML from journals alone
  tokdiag compare before.jsonl after.jsonl --name before --name fixed   # an A/B report
  tokdiag report runs/svc.jsonl --limit 4GiB -o reports/svc   # a service's svc.pid*.jsonl as one service

a plan (YAML) for `tokdiag batch`:
  title: nightly memory check
  jobs: 2
  runs:
    - notebook: agent_objects       # a name from `tokdiag notebooks`, or an .ipynb path
      parameters: {tasks: 300}
      grid: {keep_agents: [true, false]}  # one run per value

each run gets its own folder and kernel (started in that folder); a notebook that
declares `output_dir` (or `out_dir`) gets "." and one that declares `journal` gets
"journal.jsonl", so its journal and summary.json land beside its HTML.

exit status: 0 all ran, 1 a notebook failed, 2 bad usage or configuration.
"""


_WITH_CODE_HELP = ("show the code cells in the HTML (hidden by default: the page opens on the answer; "
                   "its \"show code\" checkbox shows them)")


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def parse_value(text: str) -> Any:
    """A ``-p`` value: JSON or a Python literal when it parses as one, else the text itself.

    >>> parse_value("300"), parse_value("true"), parse_value("False"), parse_value('["A", "B"]')
    (300, True, False, ['A', 'B'])
    >>> parse_value("mypkg.mod:fn")
    'mypkg.mod:fn'
    """
    for parse in (json.loads, ast.literal_eval):
        try:
            return parse(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
    return text


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("tokdiag")
    except PackageNotFoundError:
        return "(not installed)"


def _journal_arguments(parser: argparse.ArgumentParser, journals: str, output: str) -> None:
    """What ``report`` and ``compare`` both take: journals, -o, one --name per journal, --with-code."""
    parser.add_argument("journals", nargs="+", metavar="JOURNAL", help=journals)
    parser.add_argument("-o", "--output", metavar="DIR", help=output)
    parser.add_argument("--name", action="append", default=[], metavar="NAME", dest="names",
                        help="the runs' names, one --name per journal in their order (default: the names the "
                             "journals recorded, or their file names when those are the same)")
    parser.add_argument("--with-code", action="store_true", help=_WITH_CODE_HELP)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``tokdiag`` command."""
    parser = _Parser(prog="tokdiag", description="Measure where memory accumulates in long-running "
                     "LLM agent services: run tokdiag's notebooks and write self-contained HTML reports.",
                     epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"tokdiag {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    run = sub.add_parser("run", help="run one notebook with parameters, write the executed notebook and HTML",
                         description="Run NOTEBOOK in a new kernel (papermill), export it as offline HTML, and print "
                                     "the run's answer; the last line says 'leak found', 'no leak found' or undecided, "
                                     "and every warning.",
                         epilog="examples:\n  tokdiag run your_workload -p target mypkg.jobs:handle\n"
                                "  tokdiag run agent_objects -p tasks 300 -o reports/agents",
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("notebook", metavar="NOTEBOOK",
                     help="a shipped notebook's name (see `tokdiag notebooks`) or the path of an .ipynb file")
    run.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                     help="set a parameter; VALUE is read as JSON or a Python literal when it is one "
                          "(300, true, [\"A\", \"B\"]), else as text")
    run.add_argument("-r", "--parameter-raw", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                     help="set a parameter to VALUE as text, unparsed")
    run.add_argument("-o", "--output", metavar="DIR",
                     help="folder for the executed notebook, HTML, journal and summary (default: reports/NAME)")
    run.add_argument("--timeout", type=float, metavar="SECONDS", help="seconds allowed per cell (default: none)")
    run.add_argument("--with-code", action="store_true", help=_WITH_CODE_HELP)
    run.add_argument("--list-parameters", action="store_true",
                     help="print the notebook's documented parameters and exit")

    listing = sub.add_parser("notebooks", help="list the notebooks that ship with tokdiag: name, what each answers, "
                                               "its parameters",
                             description="List the notebooks `tokdiag run NAME` and plans find by name: tokdiag's own "
                                         "and those other installed packages declare (entry point group "
                                         "tokdiag.notebooks).")
    listing.add_argument("--paths", action="store_true", help="also print where each notebook file is")

    batch = sub.add_parser("batch", help="run a plan of notebooks and parameter sets, several at once",
                           description="Run every notebook of PLAN (YAML) in its own kernel, JOBS at a time, "
                                       "and write OUTPUT/index.html.",
                           epilog=EPILOG.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    batch.add_argument("plan", metavar="PLAN", help="the plan file (YAML)")
    batch.add_argument("-j", "--jobs", type=int, metavar="N", help="runs at once (default: the plan's jobs, else 2)")
    batch.add_argument("-o", "--output", metavar="DIR", default="reports",
                       help="folder for the run folders and index.html (default: reports)")
    batch.add_argument("-q", "--quiet", action="store_true", help="no progress lines")
    batch.add_argument("--cluster", metavar="ADDRESS",
                       help="run each run as a Dask task: tcp://HOST:8786 (a running `dask scheduler`) or local:N "
                            "(N worker processes here); needs pip install 'tokdiag[cluster]'")
    batch.add_argument("--retries", type=int, default=0, metavar="N",
                       help="with --cluster: run a run whose worker or kernel died again, up to N times, "
                            "on another worker (default: 0)")
    batch.add_argument("--with-code", action="store_true", help=_WITH_CODE_HELP)

    report = sub.add_parser("report", help="an HTML report from journal files alone (e.g. from a service)",
                            description="Load JOURNAL files written by tokdiag and write an HTML report. The "
                                        "journals of one service's worker processes (named STEM.pidNNNNNNN.jsonl "
                                        "by tokdiag attach, or by td.record in each worker) are reported as one "
                                        "service: each process and their total (service.html).",
                            epilog="examples:\n  tokdiag report runs/service.jsonl -o reports/service\n"
                                   "  tokdiag report runs/svc.jsonl --limit 4GiB -o reports/svc   "
                                   "# the -o of tokdiag attach: its svc.pid*.jsonl",
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    _journal_arguments(report, "journal files (.jsonl); for a service also the -o path given to tokdiag attach",
                       "folder for the report (default: reports/report-STEM[+STEM...], after the journals); "
                       "a folder holding the report of other journals is refused")
    report.add_argument("--service", action="store_true",
                        help="report the journals as one service's processes (found by their names otherwise)")
    report.add_argument("--limit", metavar="SIZE",
                        help="the memory limit for the time to the limit, e.g. 4GiB (default: the one recorded)")

    compare = sub.add_parser("compare", help="an A/B report of two or more journals, the first the baseline",
                             description="Load JOURNAL files and write an A/B report: what changed against the "
                                         "first (fixed, less growth, new leak...), each run's answer, the top "
                                         "growers of every run. The last line printed says whether a leak was "
                                         "found, and in which run.",
                             epilog="example:\n  tokdiag compare runs/before.jsonl runs/after.jsonl "
                                    "--name before --name fixed",
                             formatter_class=argparse.RawDescriptionHelpFormatter)
    _journal_arguments(compare, "journal files (.jsonl), the baseline first",
                       "folder for the report (default: reports/compare-A-vs-B, after the journals)")

    attach = sub.add_parser("attach", help="record a running Python service (no code change) into a journal",
                            description="Start a recorder inside running Python process(es) PID (CPython 3.11-3.13, "
                                        "x86-64 Linux; ptrace), journal snapshots, and leave cleanly at the end, on "
                                        "Ctrl-C, or when this command is killed.",
                            epilog="example:\n  tokdiag attach 12345 --for 10m --every 30s --watch RewardAgent "
                                   "-o service.jsonl\n  python -c \"import tokdiag as td; "
                                   "print(td.load('service.jsonl').verdicts())\"",
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    attach.add_argument("pids", nargs="+", metavar="PID", help="the service's process id(s); a parent's Python "
                        "children are attached too (one journal each)")
    attach.add_argument("--for", dest="for_", default="10m", metavar="DURATION",
                        help="how long to record: 30s, 10m, 2h (default 10m; 0 = until Ctrl-C)")
    attach.add_argument("--every", default="30s", metavar="DURATION", help="seconds between snapshots (default 30s)")
    attach.add_argument("--watch", action="append", default=[], metavar="A,B",
                        help="class names to count and size (qualified, bare or glob; repeatable)")
    attach.add_argument("--cache", action="append", default=[], metavar="MODULE:ATTR",
                        help="a cache to measure, as the service names it (repeatable)")
    attach.add_argument("--budget-mb", type=float, metavar="N",
                        help="stop recording (never the service) when its RSS passes N MiB")
    attach.add_argument("--max-mb", type=float, default=64.0, metavar="N",
                        help="cap of each journal: recording stops there (default 64)")
    attach.add_argument("--disk", action="append", default=[], metavar="PATH",
                        help="a directory the service writes: follow its bytes and files (repeatable)")
    attach.add_argument("--limit", metavar="SIZE",
                        help="the memory limit the service is killed at (4GiB, 512MiB), for the time to the limit "
                             "(default: its cgroup's memory.max, recorded anyway)")
    attach.add_argument("--no-census", action="store_true", help="skip the per-type census (a shorter pause)")
    attach.add_argument("--no-children", action="store_true", help="attach to the given PIDs only")
    attach.add_argument("--start-timeout", type=float, default=10.0, metavar="SECONDS",
                        help="how long the service's main thread has to run the bootstrap (default 10)")
    attach.add_argument("--overwrite", action="store_true", help="replace existing journals")
    attach.add_argument("-o", "--output", metavar="JOURNAL",
                        help="journal file (default tokdiag-PID.jsonl); several processes get JOURNAL.pidNNNNNNN.jsonl")
    return parser


def _shown(path: Path) -> str:
    """``path`` relative to the current folder when it is inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _cmd_run(args: argparse.Namespace) -> int:
    from tokdiag.report.batch import run_one
    from tokdiag.report.catalog import resolve
    from tokdiag.report.kernel import check_parameters, notebook_parameters
    from tokdiag.report.plan import RUN_FOLDER_PARAMETERS, RunSpec, run_folder_parameters

    notebook = resolve(args.notebook, base_dirs=(".",))  # a path, or a shipped notebook's name
    documented = notebook_parameters(notebook)  # raises ConfigError for an unreadable notebook
    if args.list_parameters:
        if documented is None:
            print(f"{notebook.name} has no cell tagged 'parameters'; it takes no parameters")
        else:
            for parameter in documented.values():
                print(parameter.describe())
        return 0
    parameters: dict[str, Any] = {name: parse_value(value) for name, value in args.parameter}
    parameters.update({name: value for name, value in args.parameter_raw})
    check_parameters(notebook, parameters, reserved=tuple(RUN_FOLDER_PARAMETERS))
    folder = Path(args.output) if args.output else Path("reports") / notebook.stem
    spec = RunSpec(index=1, notebook=notebook.resolve(), label=str(args.notebook), parameters=parameters,
                   folder_name=folder.name,
                   folder_parameters=run_folder_parameters(documented), with_code=args.with_code)
    print(f"tokdiag run: {notebook.name} -> {_shown(folder)}/", file=sys.stderr)
    result = run_one(spec, folder, timeout=args.timeout)
    shown = _shown(result.html) if result.html else _shown(result.folder)
    if result.failure is not None:
        print(f"tokdiag run: {notebook.name} failed at {result.failure.describe()}; see {shown}", file=sys.stderr)
        return 1
    print(f"tokdiag run: ok in {result.duration_s:.1f}s; open {shown}", file=sys.stderr)
    for line in _answer_lines(result.folder):
        print(line)
    return 0


def _answer_lines(folder: Path, command: str = "run") -> list[str]:
    """The answer the run left in ``folder/summary.json``, then one line: leak found or not, and every warning."""
    from tokdiag.report.summary import SUMMARY_FILE, WARNING, read_summary

    summary = read_summary(folder)
    if summary is None:
        return [f"tokdiag {command}: the notebook wrote no {SUMMARY_FILE}, so there is no answer to print; "
                "see its HTML"]
    try:
        answer = json.loads((folder / SUMMARY_FILE).read_text(encoding="utf-8")).get("answer") or {}
    except (OSError, ValueError, AttributeError):
        answer = {}
    findings = [f for f in answer.get("findings") or [] if isinstance(f, dict)] if isinstance(answer, dict) else []
    if findings:
        lines = summary.answer.splitlines()
        leaking: dict[str, list[str]] = {}  # run -> what leaks in it
        for f in findings:
            if f.get("kind") == "leak" or (f.get("kind") == "process" and f.get("verdict") == "leak"):
                what = "RSS" if f.get("kind") == "process" else str(f.get("name") or f.get("owner"))
                leaking.setdefault(str(f.get("run", "")), []).append(what)
        several = len(answer.get("runs") or []) > 1  # say which run leaks (tokdiag compare)
        leaks = [f"{run}: {', '.join(dict.fromkeys(what))}" if several else ", ".join(dict.fromkeys(what))
                 for run, what in leaking.items()]
        warned = [str(f.get("text", "")).removeprefix("Warning: ") for f in findings
                  if f.get("kind") in ("warning", "status")]
        if leaks:
            head = f"leak found ({'; '.join(leaks)})"
        elif answer.get("all_clear"):
            head = "no leak found"
        elif any(f.get("kind") == "undecided" for f in findings):
            head = "no leak shown, but undecided (see the answer above: run longer)"
        else:
            head = "no leak found"
    else:  # a notebook that wrote headlines and no answer
        lines = [f"{h.subject}: {h.verdict}" + (f" ({h.detail})" if h.detail else "")
                 for h in summary.headlines if h.verdict != WARNING]
        leaks = [h.subject for h in summary.headlines if h.verdict == "leak"]
        warned = [h.detail or h.subject for h in summary.warnings]
        head = f"leak found ({', '.join(leaks)})" if leaks else "no leak in the headlines"
    return [*lines, f"tokdiag {command}: " + "; ".join([head, *(f"warning: {w.rstrip('.')}" for w in warned)])]


def _cmd_notebooks(args: argparse.Namespace) -> int:
    from tokdiag.report.catalog import describe, notebooks

    found = notebooks()
    width = max((len(n.name) for n in found), default=0) + 2
    for info in found:
        answers, parameters = describe(info)
        print(f"{info.name:<{width}}{answers} [{info.source}]")
        print(f"{'':<{width}}parameters: {', '.join(parameters) or '(none)'}")
        if args.paths:
            print(f"{'':<{width}}{info.path}")
    print(
        "\nrun one: tokdiag run NAME -p PARAMETER VALUE ...; its parameters' help: tokdiag run NAME --list-parameters"
    )
    return 0


def _cmd_batch(args: argparse.Namespace) -> int:
    from tokdiag.report.batch import run_batch
    from tokdiag.report.plan import load_plan

    plan = load_plan(args.plan)
    result = run_batch(plan, args.output, jobs=args.jobs, progress=None if args.quiet else sys.stderr,
                       cluster=args.cluster, retries=args.retries, with_code=args.with_code)
    print(_shown(result.index))
    return 1 if result.failed else 0


def _cmd_report(args: argparse.Namespace) -> int:
    from tokdiag.recording.service import one_service
    from tokdiag.report.journal_report import default_folder, report_from_journals
    from tokdiag.report.service import report_from_service

    if args.service or one_service(args.journals):
        if args.names:
            from tokdiag.errors import ConfigError

            raise ConfigError("--name names the runs of separate journals; a service's processes are named after "
                              "their process ids: drop --name, or pass --service only for one service's journals")
        page = report_from_service(args.journals, args.output or default_folder(args.journals), limit=args.limit,
                                   with_code=args.with_code)
    else:
        page = report_from_journals(args.journals, args.output, limit=args.limit, names=args.names,
                                    with_code=args.with_code)
    print(_shown(page))
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from tokdiag.report.journal_report import compare_journals

    page = compare_journals(args.journals, args.output, names=args.names, with_code=args.with_code)
    print(f"tokdiag compare: open {_shown(page)}", file=sys.stderr)
    for line in _answer_lines(page.parent, "compare"):
        print(line)
    return 0


def _cmd_attach(args: argparse.Namespace) -> int:
    from tokdiag.recording.attach import attach_command

    return attach_command(args)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``tokdiag`` command with ``argv`` (default: ``sys.argv[1:]``); return the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(list(argv) if argv is not None else None)
        handler = {"run": _cmd_run, "notebooks": _cmd_notebooks, "batch": _cmd_batch, "report": _cmd_report,
                   "compare": _cmd_compare,
                   "attach": _cmd_attach}[args.command]
        return handler(args)
    except SystemExit as exc:  # argparse: --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    except TokdiagError as exc:
        print(f"tokdiag: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # e.g. an output folder that cannot be written
        where = f" {exc.filename!r}" if exc.filename else ""
        print(f"tokdiag: error: cannot use{where}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("tokdiag: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
