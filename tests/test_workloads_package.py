"""The built-in workloads' package: cheap to import, and measured from outside the tool."""

from __future__ import annotations

import pathlib
import subprocess
import sys


def test_importing_the_workloads_is_lazy() -> None:
    code = (
        "import sys, tokdiag_workloads as w\n"
        "heavy = [m for m in ('tokdiag_workloads.tokenizers', 'tokdiag_workloads.agents', "
        "'tokdiag_workloads.aworld', 'aworld') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "assert w.vocab.find_vocabulary is not None\n"
        "assert 'tokdiag_workloads.vocab' in sys.modules and 'aworld' not in sys.modules\n"
        "import tokdiag_workloads.aworld\n"
        "assert 'aworld' not in sys.modules  # the AWorld workloads import aworld when first used\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=pathlib.Path(__file__).parents[1])
