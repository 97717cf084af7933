"""The judge: verdicts on generated images (inputs checked, resized, differentiable on request), maps made as
the model's config says, and conservative ensembles."""

import numpy as np
import pytest
import torch

from reliable_ad.judge import JudgeEnsemble, JudgeInputError, RFNetJudge

CAPTIONS = ["red perfume bottle, 24 cm", "blue coffee mug, 9 cm"]
FIVE_WAY = ["available", "space_mismatch", "size_mismatch", "indistinctiveness", "shape_hallucination"]


def _arrays(size: int = 64):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (size, size, 3), dtype=np.uint8) for _ in range(2)]
    products = [np.zeros((size, size, 4), np.uint8) for _ in range(2)]
    for p in products:
        p[20:40, 20:40] = 200
    return images, products


def test_judge_outputs_and_resizing(make_judge) -> None:
    judge = make_judge()
    images, products = _arrays()
    out = judge(images, products, CAPTIONS)
    assert len(out.labels) == 2 and out.p_available.shape == (2,)
    assert torch.all((out.p_available >= 0) & (out.p_available <= 1))
    big_images, big_products = _arrays(128)  # another size is resized, not misread
    assert judge(big_images, big_products, CAPTIONS).logits.shape == (2, 6)


def test_judge_refuses_what_it_cannot_read(make_judge) -> None:
    judge = make_judge()
    images, products = _arrays()
    with pytest.raises(JudgeInputError, match="RGBA"):
        judge(images, [p[..., :3] for p in products], CAPTIONS)
    with pytest.raises(JudgeInputError, match="RGB"):
        judge([np.dstack([i, i[..., :1]]) for i in images], products, CAPTIONS)
    with pytest.raises(JudgeInputError, match="differ"):
        judge(images, products, CAPTIONS[:1])
    with pytest.raises(JudgeInputError, match="lacks 'available'"):
        make_judge(labels=["space_mismatch", "size_mismatch"])
    # values are never misread: float arrays, 0-255 tensors and integer tensors are refused, not rescaled
    with pytest.raises(JudgeInputError, match="uint8"):
        judge([i.astype(np.float32) / 255 for i in images], products, CAPTIONS)
    with pytest.raises(JudgeInputError, match="uint8"):
        judge(images, [p.astype(np.uint16) for p in products], CAPTIONS)
    as_tensor = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)
    with pytest.raises(JudgeInputError, match="float"):
        judge(as_tensor, products, CAPTIONS)
    with pytest.raises(JudgeInputError, match=r"\[0, 1\]"):
        judge(as_tensor.float(), products, CAPTIONS)


def test_judge_is_differentiable_on_request(make_judge) -> None:
    judge = make_judge()
    _, products = _arrays()
    generated = torch.rand(2, 3, 64, 64, requires_grad=True)
    judge(generated, products, CAPTIONS, grad=True).logits[:, 0].sum().backward()
    assert generated.grad is not None and generated.grad.abs().sum() > 0
    assert not judge(generated, products, CAPTIONS).logits.requires_grad
    judge.requires_grad_check()


def test_judge_computes_its_depth_maps_with_a_dpt_model(tiny_dpt, tmp_path, make_judge) -> None:
    judge = make_judge(depth_extractor=f"dpt:{tiny_dpt}")
    images, products = _arrays()
    assert judge(images, products, CAPTIONS).logits.shape == (2, 6)
    judge.model.save(tmp_path / "rf")  # the extractor's name travels with the model
    assert RFNetJudge.from_path(tmp_path / "rf").config.depth_extractor == f"dpt:{tiny_dpt}"


def test_an_ensemble_is_conservative_and_refuses_judges_of_other_label_sets(make_judge) -> None:
    judges = [make_judge(), make_judge(seed=1, fusion_layers=3)]
    torch.manual_seed(0)
    images = torch.rand(3, 3, 64, 64)
    products = [np.zeros((64, 64, 4), np.uint8)] * 3
    each = torch.stack([j.log_p_available(images, products, ["a"] * 3) for j in judges])
    ensemble = JudgeEnsemble(judges, "min")
    assert torch.equal(ensemble.log_p_available(images, products, ["a"] * 3), each.min(0).values)
    spread = JudgeEnsemble(judges, "mean_minus_std").log_p_available(images, products, ["a"] * 3)
    assert torch.allclose(spread, each.mean(0) - each.std(0))
    five_way = make_judge(labels=FIVE_WAY)
    with pytest.raises(JudgeInputError, match="different label sets"):
        JudgeEnsemble([judges[0], five_way])
    with pytest.raises(JudgeInputError, match="at least 2 judges"):
        JudgeEnsemble(judges[:1])
