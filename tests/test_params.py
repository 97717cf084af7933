import pytest
import yaml

from reliable_ad.params import ParamsError, load_params


def _write(tmp_path, body) -> object:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(body) if not isinstance(body, str) else body)
    return path


def test_profiles_lay_over_the_params(tmp_path) -> None:
    body = {"data": {"synth": {"n": 5000, "size": 64}}, "profiles": {"quick": {"data": {"synth": {"n": 300}}}}}
    assert load_params(_write(tmp_path, body)).data.synth.n == 5000
    quick = load_params(_write(tmp_path, {**body, "profile": "quick"}))
    assert quick.data.synth.n == 300 and quick.data.synth.size == 64


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"data": {"synth": {"n": "many"}}}, r"data\.synth\.n: Input should be a valid integer"),
        ({"data": {"synth": {"colour": 1}}}, r"data\.synth\.colour: Extra inputs are not permitted"),
        ({"profile": "fast"}, "profile 'fast' is not one of"),
        ("data: [1, 2", "not valid YAML"),
        ("- 1\n- 2\n", "mapping at the top level"),
    ],
)
def test_bad_params_name_the_field(tmp_path, body, message) -> None:
    with pytest.raises(ParamsError, match=message):
        load_params(_write(tmp_path, body))


def test_missing_file(tmp_path) -> None:
    with pytest.raises(ParamsError, match="no such params file"):
        load_params(tmp_path / "nope.yaml")


def test_the_project_params_and_every_profile_are_valid(tmp_path) -> None:
    from pathlib import Path

    raw = yaml.safe_load(Path("params.yaml").read_text())
    assert load_params(Path("params.yaml")).profile == "full"
    for profile in raw["profiles"]:
        assert load_params(_write(tmp_path, {**raw, "profile": profile})).profile == profile


def test_the_settings_import_without_the_heavy_libraries() -> None:
    """Every command reads its settings first (`rad --help` too): they load no torch, numpy, Arrow or MLflow."""
    import subprocess
    import sys

    heavy = ("torch", "numpy", "pyarrow", "pandas", "cv2", "PIL", "mlflow", "diffusers", "accelerate", "prefect")
    probe = f"import sys, reliable_ad.params; print([m for m in {heavy!r} if m in sys.modules])"
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert loaded.strip() == "[]"


def test_params_yaml_states_only_what_differs_from_the_defaults() -> None:
    """The defaults live in the config models; params.yaml keeps a value at its default (or an empty section)
    only where a dvc.yaml stage tracks that very key, since DVC needs it present."""
    from pathlib import Path

    from reliable_ad.params import Params

    raw = yaml.safe_load(Path("params.yaml").read_text())
    stages = yaml.safe_load(Path("dvc.yaml").read_text())["stages"].values()
    tracked = {key for stage in stages for key in stage.get("params", [])}
    defaults = Params().model_dump(mode="json", by_alias=True)
    restated = []

    def walk(values: dict, default: dict, prefix: str) -> None:
        for key, value in values.items():
            path = f"{prefix}{key}"
            if isinstance(value, dict) and value:
                walk(value, default[key], f"{path}.")
            elif value == default[key] and path not in tracked:
                restated.append(path)

    walk({k: v for k, v in raw.items() if k not in ("profile", "profiles")}, defaults, "")
    assert restated == []
