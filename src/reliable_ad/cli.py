"""`rad`: the command line of ReliableAD. Each command calls one function of the API (`reliable_ad.api`) and
nothing else of the package.

Every command takes its settings from params.yaml (``--params``), else from the defaults that ``--help``
shows; options given on the command line win. The defaults of paths are the project's layout
(`reliable_ad.paths.Paths`), where the DVC pipeline reads and writes. Option names take ``-`` or ``_`` alike
(``--batch-size`` is ``--batch_size``). Errors in the user's inputs end the command with one clear line and
exit code 1 (set ``RAD_DEBUG=1`` for the traceback); any other error is a bug, printed with its traceback and
a request to report it.
"""

from __future__ import annotations

import functools
import json
import os
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from pydantic import BaseModel, ValidationError
from typer.core import TyperCommand, TyperGroup

os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # no torchvision notices from image processors

from reliable_ad import api
from reliable_ad.errors import UserError
from reliable_ad.params import Params, ParamsError, load_params

DEFAULTS = Params()  # what applies without --params: the defaults --help shows
PATHS = DEFAULTS.paths


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
F = TypeVar("F", bound=Callable[..., Any])
M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


# what the user can fix: the package's input errors, the file system's or the network's refusals (a missing
# folder, a full disk, a server that does not answer) and settings or saved configs that fail their schema
USER_ERRORS = (UserError, OSError, ValidationError)
BUG = "error: this is a bug in ReliableAD, not in your input: please report it with the command and the traceback above"


def user_errors(command: F) -> F:
    """Turn the user's errors into one line on stderr and exit code 1; anything else is a bug, shown with its
    traceback (a KeyError or a RuntimeError deep in a library is no message for a user to act on)."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort, typer.TyperException):  # a command's own exit code, Ctrl-C, a bad option
            raise
        except USER_ERRORS as error:
            if os.environ.get("RAD_DEBUG"):
                raise
            typer.echo(f"error: {_one_line(error)}", err=True)
            raise typer.Exit(1) from error
        except Exception as error:
            typer.echo("".join(traceback.format_exception(error)), err=True, nl=False)
            typer.echo(BUG, err=True)
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
    """params.yaml's settings (or the defaults), with `rad --catalog` laid over them."""
    try:
        params = Params() if path is None else load_params(path)
    except ParamsError as error:
        raise typer.BadParameter(str(error), param_hint="--params") from error
    if _SESSION.get("catalog") is not None:
        params.data.catalog.path = _SESSION["catalog"]
    return params


# what `rad`'s own options set for the command that follows
_SESSION: dict[str, Any] = {}


@app.callback()
def _rad(
    catalog: Annotated[
        Path | None,
        typer.Option(
            help="a folder of product photos with products.jsonl: every command draws its products from it "
            "(data.catalog.path)",
            show_default="RF1M-synth's products",
        ),
    ] = None,
) -> None:
    """ReliableAD: judge, regenerate and fine-tune ad image generation."""
    _SESSION["catalog"] = catalog


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


def _or(ctx: typer.Context, name: str, value: T, fallback: T) -> T:
    """The option's value when it was given, else `fallback` (params.yaml's: a path of `params.paths`)."""
    return value if _given(ctx, name) else fallback


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
    p = _params(params)
    p.data.synth = _override(ctx, p.data.synth, n=n, size=size, seed=seed, difficulty=difficulty)
    _print(api.synth(p, out, workers=workers, archives=archives, force=force))


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
    p = _params(params)
    p.data.import_ = _override(
        ctx, p.data.import_, separator=separator, require_metadata=require_metadata, quarantine=quarantine
    )
    _print(api.import_dataset(p, root, out, summary_json))


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
    p = _params(params)
    p.data.validate_ = _override(ctx, p.data.validate_, workers=workers)
    result = api.validate(p, root, manifest, out_dir, metrics)
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
    p = _params(params)
    p.data.prepare = _override(
        ctx,
        p.data.prepare,
        image_size=image_size,
        on_size_mismatch=on_size_mismatch,
        include_depth=include_depth,
        include_saliency=include_saliency,
    )
    _print(api.prepare(p, root, manifest, feedback or [], out, validation))


# --------------------------------------------------------------------------------------------- feedback


