"""Settings of the visual-quality guard of fine-tuned generators (cheap to import)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class GuardConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min_diversity_ratio: float = Field(0.75, ge=0, description="tuned background diversity / base's, at least")
    max_shift_ratio: float = Field(
        0.75,
        gt=0,
        description="mean distance of each tuned sample to its base sample (same product and seed) / the base's "
        "diversity (mean distance of two unrelated base samples), at most: above it the tuned model has drifted "
        "into something else, noise included, which the diversity check alone does not see",
    )
    grid: int = Field(4, ge=1, description="cells per side of the background descriptor")
