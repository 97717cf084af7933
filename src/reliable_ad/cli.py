"""`rad`: the command line of ReliableAD. Each command is a thin call into the package's API.

Every command takes its settings from a section of params.yaml (``--params``), else from the defaults that
``--help`` shows; options given on the command line win. Option names take ``-`` or ``_`` alike
(``--batch-size`` is ``--batch_size``). Errors in the user's inputs end the command with one clear line and
exit code 1 (set ``RAD_DEBUG=1`` for the traceback).
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import BaseModel, ValidationError
from typer.core import TyperCommand, TyperGroup

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # no torchvision notices from image processors

from reliable_ad.params import Params, ParamsError, load_params

DEFAULTS = Params()  # what applies without --params: the defaults --help shows


def _plain_flags(params: list[Any]) -> list[Any]:
    """The parameters, their flags without a type in --help (typer >= 0.2x shows <bool> after each)."""
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


class _Group(TyperGroup):
    """A command group whose flags show no <bool>."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _plain_flags(super().get_params(ctx))  # with the --help flag, which is made here


class _Command(TyperCommand):
    """A command whose usage line names arguments as ROOT (typer writes {root}) and whose flags show no <bool>."""

    def get_params(self, ctx: Any) -> list[Any]:
        return _plain_flags(super().get_params(ctx))

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        pieces = [self.options_metavar] if self.options_metavar else []
        for param in self.get_params(ctx):
            if param.param_type_name == "argument":
                name = (param.metavar or str(param.name)).upper() + ("..." if param.nargs != 1 else "")
                pieces.append(name if param.required else f"[{name}]")
        return pieces


class _Typer(typer.Typer):
    """typer.Typer whose commands are `_Command`s and whose option names take `_` for `-`."""

    def __init__(self, help: str) -> None:
        normalise: Callable[[str], str] = lambda token: token.replace("_", "-")  # noqa: E731
        super().__init__(
            cls=_Group, help=help, no_args_is_help=True, context_settings={"token_normalize_func": normalise}
        )

    def command(self, *args: Any, **kwargs: Any) -> Any:
        return super().command(*args, cls=_Command, **kwargs)


app = _Typer("ReliableAD: judge, regenerate and fine-tune ad image generation.")
data_app = _Typer("Datasets: synthesise, import, validate, prepare.")
rfnet_app = _Typer("RFNet, the judge: train, evaluate, ablate, register.")
feedback_app = _Typer("Human feedback: ingest labelled batches as new data versions.")
app.add_typer(data_app, name="data")
app.add_typer(feedback_app, name="feedback")
app.add_typer(rfnet_app, name="rfnet")
review_app = _Typer(
    "Human review in Label Studio: push the review queue, pull the verdicts as a feedback batch. "
    "The token comes from LABEL_STUDIO_API_KEY only."
)
app.add_typer(review_app, name="review")

ParamsOption = Annotated[
    Path | None,
    typer.Option(
        "--params",
        help="params.yaml whose values replace the defaults shown (options given here win)",
        show_default="none",
    ),
]
NOT_WRITTEN = "not written"
VALIDATION_DIR = "validation"  # rad data validate's reports folder under the dataset, unless --out-dir says
F = TypeVar("F", bound=Callable[..., Any])
M = TypeVar("M", bound=BaseModel)


def user_errors(command: F) -> F:
    """Turn the package's input errors into one line on stderr and exit code 1."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except typer.Exit:  # a command's own exit code (a RuntimeError to click), not an error to report
            raise
        except (ValueError, FileNotFoundError, FileExistsError, KeyError, RuntimeError) as error:
            if os.environ.get("RAD_DEBUG"):
                raise
            typer.echo(f"error: {_one_line(error)}", err=True)
            raise typer.Exit(1) from error

    return wrapper  # type: ignore[return-value]


def _one_line(error: Exception) -> str:
    """The error's message; a pydantic error as 'Model: field: reason; ...' instead of its multi-line dump."""
    if isinstance(error, ValidationError):
        return f"{error.title}: " + "; ".join(f"{_loc(e['loc'])}: {e['msg']}" for e in error.errors())
    return str(error)


def _loc(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc) or "settings"


def _params(path: Path | None) -> Params:
    if path is None:
        return Params()
    try:
        return load_params(path)
    except ParamsError as error:
        raise typer.BadParameter(str(error), param_hint="--params") from error


def _override(ctx: typer.Context, model: M, **values: Any) -> M:
    """A copy of a config model with the options given on the command line applied and validated. An option left
    out keeps the model's value: params.yaml's (--params), else the model's default, which --help shows."""
    given = {k: v for k, v in values.items() if _given(ctx, k)}
    try:
        return type(model).model_validate({**model.model_dump(), **given})
    except ValidationError as error:
        option = {p.name: p.opts[0] for p in ctx.command.params}  # field -> its option, e.g. --batch_size
        reasons = [f"{option.get(_loc(e['loc']), _loc(e['loc']))}: {e['msg']}" for e in error.errors()]
        raise typer.BadParameter("; ".join(reasons)) from error


def _given(ctx: typer.Context, name: str) -> bool:
    """Was the option given (on the command line or by its environment variable), not left at its default?"""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")


def _print(summary: dict[str, Any]) -> None:
    typer.echo(json.dumps(summary, indent=2, default=str))


# ------------------------------------------------------------------------------------------------- data