@feedback_app.command("ingest")
@user_errors
def feedback_ingest(
    ctx: typer.Context,
    batch: Annotated[Path, typer.Argument(help="a batch of new labels in the RF1M layout")],
    dataset: Annotated[Path, typer.Option(help="the feedback dataset it joins")] = PATHS.feedback,
    reports: Annotated[
        Path, typer.Option(help="where each batch's validation report and rejects go")
    ] = PATHS.feedback_reports,
    dvc: Annotated[bool, typer.Option(help="`dvc add` the feedback dataset afterwards (a new data version)")] = False,
    params: ParamsOption = None,
) -> None:
    """Validate a batch with the dataset's suite and append what passes; the same batch twice adds nothing."""
    p = _params(params)
    dataset, reports = (
        _or(ctx, "dataset", dataset, p.paths.feedback),
        _or(ctx, "reports", reports, p.paths.feedback_reports),
    )
    result = api.ingest_feedback(p, batch, dataset, reports, dvc_add=dvc)
    _print(result.model_dump())
    if result.status == "rejected":
        raise typer.Exit(1)


@feedback_app.command("simulate")
@user_errors
def feedback_simulate(
    ctx: typer.Context,
    generator: Annotated[Path, typer.Option(help="generator pipeline folder")] = PATHS.generator,
    dataset: Annotated[Path, typer.Option(help="the feedback dataset the batch joins")] = PATHS.generated,
    reports: Annotated[Path, typer.Option(help="where the batch's validation report goes")] = PATHS.feedback_reports,
    products: Annotated[int, typer.Option(help="products to generate")] = DEFAULTS.data.generated.products,
    params: ParamsOption = None,
) -> None:
    """The embedded world's human feedback: generate one image per new product, label it with the reviewer,
    ingest the batch (RF1M-gen, the part of RF1M made by the generator itself)."""
    p = _params(params)
    p.data.generated = _override(ctx, p.data.generated, products=products)
    result = api.simulate_feedback(
        p,
        _or(ctx, "generator", generator, p.paths.generator),
        _or(ctx, "dataset", dataset, p.paths.generated),
        _or(ctx, "reports", reports, p.paths.feedback_reports),
    )
    _print(result)
    if result["status"] == "rejected":
        raise typer.Exit(1)


@feedback_app.command("announce")
@user_errors
def feedback_announce(
    ctx: typer.Context,
    batch: Annotated[Path, typer.Argument(help="a batch folder that has arrived")] = PATHS.incoming,
    params: ParamsOption = None,
) -> None:
    """Tell the Prefect server (PREFECT_API_URL) a feedback batch arrived (the retrain-on-feedback deployment
    listens)."""
    p = _params(params)
    _print(api.announce_feedback(_or(ctx, "batch", batch, p.paths.incoming)))


@feedback_app.command("init")
@user_errors
def feedback_init(
    ctx: typer.Context,
    dataset: Annotated[Path, typer.Argument(help="folder of the feedback dataset")] = PATHS.feedback,
    params: ParamsOption = None,
) -> None:
    """Create an empty feedback dataset where there is none (an existing one is left as it is)."""
    dataset = _or(ctx, "dataset", dataset, _params(params).paths.feedback)
    api.init_feedback(dataset)
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
    reports: Annotated[Path, typer.Option(help="where rejected queue entries are listed")] = PATHS.review_reports,
    url: UrlOption = DEFAULTS.review.url,
    project: ProjectOption = DEFAULTS.review.project,
    params: ParamsOption = None,
) -> None:
    """Queue items become tasks: product beside generated image, prompt and title shown, the judge's verdict as a
    prediction; items pushed before are skipped."""
    p = _params(params)
    p.review = _override(ctx, p.review, url=url, project=project, order=order, limit=limit)
    _print(api.review_push(p, queue, _or(ctx, "reports", reports, p.paths.review_reports), judge=judge))


