"""tokdiag.recording.targets: the one "package.module:attr" resolver, and your own step function from it."""

from __future__ import annotations

import pathlib
import sys
import textwrap
import uuid

import pytest

from tokdiag.errors import TargetError, TokdiagError
from tokdiag.recording.targets import BoundStep, load, resolve

JOBS = '''
CALLS = []
CONST = 3


def step(i):
    CALLS.append(i)
    return i * 2


def two(state, i):
    state["seen"].append(i)
    return len(state["seen"])


def zero():
    return 0


def make_state():
    CALLS.append("setup")
    return {"seen": []}


def make_none():
    CALLS.append("setup-none")


def needs_arg(x):
    return x


def bad_setup():
    raise RuntimeError("setup exploded")


class Runner:
    @staticmethod
    def step(i):
        return i + 1
'''


@pytest.fixture
def pkg(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A throwaway package on sys.path with a unique name; removed from sys.modules afterwards."""
    name = f"tdwl_{uuid.uuid4().hex[:8]}"
    root = tmp_path / name
    root.mkdir()
    (root / "__init__.py").write_text("")
    (root / "jobs.py").write_text(textwrap.dedent(JOBS))
    (root / "broken_dep.py").write_text("import tdwl_missing_dependency_xyz\n\ndef step(i):\n    return i\n")
    (root / "raises.py").write_text("raise ValueError('boom at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    for mod in [m for m in sys.modules if m == name or m.startswith(name + ".")]:
        del sys.modules[mod]


def test_resolves_a_function_taking_the_step_index(pkg: str) -> None:
    step = load(f"{pkg}.jobs:step")
    assert step(3) == 6
    assert step is sys.modules[f"{pkg}.jobs"].step


def test_resolves_a_dotted_attribute(pkg: str) -> None:
    assert load(f"{pkg}.jobs:Runner.step")(1) == 2


@pytest.mark.parametrize("bad", ["nocolon", ":step", "mod:", "a:b:c", "  :  "])
def test_malformed_target(bad: str) -> None:
    with pytest.raises(TargetError, match="malformed.*'package.module:function'") as info:
        load(bad)
    assert repr(bad) in str(info.value)


def test_target_must_be_a_string() -> None:
    with pytest.raises(TargetError, match="must be a string, got 42"):
        load(42)  # type: ignore[arg-type]


def test_missing_top_level_module() -> None:
    with pytest.raises(TargetError, match="module 'tdwl_no_such_module_zzz' not found") as info:
        load("tdwl_no_such_module_zzz:step")
    assert isinstance(info.value.__cause__, ModuleNotFoundError)


def test_missing_submodule_suggests_close_names(pkg: str) -> None:
    with pytest.raises(TargetError, match=rf"module '{pkg}.jbos' not found .*\(did you mean 'jobs'\?\)"):
        load(f"{pkg}.jbos:step")


def test_nested_import_failure_is_not_reported_as_a_missing_module(pkg: str) -> None:
    with pytest.raises(TargetError) as info:
        load(f"{pkg}.broken_dep:step")
    message = str(info.value)
    assert "exists but importing it failed" in message
    assert "tdwl_missing_dependency_xyz" in message
    assert "not found" not in message.split("because")[0]


def test_module_that_raises_at_import(pkg: str) -> None:
    with pytest.raises(TargetError, match="raised ValueError: boom at import"):
        load(f"{pkg}.raises:step")


def test_missing_attribute_lists_close_matches(pkg: str) -> None:
    with pytest.raises(TargetError, match=r"has no attribute 'stpe' \(did you mean 'step'\?\)"):
        load(f"{pkg}.jobs:stpe")


def test_not_callable(pkg: str) -> None:
    with pytest.raises(TargetError, match=r"is a int \(3\), not callable"):
        load(f"{pkg}.jobs:CONST")


def test_wrong_signature_no_arguments(pkg: str) -> None:
    with pytest.raises(TargetError, match=r"signature \(\) and cannot be called as step\(i\)"):
        load(f"{pkg}.jobs:zero")


def test_two_argument_step_without_setup_points_to_setup(pkg: str) -> None:
    with pytest.raises(TargetError, match=r"signature \(state, i\).*setup="):
        load(f"{pkg}.jobs:two")


def test_setup_state_is_passed_first(pkg: str) -> None:
    step = load(f"{pkg}.jobs:two", setup=f"{pkg}.jobs:make_state")
    assert isinstance(step, BoundStep)
    assert [step(i) for i in range(3)] == [1, 2, 3]
    assert step.state == {"seen": [0, 1, 2]}
    assert sys.modules[f"{pkg}.jobs"].CALLS == ["setup"]


def test_setup_returning_none_keeps_a_one_argument_step(pkg: str) -> None:
    step = load(f"{pkg}.jobs:step", setup=f"{pkg}.jobs:make_none")
    assert step(1) == 2
    assert sys.modules[f"{pkg}.jobs"].CALLS == ["setup-none", 1]


def test_setup_state_with_a_one_argument_step(pkg: str) -> None:
    with pytest.raises(TargetError, match=r"setup .* returned a dict, so the target is called as step\(state, i\)"):
        load(f"{pkg}.jobs:step", setup=f"{pkg}.jobs:make_state")


def test_setup_target_errors_name_setup(pkg: str) -> None:
    with pytest.raises(TargetError, match=r"^setup .*has no attribute 'nope'"):
        load(f"{pkg}.jobs:step", setup=f"{pkg}.jobs:nope")
    with pytest.raises(TargetError, match=r"cannot be called without arguments"):
        load(f"{pkg}.jobs:step", setup=f"{pkg}.jobs:needs_arg")


def test_setup_exception_propagates_with_a_note(pkg: str) -> None:
    with pytest.raises(RuntimeError, match="setup exploded") as info:
        load(f"{pkg}.jobs:step", setup=f"{pkg}.jobs:bad_setup")
    assert any("bad_setup" in note for note in info.value.__notes__)


def test_target_error_is_a_tokdiag_error_and_a_lookup_error() -> None:
    with pytest.raises(TokdiagError):
        load("nocolon")
    with pytest.raises(LookupError):
        load("nocolon")


def test_resolve_returns_any_attribute_not_only_callables(pkg: str) -> None:
    assert resolve(f"{pkg}.jobs:CONST", "cache") == 3
    assert resolve(f"{pkg}.jobs:CALLS", "cache") is sys.modules[f"{pkg}.jobs"].CALLS


def test_a_cache_target_is_resolved_by_the_same_resolver_with_its_own_wording(pkg: str) -> None:
    import tokdiag as td

    # the cache probe's messages: role "cache", and 'package.module:attribute' as the expected form
    with pytest.raises(TargetError, match=r"^cache 'nocolon' is malformed: expected 'package.module:attribute'"):
        td.cache("nocolon")
    # ... with the resolver's hints: close sibling modules, and a module that exists but fails to import
    with pytest.raises(TargetError, match=rf"^cache '{pkg}.jbos:CALLS': module '{pkg}.jbos' not found .*"
                                          r"\(did you mean 'jobs'\?\), so it cannot be imported"):
        td.cache(f"{pkg}.jbos:CALLS")
    with pytest.raises(TargetError, match=r"^cache .*exists but importing it failed.*tdwl_missing_dependency_xyz"):
        td.cache(f"{pkg}.broken_dep:step")
    with pytest.raises(TargetError, match=r"^cache .*: 'tiktoken.registry' has no attribute 'ENCODNGS' "
                                          r"\(did you mean 'ENCODINGS'\?\)"):
        td.cache("tiktoken.registry:ENCODNGS")


def test_a_dotted_target_without_a_colon_gets_the_colon_suggested(pkg: str) -> None:
    # the longest prefix that is a module takes the colon: a class's method stays dotted after it
    with pytest.raises(TargetError, match=rf"is malformed: .*; did you mean '{pkg}\.jobs:Runner\.step'\?$"):
        load(f"{pkg}.jobs.Runner.step")
    with pytest.raises(TargetError, match=r"did you mean 'myapp_td_missing\.jobs:handle'\?$"):  # no such module
        load("myapp_td_missing.jobs.handle")
    with pytest.raises(TargetError, match=r"did you mean 'tiktoken\.registry:ENCODINGS'\?$"):
        resolve("tiktoken.registry.ENCODINGS", "cache")
