import numpy as np
import pytest
import torch
from diffusers import ControlNetModel

from reliable_ad.data.config import SynthConfig
from reliable_ad.data.synth.world import draw_sample
from reliable_ad.generation.sampler import generate
from reliable_ad.models.generator import (
    check_controlnet_matches,
    controlnet_for_inpainting,
    load_components,
    save_components,
)


@pytest.fixture(scope="module")
def components(make_components):
    return make_components()


def _products(n: int) -> list:
    return [draw_sample(SynthConfig(), i).rendering for i in range(n)]


def test_generate_pastes_the_product_back(components) -> None:
    renders = _products(2)
    images = generate(components, [r.product for r in renders], [r.prompt for r in renders], [1, 2], steps=2)
    for image, r in zip(images, renders, strict=True):
        mask = r.product[..., 3] >= 128
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8
        assert np.array_equal(image[mask], r.product[..., :3][mask])


def test_save_and_load_round_trip(components, tmp_path) -> None:
    save_components(components, tmp_path / "gen")
    assert list((tmp_path / "gen" / "controlnet").glob("*.safetensors"))
    loaded = load_components(tmp_path / "gen")
    r = _products(1)[0]
    a = generate(components, [r.product], [r.prompt], [7], steps=2)[0]
    b = generate(loaded, [r.product], [r.prompt], [7], steps=2)[0]
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1


def test_missing_model_path_is_a_clear_offline_error(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="offline"):
        load_components(tmp_path / "nowhere")


def test_controlnet_takes_latents_and_unet_weights(components) -> None:
    controlnet = controlnet_for_inpainting(components.unet)
    assert controlnet.config.in_channels == 4
    assert torch.equal(controlnet.conv_in.weight, components.unet.conv_in.weight[:, :4])
    name = "down_blocks.1.attentions.0.proj_in.weight"
    assert torch.equal(controlnet.state_dict()[name], components.unet.state_dict()[name])


def test_mismatched_controlnet_is_refused(components) -> None:
    other = ControlNetModel(
        block_out_channels=(32, 64, 64),
        layers_per_block=1,
        cross_attention_dim=64,
        norm_num_groups=8,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        conditioning_embedding_out_channels=(16, 32, 64),
    )
    with pytest.raises(ValueError, match="block_out_channels"):
        check_controlnet_matches(components.unet, other)


def test_tokenizer_is_offline_and_word_level(components) -> None:
    tok = components.tokenizer
    ids = tok("sky blue walls").input_ids
    assert tok.unk_token_id not in ids
    assert tok.unk_token_id in tok("zebra walls").input_ids