@review_app.command("pull")
@user_errors
def review_pull(
    ctx: typer.Context,
    dataset: Annotated[Path, typer.Option(help="the feedback dataset the verdicts join")] = PATHS.feedback,
    batches: Annotated[Path, typer.Option(help="where the pulled batch is written")] = PATHS.review_batches,
    reports: Annotated[Path, typer.Option(help="rejects, held tasks, the batch's validation")] = PATHS.review_reports,
    metrics: Annotated[
        Path, typer.Option(help="the pull's figures (JSON; the report shows them)")
    ] = PATHS.review_metrics,
    dvc: Annotated[bool, typer.Option(help="`dvc add` the feedback dataset afterwards (a new data version)")] = False,
    announce: Annotated[bool, typer.Option(help="tell the retrain-on-feedback deployment (PREFECT_API_URL)")] = False,
    url: UrlOption = DEFAULTS.review.url,
    project: ProjectOption = DEFAULTS.review.project,
    params: ParamsOption = None,
) -> None:
    """Finished tasks that are new or changed become a feedback batch, validated and ingested like any other;
    judge-vs-human agreement goes to MLflow and METRICS."""
    p = _params(params)
    p.review = _override(ctx, p.review, url=url, project=project)
    result = api.review_pull(
        p,
        _or(ctx, "dataset", dataset, p.paths.feedback),
        _or(ctx, "batches", batches, p.paths.review_batches),
        _or(ctx, "reports", reports, p.paths.review_reports),
        _or(ctx, "metrics", metrics, p.paths.review_metrics),
        dvc_add=dvc,
        announce=announce,
    )
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
    p = _params(params)
    p.review = _override(ctx, p.review, url=url, project=project)
    _print(api.review_annotate(p))


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
    p = _params(params)
    p.rfnet.train = _override(ctx, p.rfnet.train, epochs=epochs)
    _print(api.train_rfnet(p, shards, out, init_from=init_from, resume=not fresh))


@rfnet_app.command("evaluate")
@user_errors
def rfnet_evaluate(
    ctx: typer.Context,
    model: Annotated[Path, typer.Option(help="RFNet folder")],
    shards: Annotated[Path, typer.Option(help="prepared shard folder")],
    metrics: Annotated[Path, typer.Option(help="metrics JSON to write (DVC metrics)")] = PATHS.rfnet_metrics,
    plots: Annotated[Path, typer.Option(help="folder for plot data and PNGs (DVC plots)")] = PATHS.rfnet_plots,
    split: Annotated[str, typer.Option(help="split to evaluate")] = "test",
    params: ParamsOption = None,
) -> None:
    """Accuracy, per-class P/R/F1, macro-F1, AP(available), confusion matrix, ECE + reliability diagram (the
    prediction pass takes batch size and threads from rfnet.train)."""
    p = _params(params)
    metrics, plots = _or(ctx, "metrics", metrics, p.paths.rfnet_metrics), _or(ctx, "plots", plots, p.paths.rfnet_plots)
    result = api.evaluate_rfnet(p, model, shards, metrics, plots, split)
    _print({k: result[k] for k in ("n", "accuracy", "macro_f1", "ap_available", "ece")})


@rfnet_app.command("calibrate")
@user_errors
def rfnet_calibrate(
    ctx: typer.Context,
    model: Annotated[Path, typer.Option(help="RFNet folder (its config.json gets the threshold)")],
    shards: Annotated[Path, typer.Option(help="prepared shard folder")],
    split: Annotated[str, typer.Option(help="held-out split to calibrate on")] = "val",
    calibration_source: Annotated[
        str | None,
        typer.Option("--source", help="only the rows of this source dataset, e.g. rf1m-gen", show_default="all rows"),
    ] = DEFAULTS.rfnet.train.calibration_source,
    calibration_beta: Annotated[
        float, typer.Option("--beta", help="maximise F-beta of 'available' (< 1: precision counts more)")
    ] = DEFAULTS.rfnet.train.calibration_beta,
    params: ParamsOption = None,
) -> None:
    """Set the judge's acceptance threshold tau to the one maximising F-beta of 'available' on held-out rows
    (`rad rfnet train` does this itself at the end; this is for models trained before, or another split)."""
    p = _params(params)
    p.rfnet.train = _override(
        ctx, p.rfnet.train, calibration_source=calibration_source, calibration_beta=calibration_beta
    )
    _print(api.calibrate_rfnet(p, model, shards, split))


