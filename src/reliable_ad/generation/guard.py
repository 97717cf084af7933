"""Settings of the visual-quality guard of fine-tuned generators (cheap to import)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class GuardConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_diversity_ratio: float = Field(0.75, ge=0, description="tuned background diversity / base's, at least")
    grid: int = Field(4, ge=1, description="cells per side of the background descriptor")
