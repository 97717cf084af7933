"""Human feedback through the API: simulated batches, data versions, announcements."""

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from reliable_ad import api
from reliable_ad.data import layout
from reliable_ad.errors import UserError
from reliable_ad.generation.config import SimulatedFeedbackConfig
from reliable_ad.params import Params

ROOT = Path(__file__).resolve().parents[2]
GENERATOR = ROOT / "models" / "tiny-generator" / "model"


@pytest.mark.skipif(not GENERATOR.exists(), reason="the tiny generator (models/tiny-generator) is not in this checkout")
def test_simulated_batch_joins_a_feedback_dataset_despite_class_share_bounds(tmp_path: Path) -> None:
    params = Params()
    params.data.generated = SimulatedFeedbackConfig(products=6)
    # the main dataset's bounds: every class at least 2%; a batch of suitable products has no "unsuitable"
    params.data.validate_ = params.data.validate_.model_copy(
        update={"class_share": (0.02, 0.7), "workers": 1, "data_docs": False}
    )
    params.generation.evaluate.recurrent = params.generation.evaluate.recurrent.model_copy(update={"steps": 4})
    dataset = tmp_path / "rf1m-gen"
    result = api.simulate_feedback(params, GENERATOR, dataset, tmp_path / "reports", progress=False)
    assert result["status"] == "ingested" and result["rows_accepted"] == 6
    assert result["labels"]["unsuitable"] == 0
    manifest = pq.read_table(dataset / layout.MANIFEST_FILE).to_pylist()
    assert len(manifest) == 6 and all(row["depth"] and row["saliency"] for row in manifest)
    assert not list(tmp_path.glob(".rf1m-gen.batch-*"))  # the temporary batch is gone


def test_a_data_version_outside_a_dvc_repository_is_untracked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "feedback").mkdir()
    assert api.record_data_version(tmp_path / "feedback") == "untracked"


def test_an_announcement_needs_a_batch_and_a_server_that_answers(tmp_path: Path, monkeypatch) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from reliable_ad.data.feedback import FeedbackError

    with pytest.raises(FeedbackError, match="does not exist"):
        api.announce_feedback(tmp_path / "nothing")
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    # neither in the environment nor in Prefect's settings (a test harness of the session may have set them)
    with temporary_settings(restore_defaults={PREFECT_API_URL}), pytest.raises(UserError, match="is not set"):
        api.announce_feedback(tmp_path)
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")  # nothing listens there
    with pytest.raises(UserError, match=r"PREFECT_API_URL=http://127.0.0.1:9/api does not answer"):
        api.announce_feedback(tmp_path)