@rfnet_app.command("ablate")
@user_errors
def rfnet_ablate(
    ctx: typer.Context,
    shards: Annotated[Path, typer.Option(help="prepared shard folder")],
    out: Annotated[Path, typer.Option(help="one run folder per variant is made under it")] = PATHS.ablation,
    metrics: Annotated[Path, typer.Option(help="JSON of every variant's metrics")] = PATHS.ablation_metrics,
    table: Annotated[Path, typer.Option(help="markdown table")] = PATHS.ablation_table,
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
    p = _params(params)
    p.rfnet.train = _override(ctx, p.rfnet.train, epochs=epochs)
    out = _or(ctx, "out", out, p.paths.ablation)
    metrics, table = (
        _or(ctx, "metrics", metrics, p.paths.ablation_metrics),
        _or(ctx, "table", table, p.paths.ablation_table),
    )
    typer.echo(api.ablate_rfnet(p, shards, out, metrics, table, only=variant or (), fresh=fresh))


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
    _print(api.register_rfnet(_params(params), model, shards, decision, plots))


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
    p = _params(params)
    p.generation.generate = _override(ctx, p.generation.generate, **given)
    _print(api.generate(p, clip_skip=clip_skip, save_concat=save_concat, pipeline=pipeline))


generator_app = _Typer("The tiny generator of the embedded world.")
app.add_typer(generator_app, name="generator")


@app.command("recurrent")
@user_errors
def recurrent(
    ctx: typer.Context,
    generator: Annotated[Path, typer.Option(help="generator pipeline folder")] = PATHS.generator,
    controlnet: Annotated[
        Path | None, typer.Option(help="ControlNet folder", show_default="GENERATOR/controlnet")
    ] = None,
    judge: Annotated[str, typer.Option(help="RFNet folder or registry name@alias")] = str(PATHS.rfnet_model),
    products: Annotated[int, typer.Option(help="held-out RF1M-synth products to generate for")] = 32,
    out: Annotated[Path, typer.Option(help="folder for attempts.parquet and the accepted images")] = PATHS.recurrent,
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
    p = _params(params)
    p.generation.recurrent = _override(ctx, p.generation.recurrent, early_reject=early_reject)
    generator, out = _or(ctx, "generator", generator, p.paths.generator), _or(ctx, "out", out, p.paths.recurrent)
    judge = _or(ctx, "judge", judge, str(p.paths.rfnet_model))
    _print(api.recurrent(p, generator, controlnet, judge, products, out, queue, product_seed, probe))


@app.command("evaluate-generation")
@user_errors
def evaluate_generation(
    ctx: typer.Context,
    generator: Annotated[Path, typer.Option(help="generator pipeline folder")] = PATHS.generator,
    controlnet: Annotated[
        Path | None, typer.Option(help="ControlNet folder", show_default="GENERATOR/controlnet")
    ] = None,
    judge: Annotated[str, typer.Option(help="RFNet folder or registry name@alias")] = str(PATHS.rfnet_model),
    metrics: Annotated[Path, typer.Option(help="metrics JSON (DVC metrics)")] = PATHS.generation_metrics,
    plots: Annotated[Path, typer.Option(help="plots folder (DVC plots)")] = PATHS.generation_plots,
    records: Annotated[Path, typer.Option(help="every attempt of every run")] = PATHS.generation_records,
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
    p = _params(params)
    result = api.evaluate_generation(
        p,
        _or(ctx, "generator", generator, p.paths.generator),
        controlnet,
        _or(ctx, "judge", judge, str(p.paths.rfnet_model)),
        _or(ctx, "metrics", metrics, p.paths.generation_metrics),
        _or(ctx, "plots", plots, p.paths.generation_plots),
        _or(ctx, "records", records, p.paths.generation_records),
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
    p = _params(params)
    p.generation.pretrain = _override(ctx, p.generation.pretrain, steps=steps)
    _print(api.pretrain_generator(p, out, resume=not fresh))


@generator_app.command("export")
@user_errors
def generator_export(
    checkpoint: Annotated[Path, typer.Option(help="a checkpoint folder of a pre-training run (step-N)")],
    out: Annotated[Path, typer.Option(help="folder for model/, sample_grid.png, model_card.json")],
    params: ParamsOption = None,
) -> None:
    """Export the EMA weights of a pre-training checkpoint as a generator (with its sample grid and model card)."""
    _print(api.export_generator(_params(params), checkpoint, out))


rfft_app = _Typer("RFFT: fine-tune the ControlNet with RFNet's feedback.")
app.add_typer(rfft_app, name="rfft")


@rfft_app.command("train")
@user_errors
def rfft_train(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="run folder: controlnet/, checkpoints/, train_log.jsonl")],
    generator: Annotated[Path, typer.Option(help="base generator folder")] = PATHS.generator,
    judge: Annotated[str, typer.Option(help="RFNet folder or registry name@alias (frozen)")] = str(PATHS.rfnet_model),
    regularizer: Annotated[
        str, typer.Option(help="Consistent Condition (cc), kl or none")
    ] = DEFAULTS.generation.rfft.regularizer,
    beta: Annotated[float, typer.Option(help="weight of the regulariser")] = DEFAULTS.generation.rfft.beta,
    steps: Annotated[int, typer.Option(help="optimizer steps")] = DEFAULTS.generation.rfft.steps,
    fresh: Annotated[bool, typer.Option(help="ignore existing checkpoints in OUT")] = False,
    params: ParamsOption = None,
) -> None:
    """Fine-tune the ControlNet: feedback toward "available" + beta * Consistent Condition (or KL, or none)."""
    p = _params(params)
    p.generation.rfft = _override(ctx, p.generation.rfft, regularizer=regularizer, beta=beta, steps=steps)
    generator = _or(ctx, "generator", generator, p.paths.generator)
    _print(api.rfft_train(p, generator, _or(ctx, "judge", judge, str(p.paths.rfnet_model)), out, resume=not fresh))


@rfft_app.command("evaluate")
@user_errors
def rfft_evaluate(
    ctx: typer.Context,
    controlnet: Annotated[Path, typer.Option(help="fine-tuned ControlNet folder")],
    generator: Annotated[Path, typer.Option(help="base generator folder")] = PATHS.generator,
    judge: Annotated[str, typer.Option(help="RFNet folder or registry name@alias")] = str(PATHS.rfnet_model),
    metrics: Annotated[Path, typer.Option(help="metrics JSON (DVC metrics)")] = PATHS.rfft_metrics,
    grid: Annotated[Path, typer.Option(help="before/after sample grid PNG")] = PATHS.rfft_grid,
    params: ParamsOption = None,
) -> None:
    """Base vs fine-tuned on the same products and seeds: available rates, interval, diversity guard."""
    p = _params(params)
    result = api.compare_generators(
        p,
        _or(ctx, "generator", generator, p.paths.generator),
        controlnet,
        _or(ctx, "judge", judge, str(p.paths.rfnet_model)),
        _or(ctx, "metrics", metrics, p.paths.rfft_metrics),
        _or(ctx, "grid", grid, p.paths.rfft_grid),
    )
    _print(result)


@rfft_app.command("batch")
@user_errors
def rfft_batch(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="the labelled batch's folder (RF1M layout)")] = PATHS.methods_batch,
    generator: Annotated[Path, typer.Option(help="base generator folder")] = PATHS.generator,
    params: ParamsOption = None,
) -> None:
    """The embedded world's labelled batch for `rad rfft compare` (generation.methods.batch): the generator's
    images of fresh products, labelled by the reviewer."""
    p = _params(params)
    _print(
        api.label_batch(
            p, _or(ctx, "generator", generator, p.paths.generator), _or(ctx, "out", out, p.paths.methods_batch)
        )
    )


