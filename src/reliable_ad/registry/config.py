"""Settings of the promotion gates (`rfnet.gate`, `generation.gate`): plain pydantic, importable without MLflow."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class GateConfig(BaseModel):
    """How sure a promotion must be."""

    model_config = ConfigDict(extra="forbid")

    margin: float = Field(0.0, description="the interval's lower end must exceed this improvement")
    confidence: float = Field(0.95, gt=0, lt=1, description="two-sided confidence of the bootstrap interval")
    resamples: int = Field(2000, ge=100, description="bootstrap resamples")
    seed: int = 0


class ControlNetGateConfig(GateConfig):
    """The ControlNet gate: how sure, whose verdicts count, and how far the training judge may be fooled."""

    judge: Literal["reviewer", "rfnet"] = Field(
        "reviewer",
        description="count first-attempt available images by the embedded world's reviewer (the 'human' there), "
        "or by the RFNet given to the gate, which must be a frozen evaluation judge: one RFFT trained against "
        "is refused (a ControlNet that fools it would pass)",
    )
    max_hacking_gap: float = Field(
        0.05,
        description="the training judge's first-attempt available rate minus the reviewer's on the same tuned "
        "samples, at most (above it the ControlNet pleases the judge more than the people it stands for)",
    )
