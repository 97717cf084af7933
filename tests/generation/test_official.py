import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from reliable_ad.data.config import SynthConfig
from reliable_ad.data.cutout import ProductImageError, centre_zoom, ensure_alpha
from reliable_ad.data.synth.world import draw_sample
from reliable_ad.generation.config import GenerateArgs
from reliable_ad.generation.official import run_generate
from reliable_ad.generation.prompts import PromptPoolError, load_prompt_pool
from reliable_ad.models.generator import save_components

POOL = [
    {"prompt": "front view of a product placed on a oak desktop, {} walls", "image_scale": 0.5, "flag": 1},
    {"prompt": "front view of a product placed on a white desktop, grey walls", "image_scale": 0.6, "flag": 0},
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory, make_components):
    root = tmp_path_factory.mktemp("official")
    components = make_components()
    save_components(components, root / "gen")
    products = root / "products"
    products.mkdir()
    for i in range(3):
        Image.fromarray(draw_sample(SynthConfig(), i).rendering.product).save(products / f"p{i}.png")
    rgb = np.full((64, 64, 3), 255, np.uint8)
    rgb[20:40, 24:40] = (200, 30, 30)  # an RGB product on white: the white becomes transparent
    Image.fromarray(rgb).save(products / "white.png")
    (root / "pool.json").write_text(json.dumps(POOL))
    return root


def _args(setup: Path, out: str, **kw) -> GenerateArgs:
    settings = {"data_path": setup / "products", "save_path": setup / out, "seed": 5, **kw}
    return GenerateArgs(
        base_model_path=str(setup / "gen"), config=setup / "pool.json", num_inference_steps=2, batch_size=2, **settings
    )


@pytest.mark.parametrize("sampler", ["DDIM", "Euler a", "DPM++ SDE Karras"])
def test_generate_logs_every_output(setup, sampler: str) -> None:
    records = run_generate(_args(setup, f"out-{sampler}", iterations=2, sampler_name=sampler))
    assert len(records) == 4
    log = [json.loads(line) for line in (setup / f"out-{sampler}" / "log.jsonl").read_text().splitlines()]
    assert [r["seed"] for r in log] == [5, 6, 7, 8]
    assert {r["config_entry"] for r in log} == {0, 1} and "{}" not in log[0]["prompt"]
    for record in records:
        image = np.asarray(Image.open(record["output"]))
        product = Image.open(record["product"])
        canvas = centre_zoom(
            ensure_alpha(np.asarray(product.convert(product.mode))),
            (64, 64),
            POOL[record["config_entry"]]["image_scale"],
        )
        opaque = canvas[..., 3] == 255
        assert np.abs(image[opaque].astype(int) - canvas[..., :3][opaque].astype(int)).max() <= 1


def test_without_a_size_a_pipeline_generates_at_its_native_size(setup, tmp_path, make_components) -> None:
    """As diffusers and the official sampler do (512 px for SD1.5): here 48 px, a UNet sample size of 12 times
    the VAE's scale factor 4."""
    save_components(make_components(image_size=48), tmp_path / "gen48")
    args = _args(setup, "native").model_copy(update={"base_model_path": str(tmp_path / "gen48")})
    records = run_generate(args)
    assert [Image.open(r["output"]).size for r in records] == [(48, 48)] * 2
    assert {(r["width"], r["height"]) for r in records} == {(48, 48)}
    wide = run_generate(args.model_copy(update={"save_path": tmp_path / "wide", "width": 64}))
    assert {Image.open(r["output"]).size for r in wide} == {(64, 48)}


def test_every_product_is_checked_before_any_model_loads(setup, tmp_path) -> None:
    """Whatever the seed draws: the run is refused naming each bad file, before the (missing) model is loaded."""
    products = tmp_path / "products"
    shutil.copytree(setup / "products", products)
    busy = np.random.default_rng(0).integers(0, 200, (64, 64, 3), dtype=np.uint8)  # no white background
    Image.fromarray(busy).save(products / "busy.jpg")
    (products / "broken.png").write_bytes(b"not an image")
    missing_model = str(tmp_path / "missing")
    args = _args(setup, "never", data_path=products).model_copy(update={"base_model_path": missing_model})
    with pytest.raises(ProductImageError) as refused:
        run_generate(args)
    lines = str(refused.value).splitlines()
    assert lines[0] == f"2 of 6 product images in {products} cannot be used:"
    assert lines[1].startswith(f"  {products / 'broken.png'}: cannot decode image (not an image")
    assert lines[2].startswith(f"  {products / 'busy.jpg'}: RGB without alpha")
    assert not (setup / "never").exists()


