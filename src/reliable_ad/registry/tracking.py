"""MLflow tracking setup and lineage: where runs go, and what every run records about its inputs.

Default store: SQLite + local artifacts under ``.tracking/`` in the project (override with
``MLFLOW_TRACKING_URI``, e.g. a server backed by PostgreSQL). The SQLite database is created once, under a
file lock, before anything else touches it: several processes creating a new database at the same moment
corrupt it (measured, see STACK_NOTES).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from filelock import FileLock

TRACKING_DIR = Path(".tracking")


def tracking_uri(root: Path = Path(".")) -> str:
    """The store of the project at `root`: MLFLOW_TRACKING_URI, else the SQLite database under root/.tracking."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{(root / TRACKING_DIR / 'mlflow.db').resolve()}"


def sqlite_file(uri: str) -> Path | None:
    """The database file of a SQLite store's URI; None for any other store (a server, PostgreSQL)."""
    return Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None


def artifact_root() -> str:
    return os.environ.get("RAD_ARTIFACT_ROOT") or (TRACKING_DIR / "artifacts").resolve().as_uri()


def setup(experiment: str) -> str:
    """Point MLflow at the store (creating a SQLite store safely) and return the experiment id."""
    import mlflow

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    database = sqlite_file(uri)
    if database is not None:
        database.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(database) + ".lock"):
            return _experiment_id(experiment)
    return _experiment_id(experiment)


def _experiment_id(name: str) -> str:
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    return str(client.create_experiment(name, artifact_location=f"{artifact_root()}/{name}"))


def git_commit(repo: Path = Path(".")) -> dict[str, str]:
    """The commit the code ran at, and whether the tree had uncommitted changes."""

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return ""

    commit = git("rev-parse", "HEAD")
    dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    return {"git_commit": commit or "unknown", "git_dirty": str(dirty).lower()}


def dvc_hash(path: Path) -> str:
    """The DVC content hash of a tracked output, from dvc.lock (or a .dvc file); 'untracked' otherwise."""
    import yaml

    target = path.as_posix().rstrip("/")
    lock = Path("dvc.lock")
    if lock.exists():
        stages: dict[str, Any] = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
        for stage in stages.values():
            for out in stage.get("outs", []):
                if str(out.get("path", "")).rstrip("/") == target:
                    return str(out.get("md5") or out.get("hash") or "unknown")
    dvc_file = Path(target + ".dvc")
    if dvc_file.exists():
        outs = (yaml.safe_load(dvc_file.read_text()) or {}).get("outs", [])
        if outs:
            return str(outs[0].get("md5", "unknown"))
    return "untracked"


def lineage(data: dict[str, Path]) -> dict[str, str]:
    """Tags every run carries: code version and the DVC hash of each named input."""
    tags = git_commit()
    for name, path in data.items():
        tags[f"data.{name}.path"] = path.as_posix()
        tags[f"data.{name}.dvc_hash"] = dvc_hash(path)
    return tags


def model_lineage(models: dict[str, str | Path]) -> dict[str, str]:
    """Tags naming the models a run used; a folder also by the SHA-256 of its files, since its path alone does
    not say which weights it held (a registry name@alias is kept as given)."""
    from reliable_ad.data.hashing import folder_hash

    tags = {}
    for name, model in models.items():
        tags[f"model.{name}"] = str(model)
        if Path(model).is_dir():
            tags[f"model.{name}.folder_hash"] = folder_hash(Path(model))
    return tags


def flat_params(values: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested settings as MLflow params: dotted keys, every value as text."""
    flat: dict[str, str] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat |= flat_params(value, f"{prefix}{key}.")
        else:
            flat[f"{prefix}{key}"] = str(value)
    return flat


def log_run(
    run_name: str,
    metrics: dict[str, Any],
    params: dict[str, str],
    tags: dict[str, str],
    artifacts: dict[str, Path],
    experiment: str,
) -> str:
    """One MLflow run of results computed elsewhere: the numeric top-level metrics (NaN kept: it says a figure is
    undefined), params, the code version plus `tags`, and files or folders (artifact folder -> path).
    Returns the run id."""
    import mlflow

    experiment_id = setup(experiment)
    numeric = {k: float(v) for k, v in metrics.items() if isinstance(v, int | float) and not isinstance(v, bool)}
    with mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=git_commit() | tags) as run:
        mlflow.log_params(params)
        mlflow.log_metrics(numeric)
        for folder, path in artifacts.items():
            if path.is_dir():
                mlflow.log_artifacts(str(path), folder)
            else:
                mlflow.log_artifact(str(path), folder)
    return str(run.info.run_id)