@rfft_app.command("compare")
@user_errors
def rfft_compare(
    ctx: typer.Context,
    batch: Annotated[Path, typer.Option(help="labelled batch of the generator's images (RF1M layout)")] = (
        PATHS.methods_batch
    ),
    judge: Annotated[Path, typer.Option(help="RFNet folder: the judge's rate beside the reviewer's")] = (
        PATHS.rfnet_model
    ),
    generator: Annotated[Path, typer.Option(help="base generator folder")] = PATHS.generator,
    out: Annotated[Path, typer.Option(help="one folder per method: ControlNet, selection, comparison")] = PATHS.methods,
    metrics: Annotated[Path, typer.Option(help="a row per method (DVC metrics)")] = PATHS.methods_metrics,
    rfft: Annotated[
        Path | None, typer.Option(help="RFFT's comparison (`rad rfft evaluate` metrics) for its row")
    ] = PATHS.rfft_metrics,
    current: Annotated[
        Path | None,
        typer.Option(
            help="the ControlNet the pipeline has before the methods: out/champion when none is promoted",
            show_default=f"{PATHS.rfft_controlnet} when it exists, else the generator's own",
        ),
    ] = None,
    params: ParamsOption = None,
) -> None:
    """The paper's comparison table: each method of generation.methods learns from the labelled batch, and the
    reviewer counts each on held-out products (paired interval, the judge's rate, hacking gap, guard, labels).
    The best on validation goes through the gate; out/champion is what the feedback rounds start from."""
    p = _params(params)
    paths = p.paths
    out = _or(ctx, "out", out, paths.methods)
    if current is None and paths.rfft_controlnet.exists():
        current = paths.rfft_controlnet
    api.compare_methods(
        p,
        _or(ctx, "generator", generator, paths.generator),
        _or(ctx, "judge", judge, paths.rfnet_model),
        _or(ctx, "batch", batch, paths.methods_batch),
        out,
        _or(ctx, "metrics", metrics, paths.methods_metrics),
        _or(ctx, "rfft", rfft, paths.rfft_metrics) if rfft is not None else None,
        current,
    )
    typer.echo((out / "methods.md").read_text())


