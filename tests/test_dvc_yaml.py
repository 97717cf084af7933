"""dvc.yaml cannot drift from the code: each stage runs `rad` with the project's params, lists as code deps every
module its command reaches, tracks params that params.yaml holds, and reads and writes where `Paths` says."""

from __future__ import annotations

import ast
import inspect
import shlex
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from reliable_ad import api, cli
from reliable_ad.params import Params, load_params

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "reliable_ad"
STAGES: dict[str, dict[str, Any]] = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
# reached by every stage and followed no further: the settings tree gathers every floor's config module, and a
# stage meets the config modules it uses through the code that uses them
SETTINGS = "reliable_ad.params"
# files a module reads besides its code (package data): a stage that runs the module depends on them too
DATA_OF = {"reliable_ad.report": ("src/reliable_ad/templates/report.html",)}


def _file(module: str) -> Path:
    path = PACKAGE.parent.joinpath(*module.split("."))
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def _is_module(name: str) -> bool:
    return name.startswith("reliable_ad.") and _file(name).exists()


def _imports(nodes: list[ast.stmt]) -> set[str]:
    """The package's modules these statements import (inside functions too; not under `if TYPE_CHECKING`)."""
    found: set[str] = set()
    for statement in nodes:
        for node in _walk(statement):
            if isinstance(node, ast.Import):
                found |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    nested = f"{node.module}.{alias.name}"
                    found.add(nested if _is_module(nested) else node.module)
    return {name for name in found if _is_module(name)}


def _walk(node: ast.AST) -> Iterator[ast.AST]:
    if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
        return
    yield node
    for child in ast.iter_child_nodes(node):
        yield from _walk(child)


def _api_reach_of(function: Any, seen: set[str]) -> set[str]:
    """What an API function reaches: its module's top-level imports, its own, and those of the API functions it
    calls."""
    module = function.__module__
    tree = ast.parse(inspect.getsource(function))
    top = [node for node in ast.parse(_file(module).read_text()).body if isinstance(node, ast.Import | ast.ImportFrom)]
    reached = {module} | _imports(top) | _imports(tree.body)
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id not in seen:
            owner = getattr(sys.modules[module], node.func.id, None)
            if inspect.isfunction(owner) and owner.__module__.startswith("reliable_ad.api"):
                seen.add(node.func.id)
                reached |= _api_reach_of(owner, seen)
    return reached


def reach(modules: set[str]) -> set[str]:
    """`modules` and everything they import, transitively (whole files: every function's imports count)."""
    done: set[str] = set()
    todo = list(modules)
    while todo:
        module = todo.pop()
        if module in done:
            continue
        done.add(module)
        if module != SETTINGS and not module.startswith("reliable_ad.api"):
            todo += _imports(ast.parse(_file(module).read_text()).body)
    return done


def command_of(stage: str) -> str:
    """The API function a stage's `rad` command calls."""
    words = shlex.split(STAGES[stage]["cmd"])
    assert words[0] == "rad", f"stage {stage} runs {words[0]}, not rad"
    group: Any = typer.main.get_command(cli.app)
    for word in words[1:]:
        group = group.commands[word]
        if not isinstance(group, typer.core.TyperGroup):
            break
    source = ast.parse(inspect.getsource(getattr(cli, group.callback.__name__)))
    (called,) = {
        node.func.attr
        for node in ast.walk(source)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and getattr(node.func.value, "id", "") == "api"
        and not node.func.attr[0].isupper()  # the API's classes (api.RoundData) hold no work
    }
    return called


def code_deps_needed(stage: str) -> set[str]:
    name = command_of(stage)
    modules = reach(_api_reach_of(getattr(api, name), {name}))
    return {str(_file(m).relative_to(ROOT)) for m in modules} | {f for m in modules for f in DATA_OF.get(m, ())}


def _listed(stage: str, kind: str) -> list[str]:
    return [next(iter(entry)) if isinstance(entry, dict) else entry for entry in STAGES[stage].get(kind) or []]


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_stage_runs_rad_on_the_projects_params(stage: str) -> None:
    words = shlex.split(STAGES[stage]["cmd"])
    assert words[0] == "rad" and words[words.index("--params") + 1] == "params.yaml"


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_code_deps_are_the_modules_the_command_reaches(stage: str) -> None:
    """Editing a module a stage runs must make the stage stale, and editing one it does not run must not."""
    listed = {d for d in _listed(stage, "deps") if d.startswith("src/")}
    needed = code_deps_needed(stage)
    assert (sorted(needed - listed), sorted(listed - needed)) == ([], []), f"{stage}: (to add, to drop)"


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_tracked_params_are_in_params_yaml(stage: str) -> None:
    """DVC refuses a stage whose params key params.yaml lacks (a section at its defaults is written `{}`)."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    for key in STAGES[stage].get("params", []):
        node = raw
        for part in key.split("."):
            assert isinstance(node, dict) and part in node, f"stage {stage} tracks {key}, which params.yaml lacks"
            node = node[part]


def test_stages_read_and_write_where_the_project_layout_says() -> None:
    paths = Params().paths
    locations = {Path(v) for v in paths.model_dump().values() if isinstance(v, Path)}
    locations |= {paths.rfnet_model, paths.rfft_controlnet}
    assert load_params(ROOT / "params.yaml").paths == paths, "params.yaml moves paths that dvc.yaml names"
    outside = set()
    for name in STAGES:
        for kind in ("deps", "outs", "metrics", "plots"):
            for entry in _listed(name, kind):
                path = Path(entry)
                if path.parts[0] in ("src", "configs"):
                    continue
                if not any(path.is_relative_to(loc) or loc.is_relative_to(path) for loc in locations):
                    outside.add(f"{name}: {entry}")
    assert not outside, f"paths that `Paths` does not name: {sorted(outside)}"