@data_app.command("synth")
@user_errors
def data_synth(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="dataset folder to create")],
    n: Annotated[int, typer.Option(help="number of samples")] = DEFAULTS.data.synth.n,
    size: Annotated[int, typer.Option(help="image side in pixels (32-512)")] = DEFAULTS.data.synth.size,
    seed: Annotated[int, typer.Option(help="dataset seed")] = DEFAULTS.data.synth.seed,
    difficulty: Annotated[
        float, typer.Option(help="defect strength 0..1 (1 = clearest)")
    ] = DEFAULTS.data.synth.difficulty,
    workers: Annotated[int, typer.Option(help="worker processes")] = 1,
    archives: Annotated[int, typer.Option(help="pack the samples into this many zip packages (0: none)")] = 0,
    force: Annotated[bool, typer.Option(help="replace an existing folder")] = False,
    params: ParamsOption = None,
) -> None:
    """Render RF1M-synth in RF1M's layout: images, RGBA products, label.txt, metadata, depth and saliency."""
    from reliable_ad.data.synth.writer import write_synth

    cfg = _override(ctx, _params(params).data.synth, n=n, size=size, seed=seed, difficulty=difficulty)
    summary = write_synth(cfg, out, workers=workers, archives=archives, overwrite=force)
    _print({k: summary[k] for k in ("n", "samples_per_s", "labels", "splits")})


@data_app.command("import")
@user_errors
def data_import(
    ctx: typer.Context,
    root: Annotated[Path, typer.Argument(help="dataset folder in the RF1M layout")],
    out: Annotated[Path | None, typer.Option(help="manifest to write", show_default="ROOT/manifest.parquet")] = None,
    separator: Annotated[
        str,
        typer.Option(help="label.txt separator (one character)", show_default=repr(DEFAULTS.data.import_.separator)),
    ] = DEFAULTS.data.import_.separator,
    require_metadata: Annotated[
        bool, typer.Option(help="every image needs a metadata.jsonl entry with prompt and title")
    ] = DEFAULTS.data.import_.require_metadata,
    quarantine: Annotated[
        bool,
        typer.Option(
            help="bad label lines go to rejects.jsonl instead of stopping the import (a broken package still stops it)"
        ),
    ] = DEFAULTS.data.import_.quarantine,
    summary_json: Annotated[
        Path | None, typer.Option("--summary", help="write the summary here (JSON)", show_default=NOT_WRITTEN)
    ] = None,
    params: ParamsOption = None,
) -> None:
    """Read label.txt, metadata and packages (in place) into one manifest; strict about every line."""
    from reliable_ad.api import write_json
    from reliable_ad.data.rf1m import import_dataset

    cfg = _override(
        ctx, _params(params).data.import_, separator=separator, require_metadata=require_metadata, quarantine=quarantine
    )
    summary = import_dataset(root, cfg, out).model_dump(mode="json")
    write_json(summary_json, summary)
    _print(summary)


@data_app.command("validate")
@user_errors
def data_validate(
    ctx: typer.Context,
    root: Annotated[Path, typer.Argument(help="dataset folder in the RF1M layout")],
    manifest: Annotated[Path | None, typer.Option(help="manifest", show_default="ROOT/manifest.parquet")] = None,
    out_dir: Annotated[Path | None, typer.Option(help="reports folder", show_default="ROOT/validation")] = None,
    workers: Annotated[int, typer.Option(help="processes of the file pass")] = DEFAULTS.data.validate_.workers,
    metrics: Annotated[
        Path | None, typer.Option(help="write the headline counts here (DVC metrics)", show_default=NOT_WRITTEN)
    ] = None,
    params: ParamsOption = None,
) -> None:
    """Great Expectations suite over the manifest plus a file pass; non-zero exit when anything fails."""
    from reliable_ad.api import validate

    p = _params(params)
    p.data.validate_ = _override(ctx, p.data.validate_, workers=workers)
    result = validate(p, root, manifest, out_dir or root / VALIDATION_DIR, metrics)
    typer.echo(result.summary)
    if not result.success:
        raise typer.Exit(1)


@data_app.command("prepare")
@user_errors
def data_prepare(
    ctx: typer.Context,
    root: Annotated[Path, typer.Argument(help="dataset folder in the RF1M layout")],
    out: Annotated[Path, typer.Option(help="shard folder to write")],
    manifest: Annotated[Path | None, typer.Option(help="manifest", show_default="ROOT/manifest.parquet")] = None,
    feedback: Annotated[
        list[Path] | None,
        typer.Option(help="feedback dataset(s) to add (each with its manifest.parquet)", show_default="none"),
    ] = None,
    image_size: Annotated[
        int, typer.Option(help="side every image must have, in pixels")
    ] = DEFAULTS.data.prepare.image_size,
    on_size_mismatch: Annotated[
        str, typer.Option(help="an image of another size: refuse, or resize it to IMAGE_SIZE")
    ] = DEFAULTS.data.prepare.on_size_mismatch,
    include_depth: Annotated[
        bool, typer.Option(help="store each row's depth map")
    ] = DEFAULTS.data.prepare.include_depth,
    include_saliency: Annotated[
        bool, typer.Option(help="store each row's saliency map")
    ] = DEFAULTS.data.prepare.include_saliency,
    validation: Annotated[
        Path | None,
        typer.Option(
            help="`rad data validate`'s reports folder: the rows it quarantined are left out",
            show_default="ROOT/validation where it exists",
        ),
    ] = None,
    params: ParamsOption = None,
) -> None:
    """Turn the manifest into a few large Parquet shards plus index.json (what DVC tracks and training reads)."""
    from reliable_ad.data.layout import MANIFEST_FILE
    from reliable_ad.data.shards import prepare_shards
    from reliable_ad.data.validate import VERDICT_FILE

    more = [(folder, folder / MANIFEST_FILE) for folder in feedback or []]
    cfg = _override(
        ctx,
        _params(params).data.prepare,
        image_size=image_size,
        on_size_mismatch=on_size_mismatch,
        include_depth=include_depth,
        include_saliency=include_saliency,
    )
    verdict = validation or (root / VALIDATION_DIR if (root / VALIDATION_DIR / VERDICT_FILE).exists() else None)
    summary = prepare_shards(root, manifest or root / MANIFEST_FILE, out, cfg, more=more, validation=verdict)
    _print(summary.model_dump(mode="json"))


