"""Where every artefact of the pipeline lives, relative to the project root, and the MLflow experiment its runs
go to: named once here. dvc.yaml's stages, the CLI's defaults, the Prefect flows and the report all use these
locations (a test holds dvc.yaml to them); params.yaml's `paths` section could move them, but then dvc.yaml
would disagree, so the project's params.yaml leaves it out.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class Paths(BaseModel):
    """The project's layout: data, models, metrics, plots and reports, by the stage that writes them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    experiment: str = Field("reliable-ad", description="the MLflow experiment every run is logged to")
    # data
    synth: Path = Field(Path("data/rf1m-synth"), description="the main dataset (RF1M-synth, or RF1M imported)")
    manifest: Path = Field(Path("data/manifest/manifest.parquet"), description="its manifest")
    import_summary: Path = Path("metrics/import.json")
    validation: Path = Field(Path("reports/validation"), description="the pipeline's validation reports")
    validation_metrics: Path = Path("metrics/validation.json")
    feedback: Path = Field(Path("data/feedback"), description="the human feedback dataset (batches ingested)")
    generated: Path = Field(Path("data/rf1m-gen"), description="the generator's images, labelled (RF1M-gen)")
    feedback_reports: Path = Path("reports/feedback")
    incoming: Path = Field(Path("data/incoming/latest"), description="where the nightly retrain looks for a batch")
    shards: Path = Path("data/shards")
    # the judge
    rfnet: Path = Field(Path("models/rfnet"), description="RFNet's run folder: model/, checkpoints/")
    rfnet_metrics: Path = Path("metrics/rfnet.json")
    rfnet_plots: Path = Path("plots/rfnet")
    rfnet_gate: Path = Path("metrics/rfnet_gate.json")
    ablation: Path = Path("models/ablation")
    ablation_metrics: Path = Path("metrics/rfnet_ablation.json")
    ablation_table: Path = Path("reports/rfnet_ablation.md")
    # generation
    generator_run: Path = Field(Path("models/tiny-generator"), description="the tiny generator's pre-training")
    generator: Path = Field(Path("models/tiny-generator/model"), description="the base generator pipeline")
    generation_metrics: Path = Path("metrics/generation.json")
    generation_plots: Path = Path("plots/generation")
    generation_records: Path = Path("reports/generation/attempts.parquet")
    probes: Path = Field(Path("models/probes"), description="the evaluation's probes, one per generator (base/, rfft/)")
    recurrent: Path = Field(Path("reports/recurrent"), description="`rad recurrent`'s attempts and accepted images")
    # RFFT and the feedback rounds
    rfft: Path = Field(Path("models/rfft"), description="RFFT's run folder: controlnet/, snapshots/, checkpoints/")
    rfft_metrics: Path = Path("metrics/rfft.json")
    rfft_grid: Path = Path("plots/rfft/before_after.png")
    rfft_gate: Path = Path("metrics/rfft_gate.json")
    rounds_data: Path = Field(Path("data/rounds"), description="the rounds' own feedback datasets and shards")
    rounds: Path = Field(Path("models/rounds"), description="the pipeline's rounds: judges, ControlNets, gates")
    rounds_reports: Path = Path("reports/rounds")
    rounds_metrics: Path = Path("metrics/rounds.json")
    rounds_plots: Path = Field(Path("plots/rounds"), description="both judges' rates per round")
    retrained: Path = Field(Path("models/retrained"), description="rounds started by new human feedback (flows)")
    rfft_ablation: Path = Field(Path("models/rfft-ablation"), description="one folder per regulariser: RFFT, rounds")
    rfft_ablation_data: Path = Path("data/rfft-ablation")
    rfft_ablation_reports: Path = Path("reports/rfft-ablation")
    rfft_ablation_metrics: Path = Path("metrics/rfft_ablation.json")
    rfft_ablation_table: Path = Path("reports/rfft_ablation.md")
    # learning from people's labels directly: the methods' labelled batch, models and table
    methods_batch: Path = Field(Path("data/methods-batch"), description="the labelled batch every method learns from")
    methods: Path = Field(Path("models/methods"), description="one folder per method: its ControlNet, comparison")
    methods_metrics: Path = Path("metrics/methods.json")
    # human review in Label Studio
    review_batches: Path = Field(Path("data/incoming"), description="where `rad review pull` writes its batches")
    review_reports: Path = Field(Path("reports/review"), description="rejected queue entries, held tasks")
    review_metrics: Path = Field(Path("metrics/review.json"), description="the last pull's figures")
    report: Path = Path("reports/report.html")

    @property
    def rfnet_model(self) -> Path:
        return self.rfnet / "model"

    @property
    def rfft_controlnet(self) -> Path:
        return self.rfft / "controlnet"

    @property
    def methods_champion(self) -> Path:
        """The ControlNet the pipeline goes on with after the methods: the feedback rounds start from it."""
        return self.methods / "champion"
