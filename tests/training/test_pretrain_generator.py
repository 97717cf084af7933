import json

from reliable_ad.generation.config import PretrainConfig
from reliable_ad.models.config import TinyGeneratorConfig
from reliable_ad.models.generator import load_components
from reliable_ad.training.pretrain_generator import export_generator, pretrain_tiny_generator


def _cfg(**kw) -> PretrainConfig:
    base = {
        "model": TinyGeneratorConfig(unet_channels=(16, 32, 32), vae_channels=(8, 16, 16)),
        "vae_steps": 2,
        "vae_batch": 4,
        "steps": 3,
        "batch": 4,
        "checkpoint_every": 2,
        "eval_every": 100,
        "eval_samples": 4,
        "eval_steps": 2,
        "threads": 1,
    }
    return PretrainConfig(**{**base, **kw})


def test_pretraining_resumes_and_exports_a_loadable_generator(tmp_path) -> None:
    card = pretrain_tiny_generator(_cfg(), tmp_path / "run")
    assert card["steps"] == 3 and 0.0 <= card["reviewer_available_rate"] <= 1.0
    assert json.loads((tmp_path / "run" / "model_card.json").read_text())["synth_seed"] == 1000
    assert (tmp_path / "run" / "sample_grid.png").exists()
    components = load_components(tmp_path / "run" / "model")
    assert components.vae.config.scaling_factor != 1.0  # measured on the VAE's latents
    log = (tmp_path / "run" / "train_log.jsonl").read_text().splitlines()

    again = pretrain_tiny_generator(_cfg(), tmp_path / "run")  # resumes at the last checkpoint: nothing to redo
    assert again["steps"] == 3
    assert (tmp_path / "run" / "train_log.jsonl").read_text().splitlines() == log

    earlier = export_generator(_cfg(), tmp_path / "run" / "checkpoints" / "step-00000002", tmp_path / "exported")
    assert earlier["steps"] == 2 and (tmp_path / "exported" / "model" / "controlnet").exists()
