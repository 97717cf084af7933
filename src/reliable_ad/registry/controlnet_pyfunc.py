"""MLflow "model from code" for a fine-tuned ControlNet: this file plus the ControlNet folder (safetensors).

``predict`` takes a DataFrame with ``product`` (path to an RGBA PNG on the canvas), ``prompt`` and ``seed``
and returns the generated images as PNG bytes; the base generator comes from the ``base`` model config
entry (a local pipeline folder).
"""

from __future__ import annotations

import io
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel, PythonModelContext
from PIL import Image


class ControlNetModel(PythonModel):
    def load_context(self, context: PythonModelContext) -> None:
        from reliable_ad.models.generator import load_components

        base = (context.model_config or {}).get("base", "models/tiny-generator/model")
        self.components = load_components(base, context.artifacts["model"])

    def predict(
        self, context: PythonModelContext, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        from reliable_ad.generation.sampler import generate

        products = [np.asarray(Image.open(p).convert("RGBA")) for p in model_input["product"]]
        images = generate(self.components, products, list(model_input["prompt"]), list(model_input["seed"]))
        encoded = []
        for image in images:
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, format="PNG")
            encoded.append(buffer.getvalue())
        return pd.DataFrame({"png": encoded})


mlflow.models.set_model(ControlNetModel())