@rfft_app.command("ablate")
@user_errors
def rfft_ablate(
    ctx: typer.Context,
    regularizer: Annotated[
        list[str] | None, typer.Option(help="regularisers to compare (repeatable)", show_default="none, kl, cc")
    ] = None,
    judge: Annotated[Path, typer.Option(help="the first judge (round 0)")] = PATHS.rfnet_model,
    generator: Annotated[Path, typer.Option(help="base generator folder")] = PATHS.generator,
    out: Annotated[
        Path, typer.Option(help="one folder per regulariser: RFFT, comparison, rounds")
    ] = PATHS.rfft_ablation,
    metrics: Annotated[Path, typer.Option(help="JSON of every row")] = PATHS.rfft_ablation_metrics,
    table: Annotated[Path, typer.Option(help="markdown table")] = PATHS.rfft_ablation_table,
    params: ParamsOption = None,
) -> None:
    """The regulariser ablation: RFFT and `rounds.count` feedback rounds with each regulariser, one table
    (reviewer gain with its interval, the judge's gain, hacking gap, quality guard). Resumable."""
    p = _params(params)
    paths = p.paths
    feedback = (paths.feedback, paths.generated)
    layout = api.RoundData(paths.synth, paths.manifest, feedback, paths.rfft_ablation_data, paths.rfft_ablation_reports)
    table = _or(ctx, "table", table, paths.rfft_ablation_table)
    api.regularizer_ablation(
        p,
        _or(ctx, "generator", generator, paths.generator),
        _or(ctx, "judge", judge, paths.rfnet_model),
        layout,
        _or(ctx, "out", out, paths.rfft_ablation),
        regularizer or ["none", "kl", "cc"],
        _or(ctx, "metrics", metrics, paths.rfft_ablation_metrics),
        table,
    )
    typer.echo(table.read_text())