# --------------------------------------------------------------------------------------------- feedback


@feedback_app.command("ingest")
@user_errors
def feedback_ingest(
    batch: Annotated[Path, typer.Argument(help="a batch of new labels in the RF1M layout")],
    dataset: Annotated[Path, typer.Option(help="the feedback dataset it joins")] = Path("data/feedback"),
    reports: Annotated[Path, typer.Option(help="where each batch's validation report and rejects go")] = Path(
        "reports/feedback"
    ),
    dvc: Annotated[bool, typer.Option(help="`dvc add` the feedback dataset afterwards (a new data version)")] = False,
    params: ParamsOption = None,
) -> None:
    """Validate a batch with the dataset's suite and append what passes; the same batch twice adds nothing."""
    from reliable_ad.api import ingest_feedback

    result = ingest_feedback(_params(params), batch, dataset, reports, dvc_add=dvc)
    _print(result.model_dump())
    if result.status == "rejected":
        raise typer.Exit(1)


@feedback_app.command("simulate")
@user_errors
def feedback_simulate(
    ctx: typer.Context,
    generator: Annotated[Path, typer.Option(help="generator pipeline folder")] = Path("models/tiny-generator/model"),
    dataset: Annotated[Path, typer.Option(help="the feedback dataset the batch joins")] = Path("data/rf1m-gen"),
    reports: Annotated[Path, typer.Option(help="where the batch's validation report goes")] = Path("reports/feedback"),
    products: Annotated[int, typer.Option(help="products to generate")] = DEFAULTS.data.generated.products,
    params: ParamsOption = None,
) -> None:
    """The embedded world's human feedback: generate one image per new product, label it with the reviewer,
    ingest the batch (RF1M-gen, the part of RF1M made by the generator itself)."""
    from reliable_ad.api import simulate_feedback

    p = _params(params)
    p.data.generated = _override(ctx, p.data.generated, products=products)
    result = simulate_feedback(p, generator, dataset, reports)
    _print(result)
    if result["status"] == "rejected":
        raise typer.Exit(1)


@feedback_app.command("announce")
@user_errors
def feedback_announce(
    batch: Annotated[Path, typer.Argument(help="a batch folder that has arrived")],
) -> None:
    """Tell the Prefect server a feedback batch arrived (the retrain-on-feedback deployment listens)."""
    from reliable_ad.api import announce_feedback

    _print(announce_feedback(batch))


@feedback_app.command("init")
@user_errors
def feedback_init(
    dataset: Annotated[Path, typer.Argument(help="folder of the feedback dataset")] = Path("data/feedback"),
) -> None:
    """Create an empty feedback dataset where there is none (an existing one is left as it is)."""
    from reliable_ad.data.feedback import init_feedback

    init_feedback(dataset)
    typer.echo(f"empty feedback dataset at {dataset}")


# ----------------------------------------------------------------------------------------------- review

UrlOption = Annotated[str, typer.Option(help="Label Studio server (its token: LABEL_STUDIO_API_KEY)")]
ProjectOption = Annotated[str, typer.Option(help="project title")]


@review_app.command("push")
@user_errors
def review_push(
    ctx: typer.Context,
    queue: Annotated[Path, typer.Argument(help="queue folder: metadata.jsonl, images/, products/")],
    judge: Annotated[
        str | None,
        typer.Option(
            help="RFNet folder or name@alias: judges the images whose metadata has no verdict",
            show_default="the queue's verdicts only",
        ),
    ] = None,
    order: Annotated[str, typer.Option(help="uncertain, random or all")] = DEFAULTS.review.order,
    limit: Annotated[
        int | None, typer.Option(help="at most this many new tasks", show_default="the whole queue")
    ] = DEFAULTS.review.limit,
    reports: Annotated[Path, typer.Option(help="where rejected queue entries are listed")] = Path("reports/review"),
    url: UrlOption = DEFAULTS.review.url,
    project: ProjectOption = DEFAULTS.review.project,
    params: ParamsOption = None,
) -> None:
    """Queue items become tasks: product beside generated image, prompt and title shown, the judge's verdict as a
    prediction; items pushed before are skipped."""
    from reliable_ad.api import review_push as run

    p = _params(params)
    p.review = _override(ctx, p.review, url=url, project=project, order=order, limit=limit)
    _print(run(p, queue, reports, judge=judge))


@review_app.command("pull")
@user_errors
def review_pull(
    ctx: typer.Context,
    dataset: Annotated[Path, typer.Option(help="the feedback dataset the verdicts join")] = Path("data/feedback"),
    batches: Annotated[Path, typer.Option(help="where the pulled batch is written")] = Path("data/incoming"),
    reports: Annotated[Path, typer.Option(help="rejects, held tasks, the batch's validation")] = Path("reports/review"),
    metrics: Annotated[Path, typer.Option(help="the pull's figures (JSON; the report shows them)")] = Path(
        "metrics/review.json"
    ),
    dvc: Annotated[bool, typer.Option(help="`dvc add` the feedback dataset afterwards (a new data version)")] = False,
    announce: Annotated[bool, typer.Option(help="tell the retrain-on-feedback deployment (PREFECT_API_URL)")] = False,
    url: UrlOption = DEFAULTS.review.url,
    project: ProjectOption = DEFAULTS.review.project,
    params: ParamsOption = None,
) -> None:
    """Finished tasks that are new or changed become a feedback batch, validated and ingested like any other;
    judge-vs-human agreement goes to MLflow and METRICS."""
    from reliable_ad.api import review_pull as run

    p = _params(params)
    p.review = _override(ctx, p.review, url=url, project=project)
    result = run(p, dataset, batches, reports, metrics, dvc_add=dvc, announce=announce)
    _print(result)
    if result["status"] == "rejected":
        raise typer.Exit(1)


