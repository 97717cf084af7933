import numpy as np
import pytest
import torch

from reliable_ad.errors import InputError
from reliable_ad.models.config import RFNetConfig
from reliable_ad.models.rfnet import RFNet, TinyTextEncoder, build_vocabulary

CAPTIONS = ["red perfume bottle, 24 cm", "blue coffee mug, 9 cm"]


def _inputs(batch: int = 2, size: int = 64) -> dict:
    torch.manual_seed(0)
    return {
        "product": torch.rand(batch, 4, size, size),
        "generated": torch.rand(batch, 3, size, size),
        "depth": torch.rand(batch, 1, size, size),
        "saliency": torch.rand(batch, 1, size, size),
        "caption": CAPTIONS[:batch],
    }


def _config(**kw) -> RFNetConfig:
    return RFNetConfig(vocabulary=build_vocabulary(CAPTIONS), width=32, tiny_channels=[8, 16, 32], **kw)


@pytest.mark.parametrize(
    "modalities",
    [
        ["product", "generated", "depth", "saliency", "caption"],
        ["generated", "depth", "saliency"],
        ["product", "depth", "saliency", "caption"],
        ["product", "generated", "saliency", "caption"],
        ["product", "generated", "depth", "caption"],
        ["product", "generated", "depth", "saliency"],
        ["generated"],
    ],
)
def test_every_modality_can_be_switched_off(modalities) -> None:
    model = RFNet(_config(modalities=modalities)).eval()
    logits = model({k: v for k, v in _inputs().items() if k in modalities})
    assert logits.shape == (2, 6)
    assert not any(name.startswith("encoders.depth") for name, _ in model.named_parameters()) or "depth" in modalities
    logits.sum().backward()  # every parameter serves the output (DDP needs no unused-parameter search)
    assert all(p.grad is not None for p in model.parameters())


def test_missing_modality_is_named() -> None:
    model = RFNet(_config())
    inputs = _inputs()
    del inputs["saliency"]
    with pytest.raises(InputError, match="saliency"):
        model(inputs)


def test_five_way_label_set() -> None:
    five = ["available", "space_mismatch", "size_mismatch", "indistinctiveness", "shape_hallucination"]
    model = RFNet(_config(labels=five))
    assert model(_inputs()).shape == (2, 5)
    assert model.available_index == 0


def test_bad_configs() -> None:
    with pytest.raises(ValueError, match="unknown modalities"):
        _config(modalities=["generated", "thermal"])
    with pytest.raises(ValueError, match="needs the product or the generated"):
        _config(modalities=["depth", "caption"])
    with pytest.raises(ValueError, match="caption needs the product"):
        _config(modalities=["generated", "caption"])
    with pytest.raises(ValueError, match="unknown label"):
        _config(labels=["available", "meh"])


def test_save_and_load_round_trip(tmp_path) -> None:
    model = RFNet(_config()).eval()
    model.save(tmp_path / "rf")
    loaded = RFNet.load(tmp_path / "rf")
    inputs = _inputs()
    with torch.no_grad():
        assert torch.allclose(model(inputs), loaded(inputs), atol=1e-6)
    with pytest.raises(FileNotFoundError, match="not an RFNet folder"):
        RFNet.load(tmp_path)


def test_numbers_are_values_not_words() -> None:
    encoder = TinyTextEncoder(["red", "cm"], width=16, max_tokens=6, heads=2)
    ids, values = encoder.tokenize(["red thing, 24 cm"])
    assert ids[0, :4].tolist() == [2, 1, encoder.number_id, 3]
    assert values[0, 2, 0] == pytest.approx(np.log1p(24.0))


def test_pretrained_encoders_by_path_load_without_network(tiny_pretrained_encoders, tmp_path) -> None:
    resnet, bert = tiny_pretrained_encoders
    config = _config(image_encoder=str(resnet), text_encoder=str(bert))
    model = RFNet(config).eval()
    model.save(tmp_path / "rf")
    loaded = RFNet.load(tmp_path / "rf")
    with torch.no_grad():
        assert torch.allclose(model(_inputs()), loaded(_inputs()), atol=1e-5)