@rfft_app.command("register")
@user_errors
def rfft_register(
    ctx: typer.Context,
    controlnet: Annotated[Path, typer.Option(help="fine-tuned ControlNet folder")],
    generator: Annotated[Path, typer.Option(help="base generator folder")] = PATHS.generator,
    judge: Annotated[str, typer.Option(help="the fixed judge: RFNet folder or name@alias")] = str(PATHS.rfnet_model),
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
    p = _params(params)
    generator, judge = (
        _or(ctx, "generator", generator, p.paths.generator),
        _or(ctx, "judge", judge, str(p.paths.rfnet_model)),
    )
    _print(api.register_controlnet(p, controlnet, generator, judge, decision, comparison))


rounds_app = _Typer("Feedback rounds: label the generator's newest images, retrain, tune.")
app.add_typer(rounds_app, name="rounds")


@rounds_app.command("run")
@user_errors
def rounds_run(
    ctx: typer.Context,
    judge: Annotated[Path, typer.Option(help="the first judge (round 0)")] = PATHS.rfnet_model,
    controlnet: Annotated[
        Path, typer.Option(help="the ControlNet round 1 starts from (`rad rfft compare`'s champion)")
    ] = PATHS.methods_champion,
    generator: Annotated[Path, typer.Option(help="base generator folder")] = PATHS.generator,
    root: Annotated[Path, typer.Option(help="the main dataset")] = PATHS.synth,
    manifest: Annotated[Path, typer.Option(help="its manifest")] = PATHS.manifest,
    feedback: Annotated[
        list[Path] | None,
        typer.Option(
            help="feedback datasets every round trains on (repeatable)",
            show_default=f"{PATHS.feedback}, {PATHS.generated}",
        ),
    ] = None,
    data: Annotated[Path, typer.Option(help="the rounds' own feedback datasets and shards")] = PATHS.rounds_data,
    out: Annotated[Path, typer.Option(help="the rounds' judges, ControlNets, comparisons and gates")] = PATHS.rounds,
    reports: Annotated[Path, typer.Option(help="validation reports of the rounds' batches")] = PATHS.rounds_reports,
    metrics: Annotated[Path, typer.Option(help="metrics JSON (DVC metrics)")] = PATHS.rounds_metrics,
    plots: Annotated[Path, typer.Option(help="both judges' rates per round (DVC plots)")] = PATHS.rounds_plots,
    params: ParamsOption = None,
) -> None:
    """`rounds.count` feedback rounds: the current ControlNet's images of fresh products labelled (the reviewer
    here), ingested, the judge retrained warm-started, the generator updated by `rounds.method` (KTO on the
    round's labels, or RFFT under the new judge), evaluated, gated. Resumable."""
    p = _params(params)
    layout = api.RoundData(
        _or(ctx, "root", root, p.paths.synth),
        _or(ctx, "manifest", manifest, p.paths.manifest),
        tuple(feedback or (p.paths.feedback, p.paths.generated)),
        _or(ctx, "data", data, p.paths.rounds_data),
        _or(ctx, "reports", reports, p.paths.rounds_reports),
    )
    result = api.feedback_rounds(
        p,
        _or(ctx, "generator", generator, p.paths.generator),
        _or(ctx, "judge", judge, p.paths.rfnet_model),
        _or(ctx, "controlnet", controlnet, p.paths.methods_champion),
        layout,
        _or(ctx, "out", out, p.paths.rounds),
        _or(ctx, "metrics", metrics, p.paths.rounds_metrics),
        _or(ctx, "plots", plots, p.paths.rounds_plots),
    )
    _print(result)


models_app = _Typer("The model registry: list, promote, roll back.")
app.add_typer(models_app, name="models")


@models_app.command("list")
@user_errors
def models_list(
    name: Annotated[str, typer.Argument(help="registered model: rfnet or reliable-controlnet")] = "rfnet",
    params: ParamsOption = None,
) -> None:
    """Every version with its aliases and its gate decision."""
    typer.echo(json.dumps(api.list_models(_params(params), name), indent=2, default=str))


@models_app.command("promote")
@user_errors
def models_promote(
    name: Annotated[str, typer.Argument(help="registered model")],
    version: Annotated[str, typer.Argument(help="version that passed its gate")],
    params: ParamsOption = None,
) -> None:
    """Make a version champion by hand; refused with its numbers unless it passed its gate."""
    _print(api.promote(_params(params), name, version))


@models_app.command("rollback")
@user_errors
def models_rollback(
    name: Annotated[str, typer.Argument(help="registered model")],
    params: ParamsOption = None,
) -> None:
    """Make the previous champion champion again."""
    _print(api.rollback(_params(params), name))


@app.command("report")
@user_errors
def report(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option(help="HTML page to write")] = PATHS.report,
    root: Annotated[Path, typer.Option(help="project root whose pipeline outputs are read")] = Path("."),
    registry: Annotated[bool, typer.Option(help="list MLflow registry versions (--no-registry skips MLflow)")] = True,
    params: ParamsOption = None,
) -> None:
    """One self-contained HTML page: dataset, validation, RFNet, ablation, generation, RFFT, registry decisions."""
    p = _params(params)
    typer.echo(f"report written to {api.report(p, root, _or(ctx, 'out', out, p.paths.report), registry=registry)}")


@app.command("params")
@user_errors
def show_params(params: ParamsOption = None) -> None:
    """Print every setting in effect (YAML): params.yaml states only what differs from the defaults."""
    typer.echo(api.settings(_params(params)), nl=False)


def main() -> None:  # pragma: no cover - console entry point
    app(prog_name="rad")


if __name__ == "__main__":
    main()