@review_app.command("annotate")
@user_errors
def review_annotate(
    ctx: typer.Context,
    url: UrlOption = DEFAULTS.review.url,
    project: ProjectOption = DEFAULTS.review.project,
    params: ParamsOption = None,
) -> None:
    """The embedded world's annotator: the simulated reviewer answers every open task of the project."""
    from reliable_ad.api import review_annotate as run

    p = _params(params)
    p.review = _override(ctx, p.review, url=url, project=project)
    _print(run(p))


# ------------------------------------------------------------------------------------------------ rfnet


@rfnet_app.command("train")
@user_errors
def rfnet_train(
    ctx: typer.Context,
    shards: Annotated[Path, typer.Option(help="prepared shard folder")],
    out: Annotated[Path, typer.Option(help="run folder: model/, checkpoints/, train_summary.json")],
    init_from: Annotated[
        Path | None, typer.Option(help="warm-start from this RFNet folder", show_default="random initialisation")
    ] = None,
    epochs: Annotated[int, typer.Option(help="epochs")] = DEFAULTS.rfnet.train.epochs,
    fresh: Annotated[bool, typer.Option(help="ignore existing checkpoints in OUT")] = False,
    params: ParamsOption = None,
) -> None:
    """Train RFNet (runs under `accelerate launch` unchanged); resumes from OUT/checkpoints."""
    from reliable_ad.training.rfnet import train_rfnet

    cfg = _override(ctx, _params(params).rfnet.train, epochs=epochs)
    _print(train_rfnet(cfg, shards, out, init_from=init_from, resume=not fresh))


@rfnet_app.command("evaluate")
@user_errors
def rfnet_evaluate(
    model: Annotated[Path, typer.Option(help="RFNet folder")],
    shards: Annotated[Path, typer.Option(help="prepared shard folder")],
    metrics: Annotated[Path, typer.Option(help="metrics JSON to write (DVC metrics)")] = Path("metrics/rfnet.json"),
    plots: Annotated[Path, typer.Option(help="folder for plot data and PNGs (DVC plots)")] = Path("plots/rfnet"),
    split: Annotated[str, typer.Option(help="split to evaluate")] = "test",
    params: ParamsOption = None,
) -> None:
    """Accuracy, per-class P/R/F1, macro-F1, AP(available), confusion matrix, ECE + reliability diagram (the
    prediction pass takes batch size and threads from rfnet.train)."""
    from reliable_ad.training.rfnet_eval import evaluate_rfnet

    cfg = _params(params).rfnet.train
    result = evaluate_rfnet(model, shards, metrics, plots, split, cfg.batch_size, cfg.threads)
    _print({k: result[k] for k in ("n", "accuracy", "macro_f1", "ap_available", "ece")})


@rfnet_app.command("calibrate")
@user_errors
def rfnet_calibrate(
    model: Annotated[Path, typer.Option(help="RFNet folder (its config.json gets the threshold)")],
    shards: Annotated[Path, typer.Option(help="prepared shard folder")],
    split: Annotated[str, typer.Option(help="held-out split to calibrate on")] = "val",
    source: Annotated[
        str | None, typer.Option(help="only the rows of this source dataset, e.g. rf1m-gen", show_default="all rows")
    ] = None,
    beta: Annotated[float, typer.Option(help="maximise F-beta of 'available' (< 1: precision counts more)")] = 0.5,
    params: ParamsOption = None,
) -> None:
    """Set the judge's acceptance threshold tau to the one maximising F-beta of 'available' on held-out rows
    (`rad rfnet train` does this itself at the end; this is for models trained before, or another split)."""
    from reliable_ad.training.rfnet_eval import calibrate_rfnet

    cfg = _params(params).rfnet.train
    _print(calibrate_rfnet(model, shards, split, source, beta, cfg.batch_size, cfg.threads))


@rfnet_app.command("ablate")
@user_errors
def rfnet_ablate(
    ctx: typer.Context,
    shards: Annotated[Path, typer.Option(help="prepared shard folder")],
    out: Annotated[Path, typer.Option(help="one run folder per variant is made under it")] = Path("models/ablation"),
    metrics: Annotated[Path, typer.Option(help="JSON of every variant's metrics")] = Path(
        "metrics/rfnet_ablation.json"
    ),
    table: Annotated[Path, typer.Option(help="markdown table")] = Path("reports/rfnet_ablation.md"),
    epochs: Annotated[int, typer.Option(help="epochs per variant (rfnet.train.epochs)")] = DEFAULTS.rfnet.train.epochs,
    variant: Annotated[
        list[str] | None,
        typer.Option(
            help="run only this variant ('all', 'without depth', 'generated only', ...; repeatable); the other "
            "rows of METRICS are kept",
            show_default="every variant",
        ),
    ] = None,
    fresh: Annotated[bool, typer.Option(help="retrain every variant run, ignoring checkpoints under OUT")] = False,
    params: ParamsOption = None,
) -> None:
    """The paper's modality ablation: all inputs, without each one, and the generated image alone."""
    from reliable_ad.training.rfnet_ablation import ablate, markdown

    cfg = _override(ctx, _params(params).rfnet.train, epochs=epochs)
    typer.echo(markdown(ablate(cfg, shards, out, metrics, table, only=variant or (), fresh=fresh)))


