"""What the API's functions share: a judge loaded from a folder, what it is called, every setting in effect."""

from pathlib import Path

import yaml

from reliable_ad.api.common import generates_the_same, judge_from, judge_version, settings
from reliable_ad.data.hashing import folder_hash
from reliable_ad.params import Params


def test_a_judge_from_a_folder_and_its_name(tmp_path: Path, make_rfnet) -> None:
    make_rfnet().save(tmp_path / "judge")
    judge = judge_from(Params(), tmp_path / "judge")
    assert judge.source == tmp_path / "judge" and judge.threshold == 0.5
    assert judge_version(tmp_path / "judge") == f"rfnet-{folder_hash(tmp_path / 'judge')[:12]}"
    assert judge_version("rfnet@champion") == "rfnet@champion"  # a registry alias is kept as given


def test_settings_are_every_value_in_effect_and_load_back() -> None:
    params = Params(rfnet={"train": {"epochs": 3}})
    values = yaml.safe_load(settings(params))
    assert values["rfnet"]["train"]["epochs"] == 3 and values["data"]["import"]["require_metadata"] is True
    assert Params.model_validate(values).rfnet.train == params.rfnet.train  # the printed tree is valid params


def test_two_controlnets_generate_the_same_when_only_their_records_differ(tmp_path: Path) -> None:
    for name in ("start", "kept"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "diffusion_pytorch_model.safetensors").write_bytes(b"weights")
    (tmp_path / "kept" / "label_tune.json").write_text("{}")  # how it was trained: not what it generates
    assert generates_the_same(tmp_path / "start", tmp_path / "kept")
    (tmp_path / "kept" / "prompt_pool.json").write_text("[]")  # a learnt pool generates other images
    assert not generates_the_same(tmp_path / "start", tmp_path / "kept")
    assert folder_hash(tmp_path / "kept", ["*.json"]) == folder_hash(tmp_path / "start")
