import numpy as np

from reliable_ad.training.rfnet_eval import Predictions, classification_metrics, macro_f1


def _predictions(sources: list[str]) -> Predictions:
    labels = ["available", "space_mismatch", "unsuitable"]
    # rows 0-3 rendered (all right), rows 4-7 generated (half wrong, no "unsuitable" among them)
    target = np.array([0, 1, 2, 0, 0, 1, 0, 1])
    predicted = np.array([0, 1, 2, 0, 1, 0, 0, 1])
    probabilities = np.full((8, 3), 0.1, np.float32)
    probabilities[np.arange(8), predicted] = 0.8
    return Predictions([f"r{i}" for i in range(8)], ["p"] * 8, target, probabilities, labels, sources)


def test_metrics_per_source_when_rows_come_from_several_datasets() -> None:
    metrics = classification_metrics(_predictions(["rf1m-synth"] * 4 + ["rf1m-gen"] * 4))
    assert set(metrics["by_source"]) == {"rf1m-synth", "rf1m-gen"}
    assert metrics["by_source"]["rf1m-synth"]["accuracy"] == 1.0
    generated = metrics["by_source"]["rf1m-gen"]
    assert generated["n"] == 4 and generated["accuracy"] == 0.5
    # macro-F1 over the classes present in the source: available 1/2 and space_mismatch 1/2 (not (1/2+1/2+0)/3)
    assert np.isclose(generated["macro_f1"], 0.5)


def test_no_breakdown_for_a_single_source() -> None:
    assert "by_source" not in classification_metrics(_predictions(["rf1m-synth"] * 8))


def test_calibration_error_and_macro_f1_have_one_definition() -> None:
    p = _predictions(["rf1m-synth"] * 8)
    metrics = classification_metrics(p)
    # every row is predicted with confidence 0.8 and 6 of 8 are right: one bin, |0.8 - 0.75|
    assert np.isclose(metrics["ece"], 0.05, atol=1e-6)
    assert metrics["macro_f1"] == macro_f1(p.target, p.predicted, 3)  # what the promotion gate resamples
    assert np.isclose(macro_f1(np.array([0, 0]), np.array([0, 1]), 3), 2 / 3)  # absent classes do not count