@rfnet_app.command("register")
@user_errors
def rfnet_register(
    model: Annotated[Path, typer.Option(help="candidate RFNet folder")],
    shards: Annotated[Path, typer.Option(help="prepared shard folder (its test split is the fixed held-out set)")],
    decision: Annotated[
        Path | None, typer.Option(help="write the gate's decision here (JSON)", show_default=NOT_WRITTEN)
    ] = None,
    plots: Annotated[
        Path | None, typer.Option(help="evaluation figures to log with the run", show_default="none")
    ] = None,
    params: ParamsOption = None,
) -> None:
    """Log and register the candidate; promote it to champion only if it beats the champion (paired bootstrap)."""
    from reliable_ad.registry.rfnet import register_rfnet

    p = _params(params)
    result = register_rfnet(model, shards, p.rfnet.gate, decision_file=decision, plots_dir=plots)
    _print(result.__dict__)


# ------------------------------------------------------------------------------------------- generation


GENERATE = DEFAULTS.generation.generate
NATIVE = "the pipeline's native size: UNet sample size x VAE scale factor, 512 for SD1.5"


@app.command("generate")
@user_errors
def generate(
    ctx: typer.Context,
    base_model_path: Annotated[
        str, typer.Option("--base_model_path", help="pipeline folder")
    ] = GENERATE.base_model_path,
    controlnet_model_path: Annotated[
        str | None, typer.Option("--controlnet_model_path", help="ControlNet folder", show_default="BASE/controlnet")
    ] = GENERATE.controlnet_model_path,
    lora_model_path: Annotated[
        str | None, typer.Option("--lora_model_path", help="LoRA weights", show_default="none")
    ] = GENERATE.lora_model_path,
    lora_scale: Annotated[float, typer.Option("--lora_scale", help="LoRA scale")] = GENERATE.lora_scale,
    batch_size: Annotated[int, typer.Option("--batch_size", help="images per batch")] = GENERATE.batch_size,
    negative_prompt: Annotated[
        str, typer.Option("--negative_prompt", help="negative prompt of pool entries without one", show_default="none")
    ] = GENERATE.negative_prompt,
    guidance_scale: Annotated[
        float, typer.Option("--guidance_scale", help="classifier-free guidance")
    ] = GENERATE.guidance_scale,
    eta: Annotated[float, typer.Option("--eta", help="DDIM eta")] = GENERATE.eta,
    controlnet_conditioning_scale: Annotated[
        float, typer.Option("--controlnet_conditioning_scale", help="ControlNet residual scale")
    ] = GENERATE.controlnet_conditioning_scale,
    width: Annotated[int | None, typer.Option("--width", help="canvas width", show_default=NATIVE)] = GENERATE.width,
    height: Annotated[
        int | None, typer.Option("--height", help="canvas height", show_default=NATIVE)
    ] = GENERATE.height,
    image_scale: Annotated[
        float, typer.Option("--image_scale", help="product size share for pool entries without image_scale")
    ] = GENERATE.image_scale,
    num_inference_steps: Annotated[
        int, typer.Option("--num_inference_steps", help="denoising steps")
    ] = GENERATE.num_inference_steps,
    iterations: Annotated[int, typer.Option("--iterations", help="batches to generate")] = GENERATE.iterations,
    low_threshold: Annotated[int, typer.Option("--low_threshold", help="canny low threshold")] = GENERATE.low_threshold,
    high_threshold: Annotated[
        int, typer.Option("--high_threshold", help="canny high threshold")
    ] = GENERATE.high_threshold,
    keep_loc: Annotated[
        bool, typer.Option("--keep_loc", help="keep the product where it is", show_default="off")
    ] = GENERATE.keep_loc,
    white_tolerance: Annotated[
        int, typer.Option("--white_tolerance", help="how far below 255 an RGB product's white background may be")
    ] = GENERATE.white_tolerance,
    seed: Annotated[
        int | None, typer.Option("--seed", help="seed (images get seed + index)", show_default="random")
    ] = GENERATE.seed,
    sampler_name: Annotated[
        str, typer.Option("--sampler_name", help="DDIM, 'Euler a' or 'DPM++ SDE Karras'")
    ] = GENERATE.sampler_name,
    save_path: Annotated[Path, typer.Option("--save_path", help="output folder")] = GENERATE.save_path,
    data_path: Annotated[Path, typer.Option("--data_path", help="folder of product images")] = GENERATE.data_path,
    config: Annotated[Path, typer.Option("--config", help="prompt pool JSON")] = GENERATE.config,
    clip_skip: Annotated[
        int | None,
        typer.Option("--clip_skip", help="encode prompts by the layer this many before the last", show_default="none"),
    ] = None,
    save_concat: Annotated[
        bool,
        typer.Option("--save_concat", help="also write product | output pairs to SAVE_PATH_concat", show_default="off"),
    ] = False,
    pipeline: Annotated[str, typer.Option("--pipeline", help="the official pipeline class: T2I, its only one")] = "T2I",
    params: ParamsOption = None,
) -> None:
    """Generate ad images like the official sample.py (same flag names), logging product, prompt and seed."""
    given = {k: v for k, v in locals().items() if k not in ("ctx", "params", "clip_skip", "save_concat", "pipeline")}
    from reliable_ad.generation.official import run_generate

    if pipeline != "T2I":
        raise ValueError(f"unknown pipeline {pipeline!r}: the official sampler has only T2I")
    args = _override(ctx, _params(params).generation.generate, **given)
    records = run_generate(args, clip_skip=clip_skip, save_concat=save_concat)
    _print({"images": len(records), "save_path": str(args.save_path), "log": str(args.save_path / "log.jsonl")})


