"""The `review` section of params.yaml: where Label Studio is, how the queue is ordered, how votes resolve."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

TOKEN_ENV = "LABEL_STUDIO_API_KEY"  # the only place the token is read from (the name the SDK's docs use)


class ReviewConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field("http://localhost:8080", description=f"the Label Studio server; its token comes from {TOKEN_ENV}")
    project: str = Field("ReliableAD review", min_length=3, description="project title (made on the first push)")
    document_root: Path = Field(
        Path("/"),
        description="the server's LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT: queues must lie below it, the server "
        "serves their images from there",
    )
    order: Literal["uncertain", "random", "all"] = Field(
        "uncertain", description="uncertain: p_available closest to the judge's threshold first; all: queue order"
    )
    limit: int | None = Field(None, ge=1, description="push at most this many new tasks (null: the whole queue)")
    seed: int = Field(0, description="seed of the random order")
    resolution: Literal["majority", "hold"] = Field(
        "majority", description="several annotators: the majority label (ties held back), or hold any disagreement"
    )
    min_annotators: int = Field(1, ge=1, description="a task is pulled once this many annotators answered it")
    drift_min_precision: float = Field(
        0.8, ge=0, le=1, description="share of the judge's accepts that people call available; below it: judge drift"
    )
    retries: int = Field(3, ge=1, description="tries of each request before the server counts as unreachable")
    retry_delay_s: float = Field(2.0, ge=0, description="wait before the first retry (doubles each time)")
    timeout_s: float = Field(60.0, gt=0, description="per request")
    simulated_feedback: Literal["direct", "label_studio"] = Field(
        "direct",
        description="embedded world: RF1M-gen's labels straight from the reviewer, or through a Label Studio "
        "server started for the run and answered by the simulated annotator",
    )
    server: Path = Field(
        Path(".venv-labelstudio/bin/label-studio"), description="the label-studio command the embedded path starts"
    )