def _log(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]


def test_runs_into_one_folder_keep_every_image_and_record(setup, tmp_path) -> None:
    """Two runs, two seeds: four images, four records, each pointing at its own image (names used to collide)."""
    first = run_generate(_args(setup, "unused", save_path=tmp_path / "out", iterations=1))
    before = {r["output"]: Path(r["output"]).read_bytes() for r in first}
    second = run_generate(_args(setup, "unused", save_path=tmp_path / "out", iterations=1, seed=9))
    log = _log(tmp_path / "out")
    assert log == first + second and [r["run"] for r in log] == [1, 1, 2, 2]
    assert sorted(r["output"] for r in log) == sorted(str(p) for p in (tmp_path / "out").glob("*.png"))
    assert all(Path(name).read_bytes() == data for name, data in before.items())


def test_a_crash_mid_run_leaves_a_record_of_every_image(setup, tmp_path, monkeypatch) -> None:
    """Records are written as images are: a run that dies in its second batch has logged the first."""
    import reliable_ad.generation.official as official

    real, calls = official.control_inputs, iter(range(100))

    def control_inputs(*args, **kwargs):
        if next(calls) >= 2:  # the second batch of two
            raise RuntimeError("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(official, "control_inputs", control_inputs)
    with pytest.raises(RuntimeError, match="killed"):
        run_generate(_args(setup, "unused", save_path=tmp_path / "out", iterations=2))
    log = _log(tmp_path / "out")
    assert len(log) == 2 and sorted(r["output"] for r in log) == sorted(map(str, (tmp_path / "out").glob("*.png")))


def test_unknown_sampler_fails_before_any_model_loads(setup) -> None:
    """The model path does not exist either: only a check made before loading reports the sampler."""
    args = _args(setup, "bad", sampler_name="PLMS").model_copy(update={"base_model_path": str(setup / "missing")})
    with pytest.raises(ValueError, match="unknown sampler 'PLMS'"):
        run_generate(args)


def test_clip_skip_reaches_the_text_encoder(setup) -> None:
    def images(out: str, clip_skip: int | None) -> list[np.ndarray]:
        records = run_generate(_args(setup, out), clip_skip=clip_skip)
        assert all(r["clip_skip"] == clip_skip for r in records)
        return [np.asarray(Image.open(r["output"])).astype(int) for r in records]

    plain, last, skip = images("clip-none", None), images("clip-0", 0), images("clip-1", 1)
    assert all(np.abs(a - b).max() <= 1 for a, b in zip(plain, last, strict=True))  # 0 skips nothing
    assert any(np.abs(a - b).max() > 1 for a, b in zip(plain, skip, strict=True))
    with pytest.raises(ValueError, match="clip_skip 2"):
        run_generate(_args(setup, "clip-2"), clip_skip=2)  # the tiny text encoder has two layers


def test_rad_generate_takes_the_official_flag_names(setup) -> None:
    """`rad generate` as sample.py is called; the pool entry has no image_scale, so --image_scale places it."""
    from typer.testing import CliRunner

    from reliable_ad.cli import app

    (setup / "pool-unscaled.json").write_text(json.dumps([{"prompt": "a product on a white desk"}]))
    out = setup / "cli"
    flags = {
        "--pipeline": "T2I",
        "--base_model_path": str(setup / "gen"),
        "--data_path": str(setup / "products"),
        "--config": str(setup / "pool-unscaled.json"),
        "--save_path": str(out),
        "--batch_size": "2",
        "--num_inference_steps": "2",
        "--iterations": "1",
        "--seed": "5",
        "--sampler_name": "Euler a",
        "--image_scale": "0.4",
        "--clip_skip": "1",
    }
    result = CliRunner().invoke(app, ["generate", *(x for item in flags.items() for x in item), "--save_concat"])
    assert result.exit_code == 0, result.output
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert len(log) == 2 and [r["seed"] for r in log] == [5, 6]
    assert all(r["image_scale"] == 0.4 and r["clip_skip"] == 1 and r["sampler"] == "Euler a" for r in log)
    for record in log:
        image = np.asarray(Image.open(record["output"]))
        product = Image.open(record["product"])
        canvas = centre_zoom(ensure_alpha(np.asarray(product.convert(product.mode))), (64, 64), 0.4)
        opaque = canvas[..., 3] == 255
        assert np.abs(image[opaque].astype(int) - canvas[..., :3][opaque].astype(int)).max() <= 1
        concat = np.asarray(Image.open(record["concat"]))
        assert Path(record["concat"]).parent == setup / "cli_concat" and concat.shape == (64, 128, 3)
        assert np.array_equal(concat[:, 64:], image) and (concat[:, :64][~opaque.any(axis=1)] == 255).all()


def test_rad_generate_refuses_other_pipelines(setup) -> None:
    from typer.testing import CliRunner

    from reliable_ad.cli import app

    result = CliRunner().invoke(app, ["generate", "--pipeline", "I2I", "--save_path", str(setup / "never")])
    assert result.exit_code == 1 and "only T2I" in result.output and "Traceback" not in result.output
    assert not (setup / "never").exists()


def test_missing_model_path_never_reaches_a_hub(setup, tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="offline"):
        run_generate(_args(setup, "bad").model_copy(update={"base_model_path": "runwayml/stable-diffusion-v1-5"}))


def test_product_without_alpha_or_white_background() -> None:
    with pytest.raises(ProductImageError, match="without a white background"):
        ensure_alpha(np.full((32, 32, 3), 90, np.uint8), source="p.jpg")


@pytest.mark.parametrize(
    ("pool", "message"),
    [
        ("[]", "non-empty JSON list"),
        ("{not json", "not valid JSON"),
        ('[{"prompt": "a"}, {"negative_prompt": "x"}]', "entry 1, field 'prompt'"),
        ('[{"prompt": "a", "image_scale": 2}]', "entry 0, field 'image_scale'"),
        ('[{"prompt": "no braces", "flag": 1}]', "needs a '{}'"),
    ],
)
def test_malformed_prompt_pool(tmp_path, pool: str, message: str) -> None:
    path = tmp_path / "pool.json"
    path.write_text(pool)
    with pytest.raises(PromptPoolError, match=message):
        load_prompt_pool(path)


def test_lora_with_scale(setup, tmp_path, make_components) -> None:
    """A LoRA file (written here in diffusers' format) changes the images at scale 1 and not at scale 0."""
    import torch
    from safetensors.torch import save_file

    unet = make_components().unet
    generator = torch.Generator().manual_seed(0)
    weights = {}
    for name, module in unet.named_modules():
        if name.endswith(("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn2.to_q")):
            weights[f"unet.{name}.lora_A.weight"] = torch.randn(4, module.in_features, generator=generator)
            weights[f"unet.{name}.lora_B.weight"] = torch.randn(module.out_features, 4, generator=generator)
    (tmp_path / "lora").mkdir()
    save_file(weights, str(tmp_path / "lora" / "pytorch_lora_weights.safetensors"))
    outputs = {}
    for name, kw in {"plain": {}, "zero": {"lora_scale": 0.0}, "one": {"lora_scale": 1.0}}.items():
        lora = {"lora_model_path": str(tmp_path / "lora")} if kw else {}
        records = run_generate(_args(setup, f"lora-{name}", **kw, **lora))
        outputs[name] = [np.asarray(Image.open(r["output"])).astype(int) for r in records]
    assert all(np.abs(a - b).max() <= 1 for a, b in zip(outputs["plain"], outputs["zero"], strict=True))
    assert any(np.abs(a - b).max() > 1 for a, b in zip(outputs["plain"], outputs["one"], strict=True))
