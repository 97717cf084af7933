"""`rad`: the command line of ReliableAD. Each command is a thin call into the package's API."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from reliable_ad.params import Params, ParamsError, load_params

app = typer.Typer(help="ReliableAD: judge, regenerate and fine-tune ad image generation.", no_args_is_help=True)
data_app = typer.Typer(help="Datasets: synthesise, import, validate, prepare.", no_args_is_help=True)
app.add_typer(data_app, name="data")

ParamsOption = Annotated[
    Path | None, typer.Option("--params", help="params.yaml to read defaults from (options given here win)")
]


def _params(path: Path | None) -> Params:
    if path is None:
        return Params()
    try:
        return load_params(path)
    except ParamsError as error:
        raise typer.BadParameter(str(error), param_hint="--params") from error


def _override(model: Any, **values: Any) -> Any:
    """A copy of a config model with the options the user gave (not None) applied and validated."""
    given = {k: v for k, v in values.items() if v is not None}
    return type(model).model_validate({**model.model_dump(), **given})


def _print(summary: dict[str, Any]) -> None:
    typer.echo(json.dumps(summary, indent=2, default=str))


@data_app.command("synth")
def data_synth(
    out: Annotated[Path, typer.Option(help="dataset folder to create")],
    n: Annotated[int | None, typer.Option(help="number of samples")] = None,
    size: Annotated[int | None, typer.Option(help="image side in pixels (32-512)")] = None,
    seed: Annotated[int | None, typer.Option(help="dataset seed")] = None,
    difficulty: Annotated[float | None, typer.Option(help="defect strength 0..1 (1 = clearest)")] = None,
    workers: Annotated[int, typer.Option(help="worker processes")] = 1,
    archives: Annotated[int, typer.Option(help="pack the generated images into this many zip packages")] = 0,
    force: Annotated[bool, typer.Option(help="replace an existing folder")] = False,
    params: ParamsOption = None,
) -> None:
    """Render RF1M-synth in RF1M's layout: images, RGBA products, label.txt, metadata, depth and saliency."""
    from reliable_ad.data.synth.writer import write_synth

    cfg = _override(_params(params).data.synth, n=n, size=size, seed=seed, difficulty=difficulty)
    try:
        summary = write_synth(cfg, out, workers=workers, archives=archives, overwrite=force)
    except FileExistsError as error:
        raise typer.BadParameter(str(error), param_hint="--out") from error
    _print({k: summary[k] for k in ("n", "samples_per_s", "labels", "splits")})


if __name__ == "__main__":
    app()
