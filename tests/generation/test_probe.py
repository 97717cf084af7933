import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from reliable_ad.data.synth.products import held_out_products
from reliable_ad.generation.config import RecurrentConfig
from reliable_ad.generation.denoise import Denoiser
from reliable_ad.generation.probe import (
    SKIPPED_FILE,
    TAPPED,
    FeatureTap,
    Head,
    ModelVersions,
    Probe,
    ProbeError,
    fit_head,
)
from reliable_ad.generation.prompts import PromptConfig
from reliable_ad.generation.recurrent import job_for, recurrent_generate
from reliable_ad.generation.scores import Scorer, capture_advance

POOL = [PromptConfig(prompt="front view of a product placed on a oak desktop, {} walls", flag=1)]
VERSIONS = ModelVersions("gen-a", "cn-a", "judge-a")


@pytest.fixture(scope="module")
def components(make_components):
    return make_components(seed=4)


@pytest.fixture(scope="module")
def products():
    return held_out_products(3, seed=11)


def _slots(denoiser, products):
    cfg = RecurrentConfig(steps=denoiser.steps)
    return [denoiser.start(job_for(p, i, 1, POOL, cfg)) for i, p in enumerate(products)]


def _width(components) -> int:
    """Features per sample of the default tap on these components."""
    tap = FeatureTap(components, TAPPED, grid=2)
    denoiser = Denoiser(components, steps=4, guidance_scale=2.0)
    slots = _slots(denoiser, held_out_products(1, seed=1))
    with tap.capture():
        denoiser.advance(slots)
    tap.close()
    return tap.features().shape[1]


def _probe(components, steps=(2,), schedule=4, weight_sign=1.0, versions=VERSIONS) -> Probe:
    width = _width(components)
    generator = torch.Generator().manual_seed(0)
    heads = {
        step: Head(
            torch.zeros(width),
            torch.ones(width),
            weight_sign * torch.randn(width, generator=generator),
            torch.tensor(0.0),
            torch.tensor([1.0, 0.5, 0.0]),
        )
        for step in steps
    }
    return Probe(heads, TAPPED, 2, schedule, versions)


def test_the_tap_keeps_both_guidance_branches_and_leaves_the_images_unchanged(components, products) -> None:
    plain = Denoiser(components, steps=4, guidance_scale=2.0)
    tapped = Denoiser(components, steps=4, guidance_scale=2.0)
    a, b = _slots(plain, products), _slots(tapped, products)
    tap = FeatureTap(components, TAPPED, grid=2)
    for _ in range(4):
        plain.advance(a)
        capture_advance(tapped, tap, b, {2, 3})
    tap.close()
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x.latents, y.latents)
    unet = components.unet.config.block_out_channels
    channels = unet[-1] + sum(reversed(unet)) + components.controlnet.config.block_out_channels[-1]
    assert b[0].extra["features"].shape == (2 * channels * 4,)  # two branches, a 2 x 2 grid per channel
    assert not torch.equal(b[0].extra["features"], b[1].extra["features"])


def test_the_tap_pools_only_the_rows_asked_for(components, products) -> None:
    denoiser = Denoiser(components, steps=4, guidance_scale=2.0)
    slots = _slots(denoiser, products)
    tap = FeatureTap(components, TAPPED)
    with tap.capture():
        denoiser.advance([replace(s) for s in slots])
    every = tap.features()
    with tap.capture([2, 0]):
        denoiser.advance([replace(s) for s in slots])
    tap.close()
    assert torch.allclose(tap.features(), every[[2, 0]], atol=1e-6)


def test_the_tap_keeps_nothing_outside_capture(components, products) -> None:
    denoiser = Denoiser(components, steps=4, guidance_scale=2.0)
    tap = FeatureTap(components, TAPPED)
    denoiser.advance(_slots(denoiser, products))
    with pytest.raises(ProbeError, match="inside capture"):
        tap.features()
    tap.close()


def test_a_block_the_models_lack_is_named(components) -> None:
    with pytest.raises(ProbeError, match=r"unet\.no_such_block"):
        FeatureTap(components, ("unet.no_such_block",))
    with pytest.raises(ProbeError, match=r"'vae\.decoder'"):
        FeatureTap(components, ("vae.decoder",))


def test_a_saved_probe_scores_the_same_and_belongs_to_its_models(components, tmp_path) -> None:
    probe = _probe(components)
    probe.save(tmp_path / "probe")
    assert {p.name for p in (tmp_path / "probe").iterdir()} == {"probe.json", "probe.safetensors"}
    loaded = Probe.load(tmp_path / "probe")
    loaded.check(VERSIONS, 4)
    features = torch.randn(5, probe.heads[2].weight.shape[0])
    assert torch.allclose(loaded.head(2)(features), probe.head(2)(features))


@pytest.mark.parametrize(
    "versions",
    [
        ModelVersions("gen-b", "cn-a", "judge-a"),
        ModelVersions("gen-a", "cn-b", "judge-a"),
        ModelVersions("gen-a", "cn-a", "judge-b"),
    ],
    ids=["generator", "controlnet", "judge"],
)
def test_a_probe_of_other_models_is_refused_naming_both_versions(components, tmp_path, versions) -> None:
    _probe(components).save(tmp_path / "probe")
    with pytest.raises(ProbeError) as error:
        Probe.load(tmp_path / "probe").check(versions, 4)
    assert VERSIONS.describe() in str(error.value) and versions.describe() in str(error.value)


