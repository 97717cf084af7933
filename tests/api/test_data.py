"""Datasets through the API: the steps a DVC stage and a flow task run alike."""

import json
from pathlib import Path

from reliable_ad import api
from reliable_ad.data import layout
from reliable_ad.params import Params

PARAMS = Params(data={"synth": {"n": 16, "seed": 3}, "validate": {"workers": 1, "data_docs": False}})


def test_a_dataset_made_imported_validated_and_prepared_with_its_quarantine_left_out(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    assert api.synth(PARAMS, root)["n"] == 16
    summary = api.import_dataset(PARAMS, root, summary=tmp_path / "import.json")
    assert summary["rows_accepted"] == 16 and json.loads((tmp_path / "import.json").read_text()) == summary
    image = sorted((root / layout.IMAGES_DIR).iterdir())[0]
    image.write_bytes(image.read_bytes()[:40])  # truncated: the file pass quarantines its row
    verdict = api.validate(PARAMS, root, metrics=tmp_path / "validation.json")
    assert not verdict.success and (root / api.data.VALIDATION_DIR).is_dir()  # ROOT/validation by default
    assert json.loads((tmp_path / "validation.json").read_text())["rows_quarantined"] == 1
    prepared = api.prepare(PARAMS, root, None, [], tmp_path / "shards")  # the verdict in ROOT/validation counts
    assert prepared["rows_quarantined"] == 1 and sum(prepared["rows_written"].values()) == 15
