"""What a new user meets first: every command's --help with its defaults, usage lines, option names either way,
and one clear line for a bad option or a missing model."""

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from reliable_ad.cli import app

WIDE = {"COLUMNS": "250", "TERMINAL_WIDTH": "250"}  # no option name or default cut short by the table


def _commands(group: typer.core.TyperGroup, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], object]]:
    for name, command in sorted(group.commands.items()):
        if isinstance(command, typer.core.TyperGroup):
            yield from _commands(command, (*path, name))
        else:
            yield (*path, name), command


COMMANDS = list(_commands(typer.main.get_command(app)))  # type: ignore[arg-type]


def _row(help_text: str, name: str) -> str | None:
    """The table row of an option or argument (one line: the terminal is wide), without the table's borders."""
    for line in help_text.splitlines():
        cell = line.strip().strip("│").strip()
        if cell.removeprefix("*").split()[:1] == [name]:
            return cell
    return None


def test_there_are_commands_to_check() -> None:
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {"generate", "data import", "data prepare", "rfnet evaluate", "feedback ingest", "models list"} <= names


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=[" ".join(p) for p, _ in COMMANDS])
def test_help_shows_every_default(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(app, [*path, "--help"], env=WIDE)
    assert result.exit_code == 0, result.output
    command = dict(COMMANDS)[path]
    for param in command.params:  # type: ignore[attr-defined]
        name = param.opts[0] if param.param_type_name == "option" else param.name
        row = _row(result.output, name)
        assert row is not None, f"{name} is not in `rad {' '.join(path)} --help`:\n{result.output}"
        assert "[default: " in row or "[required]" in row, f"`rad {' '.join(path)} --help`: {row}"
    usage = next(line for line in result.output.splitlines() if "Usage:" in line)
    assert "{" not in usage and "<bool>" not in result.output, result.output


@pytest.mark.parametrize("group", [(), ("data",), ("rfnet",), ("feedback",), ("models",)])
def test_groups_show_no_type_on_flags(group: tuple[str, ...]) -> None:
    result = CliRunner().invoke(app, [*group, "--help"], env=WIDE)
    assert result.exit_code == 0 and "Commands" in result.output and "<bool>" not in result.output


def test_usage_names_arguments_in_capitals() -> None:
    result = CliRunner().invoke(app, ["data", "import", "--help"], env=WIDE)
    usage = next(line for line in result.output.splitlines() if "Usage:" in line)
    assert usage.split()[-3:] == ["import", "[OPTIONS]", "ROOT"]


@pytest.mark.parametrize("flag", ["--batch_size", "--batch-size"])
def test_a_bad_option_is_one_line_naming_it_either_spelling(flag: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["generate", flag, "0", "--save_path", str(tmp_path / "out")], env=WIDE)
    assert result.exit_code == 2
    assert "--batch_size: Input should be greater than or equal to 1" in result.output
    assert "validation error" not in result.output and "pydantic" not in result.output
    assert not (tmp_path / "out").exists()


def test_params_replace_the_defaults_and_given_options_win(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"data": {"synth": {"n": 6, "seed": 3}}}))

    def synth(*options: str) -> int:
        out = tmp_path / f"ds{len(list(tmp_path.iterdir()))}"
        result = CliRunner().invoke(app, ["data", "synth", "--out", str(out), *options])
        assert result.exit_code == 0, result.output
        return int(json.loads(result.output)["n"])

    assert synth("--n", "4") == 4
    assert synth("--params", str(tmp_path / "params.yaml")) == 6
    assert synth("--params", str(tmp_path / "params.yaml"), "--n", "5") == 5


def test_rfnet_evaluate_takes_params_and_says_how_to_make_a_missing_model(tmp_path: Path) -> None:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"rfnet": {"train": {"batch_size": 4}}}))
    args = ["rfnet", "evaluate", "--model", str(tmp_path / "rfnet"), "--shards", str(tmp_path / "shards")]
    result = CliRunner().invoke(app, [*args, "--params", str(tmp_path / "params.yaml")])
    assert result.exit_code == 1
    assert f"RFNet folder {tmp_path / 'rfnet'} does not exist: `rad rfnet train" in result.output


def test_a_malformed_saved_config_is_one_line_naming_the_field(tmp_path: Path) -> None:
    (tmp_path / "rfnet").mkdir()
    (tmp_path / "rfnet" / "config.json").write_text(json.dumps({"width": "wide"}))
    args = ["rfnet", "evaluate", "--model", str(tmp_path / "rfnet"), "--shards", str(tmp_path / "shards")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    assert result.output.startswith("error: RFNetConfig: width: Input should be a valid integer")
    assert len(result.output.splitlines()) == 1


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=[" ".join(p) for p, _ in COMMANDS])
def test_every_command_takes_params(path: tuple[str, ...]) -> None:
    """Settings and paths come from params.yaml for every command alike (`rfnet calibrate` once had none)."""
    assert "--params" in {opt for param in dict(COMMANDS)[path].params for opt in param.opts}  # type: ignore[attr-defined]
