"""The model registry (list, promote, roll back, the champion's files) and the report over everything."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from reliable_ad.params import Params


def list_models(params: Params, name: str) -> list[dict[str, Any]]:
    """Every version of a registered model with its aliases and its gate decision (what the report shows)."""
    from reliable_ad.registry.gate import version_rows
    from reliable_ad.registry.tracking import setup

    setup(params.paths.experiment)
    return version_rows(name)


def promote(params: Params, name: str, version: str) -> dict[str, Any]:
    """Make a version champion by hand; refused, with its numbers, unless it passed its gate."""
    from reliable_ad.registry.gate import promote as run
    from reliable_ad.registry.tracking import setup

    setup(params.paths.experiment)
    return dict(run(name, version).__dict__)


def rollback(params: Params, name: str) -> dict[str, Any]:
    """Make the previous champion champion again."""
    from reliable_ad.registry.gate import rollback as run
    from reliable_ad.registry.tracking import setup

    setup(params.paths.experiment)
    return {"name": name, "champion": run(name)}


def champion_folder(params: Params, name: str) -> Path | None:
    """The champion's files, or None when the registry has no champion yet."""
    from reliable_ad.registry.models import champion

    found = champion(name, params.paths.experiment)
    return None if found is None else found.folder


def report(params: Params, root: Path, out: Path, registry: bool = True) -> Path:
    """One self-contained HTML page over the pipeline's outputs under `root` (and, with `registry`, the MLflow
    registry's versions and decisions)."""
    from reliable_ad.report import build_report

    return build_report(root, out, params.paths, registry=registry)
