"""The model registry in one place: log, register, look up, download, promote, roll back.

Registered models carry aliases ``champion`` and ``challenger``. Every decision is written onto the model
version as tags (``gate.*``), so the registry itself is the audit trail. Model files are logged as MLflow
"models from code" (a reviewed Python file + the model folder with safetensors): loading never unpickles.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reliable_ad.errors import UserError
from reliable_ad.registry.tracking import setup

CHAMPION = "champion"
CHALLENGER = "challenger"
PYFUNC_FILES = {
    "rfnet": Path(__file__).with_name("rfnet_pyfunc.py"),
    "controlnet": Path(__file__).with_name("controlnet_pyfunc.py"),
}


class RegistryError(UserError, RuntimeError):
    """A registry request that cannot be honoured (no such version, no champion to roll back to...)."""


@dataclass(frozen=True)
class Version:
    name: str
    version: str
    run_id: str
    tags: dict[str, str]
    aliases: tuple[str, ...]


def _client(uri: str | None = None) -> Any:
    """A client of the store `uri`; None: the store `setup` pointed MLflow at."""
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def log_model_folder(kind: str, folder: Path, name: str) -> Version:
    """Log `folder` in the active run and register it as a new version of `name` (kind picks the loader)."""
    import mlflow

    if kind not in PYFUNC_FILES:
        raise RegistryError(f"no registry loader for model kind {kind!r}; known: {sorted(PYFUNC_FILES)}")
    info = mlflow.pyfunc.log_model(
        name=kind,
        python_model=str(PYFUNC_FILES[kind]),
        artifacts={"model": str(folder)},
        registered_model_name=name,
        pip_requirements=["reliable-ad"],
    )
    version = info.registered_model_version
    if version is None:
        raise RegistryError(f"MLflow did not register {name} for {folder}")
    return get_version(name, str(version))


def get_version(name: str, version: str, uri: str | None = None) -> Version:
    mv = _client(uri).get_model_version(name, version)
    return Version(name, str(mv.version), mv.run_id, dict(mv.tags), tuple(mv.aliases))


def by_alias(name: str, alias: str) -> Version | None:
    """The version holding `alias`, or None when the model or the alias does not exist.

    Any other failure (the server is down, a server error) is raised: it must not look like "no champion".
    """
    from mlflow.exceptions import MlflowException

    try:
        mv = _client().get_model_version_by_alias(name, alias)
    except MlflowException as error:
        if error.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise
    return Version(name, str(mv.version), mv.run_id, dict(mv.tags), tuple(mv.aliases))


def set_alias(name: str, alias: str, version: str) -> None:
    _client().set_registered_model_alias(name, alias, version)


def tag_version(name: str, version: str, tags: dict[str, Any]) -> None:
    client = _client()
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value if isinstance(value, str) else json.dumps(value))


def list_versions(name: str, uri: str | None = None) -> list[Version]:
    """Every version of `name` in the store `uri`, oldest first (read one by one: MLflow's search leaves the
    aliases out)."""
    found = _client(uri).search_model_versions(f"name='{name}'")
    return sorted((get_version(name, str(v.version), uri) for v in found), key=lambda v: int(v.version))


def download_model(uri: str, experiment: str) -> Path:
    """Download a registered model folder: "name@alias" or "name/version" -> local folder of the model."""
    import mlflow

    setup(experiment)
    name, sep, rest = uri.partition("@")
    model_uri = f"models:/{name}@{rest}" if sep else f"models:/{uri}"
    local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri))
    folder = local / "artifacts" / "model"
    if not folder.exists():  # MLflow names the artifact folder after the artifact's file name
        candidates = (
            [p for p in (local / "artifacts").iterdir() if p.is_dir()] if (local / "artifacts").exists() else []
        )
        if len(candidates) != 1:
            raise RegistryError(f"{uri}: downloaded model has no single artifact folder under {local / 'artifacts'}")
        folder = candidates[0]
    return folder


@dataclass(frozen=True)
class Champion:
    version: Version
    folder: Path  # its files, downloaded


def champion(name: str, experiment: str) -> Champion | None:
    """The champion of `name` with its files; None when there is no champion yet."""
    setup(experiment)
    found = by_alias(name, CHAMPION)
    return None if found is None else Champion(found, download_model(f"{name}@{CHAMPION}", experiment))