generator_app = _Typer("The tiny generator of the embedded world.")
app.add_typer(generator_app, name="generator")


@app.command("recurrent")
@user_errors
def recurrent(
    ctx: typer.Context,
    generator: Annotated[Path, typer.Option(help="generator pipeline folder")] = Path("models/tiny-generator/model"),
    controlnet: Annotated[
        Path | None, typer.Option(help="ControlNet folder", show_default="GENERATOR/controlnet")
    ] = None,
    judge: Annotated[str, typer.Option(help="RFNet folder or registry name@alias")] = "models/rfnet/model",
    products: Annotated[int, typer.Option(help="held-out RF1M-synth products to generate for")] = 32,
    out: Annotated[Path, typer.Option(help="folder for attempts.parquet and the accepted images")] = Path(
        "reports/recurrent"
    ),
    early_reject: Annotated[
        bool, typer.Option(help="judge x0 early and stop predicted failures")
    ] = DEFAULTS.generation.recurrent.early_reject,
    probe: Annotated[
        Path | None,
        typer.Option(
            help="a probe folder of rad evaluate-generation: stop early as calibrated with it (refused for other "
            "models)",
            show_default="none",
        ),
    ] = None,
    queue: Annotated[
        Path | None,
        typer.Option(
            help="also write every judged attempt here as a review queue (rad review push)", show_default=NOT_WRITTEN
        ),
    ] = None,
    product_seed: Annotated[
        int | None,
        typer.Option(help="RF1M-synth seed of the products", show_default="generation.evaluate.product_seed"),
    ] = None,
    params: ParamsOption = None,
) -> None:
    """Generate, judge, regenerate the rejected: every attempt recorded (the queue for human review)."""
    import pandas as pd
    from PIL import Image

    from reliable_ad.api import denoiser_from, judge_from
    from reliable_ad.generation.evaluate import held_out_products
    from reliable_ad.generation.prompts import load_prompt_pool
    from reliable_ad.generation.recurrent import recurrent_generate, summarise

    params_ = _params(params)
    p = params_.generation
    cfg = _override(ctx, p.recurrent, early_reject=early_reject)
    params_.generation.recurrent = cfg
    seed = p.evaluate.product_seed if product_seed is None else product_seed
    if queue is not None and seed == p.evaluate.product_seed:
        raise typer.BadParameter(
            f"the queue would turn the evaluation's products (seed {seed}) into training labels: pass another "
            "--product-seed",
            param_hint="--queue",
        )
    items = held_out_products(products, seed, p.evaluate.categories)
    denoiser = denoiser_from(generator, controlnet, params_, for_evaluation=False)
    judge_ = judge_from(judge)
    probe_ = None
    if probe is not None:
        from reliable_ad.api import probe_for

        cfg, probe_ = probe_for(probe, generator, controlnet, judge_, cfg)
    pool = load_prompt_pool(p.prompts)
    stats = recurrent_generate(denoiser, judge_, items, pool, cfg, keep_images=True, probe=probe_)
    if queue is not None:
        from reliable_ad.api import judge_version
        from reliable_ad.generation.recurrent import acceptance_threshold
        from reliable_ad.review.queue import recurrent_queue, write_queue

        tau = acceptance_threshold(cfg, judge_)
        write_queue(queue, recurrent_queue(stats.attempts, items, tau, judge_version(judge)))
    (out / "accepted").mkdir(parents=True, exist_ok=True)
    for attempt in stats.attempts:
        if attempt.status == "accepted" and attempt.image is not None:
            Image.fromarray(attempt.image).save(out / "accepted" / f"{attempt.product}_a{attempt.attempt}.png")
    pd.DataFrame([a.row() for a in stats.attempts]).to_parquet(out / "attempts.parquet", index=False)
    _print(summarise(stats, len(items), cfg.max_attempts))


@app.command("evaluate-generation")
@user_errors
def evaluate_generation_command(
    generator: Annotated[Path, typer.Option(help="generator pipeline folder")] = Path("models/tiny-generator/model"),
    controlnet: Annotated[
        Path | None, typer.Option(help="ControlNet folder", show_default="GENERATOR/controlnet")
    ] = None,
    judge: Annotated[str, typer.Option(help="RFNet folder or registry name@alias")] = "models/rfnet/model",
    metrics: Annotated[Path, typer.Option(help="metrics JSON (DVC metrics)")] = Path("metrics/generation.json"),
    plots: Annotated[Path, typer.Option(help="plots folder (DVC plots)")] = Path("plots/generation"),
    records: Annotated[Path, typer.Option(help="every attempt of every run")] = Path(
        "reports/generation/attempts.parquet"
    ),
    rfft_controlnet: Annotated[
        Path | None, typer.Option(help="the RFFT ControlNet: its runs beside the base's", show_default=NOT_WRITTEN)
    ] = None,
    probes: Annotated[
        Path | None, typer.Option(help="folder for each generator's probe (base/, rfft/)", show_default=NOT_WRITTEN)
    ] = None,
    params: ParamsOption = None,
) -> None:
    """Plain recurrent generation, early rejection, particle steering and the whole-batch loop on the same
    products and seeds; the cost per usable image of each, with the base and the RFFT ControlNet."""
    from reliable_ad.api import evaluate_generation

    result = evaluate_generation(
        _params(params),
        generator,
        controlnet,
        judge,
        metrics,
        plots,
        records,
        rfft_controlnet=rfft_controlnet,
        probes=probes,
    )
    _print({k: v for k, v in result.items() if k != "runs"})


