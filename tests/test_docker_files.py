"""The files of docker/ and the GPU guide (docs/gpu.md) hold together, checked without a Docker engine.

Compose wiring (services, health checks, start order, URLs), the build context (every COPY source exists and
is not dropped by .dockerignore), the torch pins against requirements/lock.txt, no secret in .env.example,
the accelerate configs, and the GPU guide's real-world params against the package's config models.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
DOCKERFILES = {"cpu": DOCKER / "Dockerfile.cpu", "gpu": DOCKER / "Dockerfile.gpu"}
LOCK = ROOT / "requirements" / "lock.txt"
ACCELERATE = {name: DOCKER / "accelerate" / f"{name}.yaml" for name in ("multi_gpu", "multi_node")}
TELEMETRY_OFF = {
    "DO_NOT_TRACK": "1",
    "DVC_NO_ANALYTICS": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "GX_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "HF_HUB_OFFLINE": "1",
}


# ------------------------------------------------------------------------------------------------ helpers


def _compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


def _services() -> dict[str, Any]:
    services = _compose()["services"]
    assert isinstance(services, dict)
    return services


def _default(value: str) -> str:
    """Compose interpolation with nothing set: ${VAR:-default} -> default, ${VAR} and ${VAR:?msg} -> ''."""
    value = re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*:?-([^}]*)\}", r"\1", value)
    return re.sub(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::?\?[^}]*)?\}", "", value)


def _instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in dockerfile.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, args = full.partition(" ")
        result.append((keyword.upper(), args.strip()))
    assert not pending, f"{dockerfile.name}: a continuation line runs off the end"
    return result


def _stages(dockerfile: Path) -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for keyword, args in _instructions(dockerfile):
        if keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((keyword, args))
    return stages


def _env(stage: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, args in stage:
        if keyword == "ENV":
            for key, value in re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=(\"[^\"]*\"|\S*)", args):
                env[key] = value.strip('"')
    return env


def _copy_sources(dockerfile: Path) -> list[str]:
    sources: list[str] = []
    for keyword, args in _instructions(dockerfile):
        if keyword not in ("COPY", "ADD"):
            continue
        words = yaml.safe_load(args) if args.startswith("[") else args.split()
        if any(w.startswith("--from") for w in words):
            continue
        sources += [w for w in words if not w.startswith("--")][:-1]  # the last word is the destination
    return sources


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go filepath.Match plus `**`) as a regex over a path relative to the root."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def _dockerignored(path: str) -> bool:
    """Whether the build context leaves `path` out (it or one of its parent folders matches, last rule wins)."""
    rules = []
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negated = line.startswith("!")
        rules.append((negated, _pattern_regex(line.lstrip("!").strip("/"))))
    parts = path.strip("/").split("/")
    for depth in range(1, len(parts) + 1):
        prefix = "/".join(parts[:depth])
        excluded = False
        for negated, regex in rules:
            if regex.match(prefix):
                excluded = not negated
        if excluded:
            return True
    return False


def _lock_torch() -> str:
    pins = [line.strip() for line in LOCK.read_text().splitlines() if line.startswith("torch==")]
    assert len(pins) == 1, pins
    return pins[0]


# -------------------------------------------------------------------------------------------------- compose


def test_compose_has_the_services_with_health_checks() -> None:
    services = _services()
    assert {"postgres", "mlflow", "prefect-server", "worker", "worker-gpu"} <= set(services)
    for name in ("postgres", "mlflow", "prefect-server", "worker", "worker-gpu"):
        test = services[name].get("healthcheck", {}).get("test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name} has no health check"
    assert services["postgres"]["image"].startswith("postgres:16")
    assert any(str(v).endswith(":/var/lib/postgresql/data") for v in services["postgres"]["volumes"])


def test_compose_start_order_waits_for_health() -> None:
    services = _services()
    wanted = {
        "mlflow": {"postgres"},
        "prefect-server": {"postgres"},
        "worker": {"prefect-server", "mlflow"},
        "worker-gpu": {"prefect-server", "mlflow"},
    }
    for name, needs in wanted.items():
        depends = services[name]["depends_on"]
        assert set(depends) == needs, name
        assert all(depends[d]["condition"] == "service_healthy" for d in needs), name


def test_compose_servers_use_postgres_and_workers_point_at_them() -> None:
    services = _services()
    mlflow = [_default(str(word)) for word in services["mlflow"]["command"]]
    store = mlflow[mlflow.index("--backend-store-uri") + 1]
    assert store.startswith("postgresql+psycopg2://") and store.endswith("@postgres:5432/mlflow")
    assert mlflow[mlflow.index("--artifacts-destination") + 1] == "/mlartifacts"
    assert "--serve-artifacts" in mlflow and mlflow[mlflow.index("--host") + 1] == "0.0.0.0"
    assert "mlflow:*" in mlflow[mlflow.index("--allowed-hosts") + 1].split(",")  # the workers' Host header
    assert "postgres" in services["mlflow"]["build"]["args"]["RAD_EXTRAS"]  # psycopg2-binary

    prefect = services["prefect-server"]
    assert prefect["command"][:2] == ["server", "start"] and "0.0.0.0" in prefect["command"]
    database = _default(prefect["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"])
    assert database.startswith("postgresql+asyncpg://") and database.endswith("@postgres:5432/prefect")
    assert prefect["environment"]["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    init = (DOCKER / "postgres" / "10-prefect-database.sql").read_text()
    assert "CREATE DATABASE prefect" in init

    for name, pool in (("worker", "cpu-pool"), ("worker-gpu", "gpu-pool")):
        command = services[name]["command"]
        assert command[:2] == ["worker", "start"], name
        assert command[command.index("--pool") + 1] == pool and command[command.index("--type") + 1] == "process"
        env = services[name]["environment"]
        assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000", name
        assert env["PREFECT_API_URL"] == "http://prefect-server:4200/api", name
        assert env["RAD_ARTIFACT_ROOT"] == "mlflow-artifacts:", name
        assert env["AWS_SECRET_ACCESS_KEY"] is None, name  # passed through from docker/.env, never written here


def test_compose_gpu_worker_is_optional_and_reserves_nvidia_gpus() -> None:
    gpu = _services()["worker-gpu"]
    assert gpu["profiles"] == ["gpu"]
    devices = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"]
    assert gpu["build"]["dockerfile"] == "docker/Dockerfile.gpu"
    assert all("profiles" not in s for n, s in _services().items() if n != "worker-gpu")


def test_compose_paths_exist() -> None:
    for name, service in _services().items():
        if "build" in service:
            context = (DOCKER / service["build"]["context"]).resolve()
            assert context == ROOT, name
            assert (context / service["build"]["dockerfile"]).is_file(), name
        for volume in service.get("volumes", []):
            source = _default(str(volume)).split(":")[0]
            if source.startswith("."):  # a bind mount, relative to docker/
                assert (DOCKER / source).exists(), f"{name}: {volume}"


def test_compose_variables_are_documented_in_env_example() -> None:
    used = set(re.findall(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)", COMPOSE.read_text()))
    example = (DOCKER / ".env.example").read_text()
    documented = set(re.findall(r"^#?\s*([A-Za-z_][A-Za-z0-9_]*)=", example, flags=re.MULTILINE))
    assert "POSTGRES_PASSWORD" in used
    assert used <= documented, f"not in docker/.env.example: {sorted(used - documented)}"


# ---------------------------------------------------------------------------------------------- dockerfiles


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_copied_paths_exist_and_are_in_the_build_context(kind: str) -> None:
    sources = _copy_sources(DOCKERFILES[kind])
    assert {"pyproject.toml", "README.md", "requirements/lock.txt", "src/"} <= set(sources)
    for source in sources:
        assert (ROOT / source).exists(), f"{kind}: COPY {source}: no such path"
        assert not _dockerignored(source), f"{kind}: COPY {source} is excluded by .dockerignore"
    for module in (ROOT / "src").rglob("*.py"):
        assert not _dockerignored(module.relative_to(ROOT).as_posix()), module


def test_dockerignore_keeps_local_state_out() -> None:
    for path in (".git/HEAD", ".venv/bin/python", "data/feedback/x.parquet", "models/rfnet/model.safetensors"):
        assert _dockerignored(path), path
    for path in (".tracking/mlflow.db", ".dvc/cache/files/md5/ab/cd", "docker/.env", ".env"):
        assert _dockerignored(path), path
    for path in ("src/reliable_ad/data/rf1m.py", "src/reliable_ad/models/rfnet.py", "docker/.env.example"):
        assert not _dockerignored(path), path


def test_cpu_image_pins_the_locked_cpu_torch() -> None:
    assert _lock_torch() == "torch==2.13.0"
    torch_runs = [a for k, a in _instructions(DOCKERFILES["cpu"]) if k == "RUN" and "torch==" in a]
    assert len(torch_runs) == 1
    assert "--index-url https://download.pytorch.org/whl/cpu" in torch_runs[0]
    assert re.search(r"\btorch==2\.13\.0(\s|$)", torch_runs[0])
    package = [a for k, a in _instructions(DOCKERFILES["cpu"]) if k == "RUN" and "-c requirements/lock.txt" in a]
    assert len(package) == 1 and "pip install" in package[0]


def test_gpu_image_installs_its_own_torch_and_the_lock_without_it() -> None:
    instructions = _instructions(DOCKERFILES["gpu"])
    args = {a.split("=", 1)[0]: a.split("=", 1)[1] for k, a in instructions if k == "ARG" and "=" in a}
    assert f"torch=={args['TORCH_VERSION']}" == _lock_torch()
    runs = [a for k, a in instructions if k == "RUN"]
    torch_index = next(i for i, run in enumerate(runs) if '"torch==${TORCH_VERSION}"' in run)
    package = next(i for i, run in enumerate(runs) if "grep -v '^torch==' requirements/lock.txt" in run)
    assert torch_index < package, "torch must be installed before the package"
    assert "-c /tmp/constraints-gpu.txt" in runs[package] and "-c requirements/lock.txt" not in runs[package]
    kept = [line for line in LOCK.read_text().splitlines() if not line.startswith("torch==")]
    assert len(kept) == len(LOCK.read_text().splitlines()) - 1
    assert not any(line.split("==")[0] == "torch" for line in kept)


@pytest.mark.parametrize("kind", sorted(DOCKERFILES))
def test_runtime_stage_is_small_non_root_and_quiet(kind: str) -> None:
    stages = _stages(DOCKERFILES[kind])
    runtime = stages[-1]
    assert len(stages) >= 2, f"{kind}: not multi-stage"
    assert any(k == "COPY" and a.startswith("--from=builder") for k, a in runtime), kind
    users = [a for k, a in runtime if k == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0"), kind
    assert [a for k, a in runtime if k == "ENTRYPOINT"] == ['["rad"]'], kind
    env = _env(runtime)
    assert {key: env.get(key) for key in TELEMETRY_OFF} == TELEMETRY_OFF, kind


# ---------------------------------------------------------------------------------------------- secrets


def test_env_example_holds_no_secret() -> None:
    lines = (DOCKER / ".env.example").read_text().splitlines()
    values = dict(line.split("=", 1) for line in lines if line and not line.startswith("#") and "=" in line)
    assert "POSTGRES_PASSWORD" in values
    for key, value in values.items():
        if re.search(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|API_KEY", key):
            assert value == "", f"{key} has a value in .env.example"
        assert not re.search(r"AKIA[0-9A-Z]{16}|hf_[A-Za-z0-9]{20,}|[A-Za-z0-9+/_-]{32,}", value), key
    ignored = [line.strip() for line in (ROOT / ".gitignore").read_text().splitlines()]
    assert ".env" in ignored or "docker/.env" in ignored or "/docker/.env" in ignored


# ---------------------------------------------------------------------------------------------- accelerate


@pytest.mark.parametrize("name", sorted(ACCELERATE))
def test_accelerate_configs_parse(name: str) -> None:
    from accelerate.commands.config.config_args import load_config_from_file

    config = yaml.safe_load(ACCELERATE[name].read_text())
    assert config["distributed_type"] == "MULTI_GPU"
    assert isinstance(config["num_processes"], int) and config["num_processes"] >= 2
    assert config["mixed_precision"] == "bf16"
    loaded = load_config_from_file(str(ACCELERATE[name]))  # accelerate's own loader: unknown keys fail
    assert loaded.num_processes == config["num_processes"]


def test_multi_node_config_marks_what_to_edit() -> None:
    config = yaml.safe_load(ACCELERATE["multi_node"].read_text())
    assert config["num_machines"] == 2 and config["num_processes"] % config["num_machines"] == 0
    marked = {line.split(":")[0] for line in ACCELERATE["multi_node"].read_text().splitlines() if "# EDIT" in line}
    assert {"machine_rank", "main_process_ip", "main_process_port", "num_processes", "num_machines"} <= marked


# ---------------------------------------------------------------------------------------------- docs/gpu.md


def _gpu_section() -> str:
    return (ROOT / "docs" / "gpu.md").read_text()


def test_readme_real_world_params_validate() -> None:
    from reliable_ad.params import Params

    section = _gpu_section()
    block = section[section.index("## From the embedded world to the real one") :]
    snippet = yaml.safe_load(block.split("```yaml\n", 1)[1].split("```", 1)[0])

    def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
        for key, value in extra.items():
            base[key] = merge(base.get(key, {}), value) if isinstance(value, dict) else value
        return base

    params = Params.model_validate(merge(yaml.safe_load((ROOT / "params.yaml").read_text()), snippet))
    assert params.rfnet.train.model.image_size == 384 and params.rfnet.train.model.text_encoder == "roberta-base"
    assert (params.generation.rfft.inference_steps, params.generation.rfft.last_k) == (40, 10)


def test_readme_names_only_existing_docker_files() -> None:
    named = set(re.findall(r"docker/[A-Za-z0-9_./-]*[A-Za-z0-9_]", _gpu_section())) - {"docker/.env"}  # the user's
    assert {"docker/compose.yaml", "docker/accelerate/multi_gpu.yaml", "docker/Dockerfile.gpu"} <= named
    for path in named:
        assert (ROOT / path).exists(), path
