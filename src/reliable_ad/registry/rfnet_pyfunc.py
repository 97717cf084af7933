"""MLflow "model from code" for RFNet: logged as this file plus the RFNet folder, so loading it executes this
reviewed source and reads safetensors, never a pickle.

``predict`` takes a DataFrame with columns ``image`` and ``product`` (paths to PNGs) and ``caption``, and
returns the judge's label and p_available per row.
"""

from __future__ import annotations

from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel, PythonModelContext
from PIL import Image


class RFNetModel(PythonModel):
    def load_context(self, context: PythonModelContext) -> None:
        from reliable_ad.judge import RFNetJudge

        self.judge = RFNetJudge.from_path(context.artifacts["model"])

    def predict(
        self, context: PythonModelContext, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        images = [np.asarray(Image.open(p).convert("RGB")) for p in model_input["image"]]
        products = [np.asarray(Image.open(p).convert("RGBA")) for p in model_input["product"]]
        out = self.judge(images, products, list(model_input["caption"]))
        return pd.DataFrame({"label": out.labels, "p_available": out.p_available.numpy()})


mlflow.models.set_model(RFNetModel())