@generator_app.command("pretrain-tiny")
@user_errors
def generator_pretrain_tiny(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="run folder: model/, checkpoints/, sample grids, model card")],
    steps: Annotated[int, typer.Option(help="UNet + ControlNet steps")] = DEFAULTS.generation.pretrain.steps,
    fresh: Annotated[bool, typer.Option(help="ignore existing checkpoints in OUT")] = False,
    params: ParamsOption = None,
) -> None:
    """Pre-train the tiny VAE, UNet, ControlNet and text encoder on RF1M-synth (hours on CPU, resumable)."""
    from reliable_ad.training.pretrain_generator import pretrain_tiny_generator

    cfg = _override(ctx, _params(params).generation.pretrain, steps=steps)
    _print(pretrain_tiny_generator(cfg, out, resume=not fresh))


@generator_app.command("export")
@user_errors
def generator_export(
    checkpoint: Annotated[Path, typer.Option(help="a checkpoint folder of a pre-training run (step-N)")],
    out: Annotated[Path, typer.Option(help="folder for model/, sample_grid.png, model_card.json")],
    params: ParamsOption = None,
) -> None:
    """Export the EMA weights of a pre-training checkpoint as a generator (with its sample grid and model card)."""
    from reliable_ad.training.pretrain_generator import export_generator

    _print(export_generator(_params(params).generation.pretrain, checkpoint, out))


rfft_app = _Typer("RFFT: fine-tune the ControlNet with RFNet's feedback.")
app.add_typer(rfft_app, name="rfft")


@rfft_app.command("train")
@user_errors
def rfft_train_command(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="run folder: controlnet/, checkpoints/, train_log.jsonl")],
    generator: Annotated[Path, typer.Option(help="base generator folder")] = Path("models/tiny-generator/model"),
    judge: Annotated[str, typer.Option(help="RFNet folder or registry name@alias (frozen)")] = "models/rfnet/model",
    regularizer: Annotated[
        str, typer.Option(help="Consistent Condition (cc), kl or none")
    ] = DEFAULTS.generation.rfft.regularizer,
    beta: Annotated[float, typer.Option(help="weight of the regulariser")] = DEFAULTS.generation.rfft.beta,
    steps: Annotated[int, typer.Option(help="optimizer steps")] = DEFAULTS.generation.rfft.steps,
    fresh: Annotated[bool, typer.Option(help="ignore existing checkpoints in OUT")] = False,
    params: ParamsOption = None,
) -> None:
    """Fine-tune the ControlNet: feedback toward "available" + beta * Consistent Condition (or KL, or none)."""
    from reliable_ad.api import rfft_train

    p = _params(params)
    p.generation.rfft = _override(ctx, p.generation.rfft, regularizer=regularizer, beta=beta, steps=steps)
    _print(rfft_train(p, generator, judge, out, resume=not fresh))


@rfft_app.command("evaluate")
@user_errors
def rfft_evaluate(
    controlnet: Annotated[Path, typer.Option(help="fine-tuned ControlNet folder")],
    generator: Annotated[Path, typer.Option(help="base generator folder")] = Path("models/tiny-generator/model"),
    judge: Annotated[str, typer.Option(help="RFNet folder or registry name@alias")] = "models/rfnet/model",
    metrics: Annotated[Path, typer.Option(help="metrics JSON (DVC metrics)")] = Path("metrics/rfft.json"),
    grid: Annotated[Path, typer.Option(help="before/after sample grid PNG")] = Path("plots/rfft/before_after.png"),
    params: ParamsOption = None,
) -> None:
    """Base vs fine-tuned on the same products and seeds: available rates, interval, diversity guard."""
    from reliable_ad.api import compare_generators

    _print(compare_generators(_params(params), generator, controlnet, judge, metrics, grid))


@rfft_app.command("ablate")
@user_errors
def rfft_ablate(
    regularizer: Annotated[
        list[str] | None, typer.Option(help="regularisers to compare (repeatable)", show_default="none, kl, cc")
    ] = None,
    judge: Annotated[Path, typer.Option(help="the first judge (round 0)")] = Path("models/rfnet/model"),
    generator: Annotated[Path, typer.Option(help="base generator folder")] = Path("models/tiny-generator/model"),
    out: Annotated[Path, typer.Option(help="one folder per regulariser: RFFT, comparison, rounds")] = Path(
        "models/rfft-ablation"
    ),
    metrics: Annotated[Path, typer.Option(help="JSON of every row")] = Path("metrics/rfft_ablation.json"),
    table: Annotated[Path, typer.Option(help="markdown table")] = Path("reports/rfft_ablation.md"),
    params: ParamsOption = None,
) -> None:
    """The regulariser ablation: RFFT and `rounds.count` feedback rounds with each regulariser, one table
    (reviewer gain with its interval, the judge's gain, hacking gap, quality guard). Resumable."""
    from reliable_ad.api import RoundData, ablation_markdown, regularizer_ablation

    folders = RoundData(
        Path("data/rf1m-synth"),
        Path("data/manifest/manifest.parquet"),
        (Path("data/feedback"), Path("data/rf1m-gen")),
        Path("data/rfft-ablation"),
        Path("reports/rfft-ablation"),
    )
    names = regularizer or ["none", "kl", "cc"]
    rows = regularizer_ablation(_params(params), generator, judge, folders, out, names, metrics, table)
    typer.echo(ablation_markdown(rows))