def test_a_probe_of_another_schedule_is_refused(components, tmp_path) -> None:
    _probe(components).save(tmp_path / "probe")
    with pytest.raises(ProbeError, match="4-step schedule, not a 20-step"):
        Probe.load(tmp_path / "probe").check(VERSIONS, 20)


def test_a_probe_without_versions_is_not_saved(components, tmp_path) -> None:
    with pytest.raises(ProbeError, match="cannot be saved"):
        _probe(components, versions=None).save(tmp_path / "probe")


def test_broken_probe_files_are_named(components, tmp_path) -> None:
    with pytest.raises(ProbeError, match=r"probe\.json: missing"):
        Probe.load(tmp_path)
    _probe(components).save(tmp_path / "probe")
    (tmp_path / "probe" / "probe.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ProbeError, match="not a readable probe"):
        Probe.load(tmp_path / "probe")


def test_a_folder_where_the_evaluation_trained_no_probe_says_why(tmp_path) -> None:
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / SKIPPED_FILE).write_text(json.dumps({"skipped": "2 calibration accepts, 4 needed"}))
    with pytest.raises(ProbeError, match=r"trained no probe here \(2 calibration accepts, 4 needed\)"):
        Probe.load(tmp_path / "base")


def test_a_probe_step_beyond_the_schedule_is_refused(components) -> None:
    denoiser = Denoiser(components, steps=4)
    probe = _probe(components, steps=(2,), schedule=4)
    with pytest.raises(ProbeError, match=r"steps \[4\] lie outside the 4-step schedule"):
        Scorer(denoiser, None, "probe", probe, [4])
    with pytest.raises(ProbeError, match=r"steps \[1\] lie outside"):  # the probe reads the change since step 1
        Scorer(denoiser, None, "probe", probe, [1])
    with pytest.raises(ProbeError, match=r"heads at steps \[2\], not at \[3\]"):
        Scorer(denoiser, None, "probe", probe, [3])
    with pytest.raises(ProbeError, match="need a probe"):
        Scorer(denoiser, None, "both", None, [2])
    with pytest.raises(ProbeError, match="4-step schedule, this one has 6"):
        Scorer(Denoiser(components, steps=6), None, "probe", probe, [2])


def test_the_head_learns_a_separable_signal_out_of_fold() -> None:
    rng = np.random.default_rng(0)
    accepted = rng.random(120) < 0.4
    features = rng.normal(size=(120, 50)).astype(np.float32)
    features[:, 0] += 3.0 * accepted
    x0 = rng.random(120)
    head, probe_oof, both_oof = fit_head(features, accepted, x0, c=1.0, folds=5)
    for scores in (probe_oof, both_oof):
        assert scores[accepted].mean() > scores[~accepted].mean() + 0.4
    assert head(torch.from_numpy(features))[accepted].mean() > 0.7


def test_early_rejection_by_the_probe_stops_slots_without_decoding(components, products) -> None:
    """A probe that says 'fail' to everything (bias far below 0) stops every attempt at its step; the judge
    is never called before the end, since nothing reaches the end."""

    class NoJudge:
        threshold = 0.5

        def __call__(self, *args):
            raise AssertionError("the probe alone needs no judge")

    probe = _probe(components, steps=(2,), schedule=4)
    probe.heads[2].bias = torch.tensor(-50.0)
    cfg = RecurrentConfig(batch_size=2, max_attempts=2, steps=4, early_reject=True, early_step=2, early_by="probe")
    stats = recurrent_generate(
        Denoiser(components, steps=4, guidance_scale=2.0), NoJudge(), products, POOL, cfg, progress=False, probe=probe
    )
    assert all(a.status == "aborted" and a.step_reached == 2 for a in stats.attempts)
    assert len(stats.attempts) == 3 * 2 and stats.unet_evals == 3 * 2 * 2
    assert stats.check_overhead > 0


def test_a_saved_probe_switches_on_its_calibrated_check_for_its_models_only(generator, tmp_path) -> None:
    import shutil

    from reliable_ad.api.generation import model_versions, probe_for
    from reliable_ad.judge import RFNetJudge
    from reliable_ad.models.config import RFNetConfig
    from reliable_ad.models.generator import load_components
    from reliable_ad.models.rfnet import RFNet

    RFNet(RFNetConfig(width=32, tiny_channels=[8, 16, 32], fusion_layers=1, vocabulary=["cm"])).save(tmp_path / "judge")
    judge = RFNetJudge.from_path(tmp_path / "judge")
    probe = _probe(load_components(generator, None), versions=model_versions(generator, None, judge))
    probe.report["early"] = {"by": "probe", "step": 2, "threshold": 0.3}
    probe.save(tmp_path / "probe")
    cfg, loaded = probe_for(tmp_path / "probe", generator, None, judge, RecurrentConfig(steps=4))
    assert (cfg.early_reject, cfg.early_by, cfg.early_step, cfg.early_threshold) == (True, "probe", 2, 0.3)
    assert loaded.steps == [2]
    other = tmp_path / "controlnet"
    shutil.copytree(generator / "controlnet", other)
    (other / "README.md").write_text("another ControlNet")  # other files: another folder hash
    with pytest.raises(ProbeError, match="controlnet") as error:
        probe_for(tmp_path / "probe", generator, other, judge, RecurrentConfig(steps=4))
    assert model_versions(generator, other, judge).describe() in str(error.value)
