"""The package's floors: each imports only its own floor and those below, and the entry points (`rad`, the Prefect
flows) go through the API, one API function per command and per task. Read from the source, imports inside
functions included."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
# lowest first: a module may import its own floor and the floors before it, never one after it
FLOORS = (
    ("core", ("reliable_ad.errors", "reliable_ad.labels", "reliable_ad.stats", "reliable_ad.paths")),
    ("data", ("reliable_ad.data",)),
    ("models", ("reliable_ad.models",)),
    ("judge", ("reliable_ad.judge",)),
    ("generation", ("reliable_ad.generation",)),
    ("review", ("reliable_ad.review",)),
    ("training", ("reliable_ad.training",)),
    ("registry", ("reliable_ad.registry",)),
    ("report", ("reliable_ad.report",)),
    ("api", ("reliable_ad.api", "reliable_ad.params")),
    ("entry", ("reliable_ad.cli", "flows")),
)
# what `rad` and the flows may import of the package: the API, the settings and the class of the user's errors
ENTRY_ALLOWED = ("reliable_ad.api", "reliable_ad.params", "reliable_ad.paths", "reliable_ad.errors")


def _modules() -> dict[str, Path]:
    files = [*(SRC / "reliable_ad").rglob("*.py"), *(ROOT / "flows").glob("*.py")]
    names = {}
    for file in files:
        parts = file.relative_to(SRC if file.is_relative_to(SRC) else ROOT).with_suffix("").parts
        names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = file
    return names


MODULES = _modules()


def imports(module: str) -> set[str]:
    """The package's (and the flows') modules that `module` imports anywhere in its file."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {
                f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in MODULES else node.module for a in node.names
            }
    return {name for name in found if name.split(".")[0] in ("reliable_ad", "flows") and name != "reliable_ad"}


def floor(module: str) -> int:
    for level, (_, prefixes) in enumerate(FLOORS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return level
    raise AssertionError(f"{module} is on no floor: add it to FLOORS")


def test_every_module_is_on_a_floor() -> None:
    for module in MODULES:
        if module != "reliable_ad" and module != "flows":
            floor(module)


@pytest.mark.parametrize("module", sorted(m for m in MODULES if m not in ("reliable_ad", "flows")))
def test_no_import_runs_up_a_floor(module: str) -> None:
    up = {name: FLOORS[floor(name)][0] for name in imports(module) if floor(name) > floor(module)}
    assert not up, f"{module} ({FLOORS[floor(module)][0]}) imports from higher floors: {up}"


@pytest.mark.parametrize("module", ["reliable_ad.cli", "flows.pipeline", "flows.deploy"])
def test_the_entry_points_import_only_the_api_and_the_settings(module: str) -> None:
    other = {name for name in imports(module) if name.startswith("reliable_ad") and not name.startswith(ENTRY_ALLOWED)}
    assert not other, f"{module} reaches past the API into {sorted(other)}"


def _api_calls(function: ast.FunctionDef) -> set[str]:
    """The API functions a function calls (`api.name(...)`); the API's classes (`api.RoundData`) do not count."""
    return {
        node.func.attr
        for node in ast.walk(function)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
        and node.func.value.id == "api"
        and not node.func.attr[0].isupper()
    }


def _decorated(module: str, decorator: str) -> list[ast.FunctionDef]:
    """The functions of `module` decorated with `<anything>.<decorator>(...)` or `@<decorator>`."""

    def name(node: ast.expr) -> str:
        node = node.func if isinstance(node, ast.Call) else node
        return node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else ""

    tree = ast.parse(MODULES[module].read_text())
    return [
        node
        for node in tree.body
        if isinstance(node, ast.FunctionDef) and any(name(d) == decorator for d in node.decorator_list)
    ]


@pytest.mark.parametrize(("module", "decorator"), [("reliable_ad.cli", "command"), ("flows.pipeline", "task")])
def test_every_command_and_task_calls_one_api_function(module: str, decorator: str) -> None:
    functions = _decorated(module, decorator)
    assert len(functions) > 10
    calls = {function.name: _api_calls(function) for function in functions}
    assert {name: found for name, found in calls.items() if len(found) != 1} == {}


# tests of the project rather than of one module: the pipeline by DVC, dvc.yaml, docker/, the docs, this file
PROJECT_TESTS = {"test_architecture", "test_docker_files", "test_docs", "test_dvc_pipeline", "test_dvc_yaml"}


def test_tests_mirror_src() -> None:
    """tests/<path>/test_<module>[_<topic>].py tests src/reliable_ad/<path>/<module>.py (flows/ as flows/); the
    integration folder and the project's own tests aside."""
    tests = ROOT / "tests"
    orphans = []
    for test in sorted(tests.rglob("test_*.py")):
        folder = test.parent.relative_to(tests)
        if folder.parts[:1] == ("integration",) or (folder == Path(".") and test.stem in PROJECT_TESTS):
            continue
        source = ROOT / folder if folder.parts[:1] == ("flows",) else SRC / "reliable_ad" / folder
        name = test.stem.removeprefix("test_")
        if not any(name == m.stem or name.startswith(m.stem + "_") for m in source.glob("*.py")):
            orphans.append(str(test.relative_to(ROOT)))
    assert orphans == []


# the tiny generator is the embedded world's by definition: pretrained once on RF1M-synth and frozen (a team
# brings SD1.5); everything else under generation/ and training/ gets its products and people from a source
WORLD_BOUND = {"reliable_ad.training.pretrain_generator"}


@pytest.mark.parametrize(
    "module", sorted(m for m in MODULES if m.startswith(("reliable_ad.generation", "reliable_ad.training")))
)
def test_the_method_does_not_reach_into_the_synthetic_world(module: str) -> None:
    world = {
        name for name in imports(module) if name.startswith(("reliable_ad.data.synth", "reliable_ad.data.reviewer"))
    }
    assert module in WORLD_BOUND or not world, f"{module} imports the synthetic world: {sorted(world)}"