@rfft_app.command("register")
@user_errors
def rfft_register(
    controlnet: Annotated[Path, typer.Option(help="fine-tuned ControlNet folder")],
    generator: Annotated[Path, typer.Option(help="base generator folder")] = Path("models/tiny-generator/model"),
    judge: Annotated[str, typer.Option(help="the fixed judge: RFNet folder or name@alias")] = "models/rfnet/model",
    decision: Annotated[
        Path | None, typer.Option(help="write the gate's decision here (JSON)", show_default=NOT_WRITTEN)
    ] = None,
    comparison: Annotated[
        Path | None,
        typer.Option(
            help="`rad rfft evaluate`'s metrics: reused when they compared the same models and settings",
            show_default="compare anew",
        ),
    ] = None,
    params: ParamsOption = None,
) -> None:
    """Register as reliable-controlnet; champion only if it beats the champion (or the base) and the guard holds."""
    from reliable_ad.api import register_controlnet

    _print(register_controlnet(_params(params), controlnet, generator, judge, decision, comparison))


rounds_app = _Typer("Feedback rounds: label the generator's newest images, retrain, tune.")
app.add_typer(rounds_app, name="rounds")


@rounds_app.command("run")
@user_errors
def rounds_run(
    judge: Annotated[Path, typer.Option(help="the first judge (round 0)")] = Path("models/rfnet/model"),
    controlnet: Annotated[Path, typer.Option(help="the first tuned ControlNet (round 0)")] = Path(
        "models/rfft/controlnet"
    ),
    generator: Annotated[Path, typer.Option(help="base generator folder")] = Path("models/tiny-generator/model"),
    root: Annotated[Path, typer.Option(help="the main dataset")] = Path("data/rf1m-synth"),
    manifest: Annotated[Path, typer.Option(help="its manifest")] = Path("data/manifest/manifest.parquet"),
    feedback: Annotated[
        list[Path] | None,
        typer.Option(
            help="feedback datasets every round trains on (repeatable)",
            show_default="data/feedback, data/rf1m-gen",
        ),
    ] = None,
    data: Annotated[Path, typer.Option(help="the rounds' own feedback datasets and shards")] = Path("data/rounds"),
    out: Annotated[Path, typer.Option(help="the rounds' judges, ControlNets, comparisons and gates")] = Path(
        "models/rounds"
    ),
    reports: Annotated[Path, typer.Option(help="validation reports of the rounds' batches")] = Path("reports/rounds"),
    metrics: Annotated[Path, typer.Option(help="metrics JSON (DVC metrics)")] = Path("metrics/rounds.json"),
    plots: Annotated[Path, typer.Option(help="both judges' rates per round (DVC plots)")] = Path("plots/rounds"),
    params: ParamsOption = None,
) -> None:
    """`rounds.count` feedback rounds: the current ControlNet's images of fresh products labelled (the reviewer
    here), ingested, the judge retrained warm-started, RFFT again under it, evaluated, gated. Resumable."""
    from reliable_ad.api import RoundData, feedback_rounds

    sources = tuple(feedback or (Path("data/feedback"), Path("data/rf1m-gen")))
    folders = RoundData(root, manifest, sources, data, reports)
    _print(feedback_rounds(_params(params), generator, judge, controlnet, folders, out, metrics, plots))


models_app = _Typer("The model registry: list, promote, roll back.")
app.add_typer(models_app, name="models")


@models_app.command("list")
@user_errors
def models_list(
    name: Annotated[str, typer.Argument(help="registered model: rfnet or reliable-controlnet")] = "rfnet",
) -> None:
    """Every version with its aliases and its gate decision."""
    from reliable_ad.registry.models import list_versions
    from reliable_ad.registry.tracking import setup

    setup("reliable-ad")
    rows = [
        {
            "version": v.version,
            "aliases": list(v.aliases),
            "promoted": v.tags.get("gate.promoted"),
            "metric": v.tags.get("gate.metric"),
            "candidate": v.tags.get("gate.candidate"),
            "reason": v.tags.get("gate.reason"),
        }
        for v in list_versions(name)
    ]
    typer.echo(json.dumps(rows, indent=2))


@models_app.command("promote")
@user_errors
def models_promote(
    name: Annotated[str, typer.Argument(help="registered model")],
    version: Annotated[str, typer.Argument(help="version that passed its gate")],
) -> None:
    """Make a version champion by hand; refused with its numbers unless it passed its gate."""
    from reliable_ad.registry.gate import promote
    from reliable_ad.registry.tracking import setup

    setup("reliable-ad")
    _print(promote(name, version).__dict__)


@models_app.command("rollback")
@user_errors
def models_rollback(name: Annotated[str, typer.Argument(help="registered model")]) -> None:
    """Make the previous champion champion again."""
    from reliable_ad.registry.gate import rollback
    from reliable_ad.registry.tracking import setup

    setup("reliable-ad")
    _print({"name": name, "champion": rollback(name)})


@app.command("report")
@user_errors
def report(
    out: Annotated[Path, typer.Option(help="HTML page to write")] = Path("reports/report.html"),
    root: Annotated[Path, typer.Option(help="project root whose pipeline outputs are read")] = Path("."),
    registry: Annotated[bool, typer.Option(help="list MLflow registry versions (--no-registry skips MLflow)")] = True,
) -> None:
    """One self-contained HTML page: dataset, validation, RFNet, ablation, generation, RFFT, registry decisions."""
    from reliable_ad.report import build_report

    typer.echo(f"report written to {build_report(root, out, registry=registry)}")


def main() -> None:  # pragma: no cover - console entry point
    app(prog_name="rad")


if __name__ == "__main__":
    main()
