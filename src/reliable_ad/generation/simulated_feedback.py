"""The embedded world's human feedback: the base generator's images of RF1M-synth products (or a catalog's with
a reviewer at hand), labelled by the simulated reviewer.

RF1M *is* this: images made by the production generator, each labelled by a person. RF1M-synth's renderings
teach RFNet the classes, but a judge trained only on them has never seen the generator's own blur and
artefacts (measured: ROC AUC 0.64 on generated images). This module makes the missing part: one image per
product from the generator (the first attempt of recurrent generation, same steps and prompts), labelled by the
reviewer, written as a feedback batch in the RF1M layout. It joins the data like any batch a reviewer team
sends: through `reliable_ad.data.feedback.ingest` (validation, maps computed there, its own manifest).

Products come from RF1M-synth at their own seed, so their ids never clash with the main dataset's, the
generator's pre-training products or the evaluation's; each keeps RF1M-synth's split rule (held-out categories
are the test split), so the judge is still tested on categories it never saw.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from reliable_ad.data import layout
from reliable_ad.data.imageio import encode_png
from reliable_ad.data.products import ProductSource
from reliable_ad.errors import InputError
from reliable_ad.generation.config import RecurrentConfig, SimulatedFeedbackConfig
from reliable_ad.generation.denoise import Denoiser
from reliable_ad.generation.prompts import PromptConfig
from reliable_ad.generation.recurrent import job_for
from reliable_ad.labels import RF1M_LABELS

LABEL_IDS = {name: i for i, name in RF1M_LABELS.items()}


@torch.no_grad()
def simulate_feedback(
    denoiser: Denoiser,
    pool: Sequence[PromptConfig],
    cfg: SimulatedFeedbackConfig,
    source: ProductSource,
    out: Path,
    batch_size: int = 16,
    progress: bool = True,
    generator: str | None = None,
) -> dict[str, int]:
    """Write a feedback batch of `cfg.products` x `cfg.images_per_product` generated images with the reviewer's
    labels to `out`; `generator` (the version of the ControlNet that made them) goes into each row's metadata, so
    a method tuning another version refuses the batch. Returns the count of each label."""
    products = source.products(cfg.products, cfg.product_seed, None)
    if any(product.reviewer is None for product in products):
        raise InputError(
            "simulated feedback needs a reviewer at hand, and these products have none (a catalog's are labelled "
            "by people: push the images to the review queue, `rad review push`, or set data.catalog.reviewer)"
        )
    # image j of every product comes from the jobs of seed + j (j = 0 is the batch of one image per product)
    work = [(i, j) for j in range(cfg.images_per_product) for i in range(len(products))]
    (out / layout.IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    (out / layout.PRODUCTS_DIR).mkdir(parents=True, exist_ok=True)
    counts = dict.fromkeys(RF1M_LABELS.values(), 0)
    with (
        (out / layout.LABEL_FILE).open("w") as labels,
        (out / layout.METADATA_FILE).open("w") as metadata,
        tqdm(total=len(work), desc="generate + review", unit="image", disable=not progress) as bar,
    ):
        for start in range(0, len(work), batch_size):
            chunk = work[start : start + batch_size]
            jobs = [job_for(products[i], i, 1, pool, RecurrentConfig(seed=cfg.seed + j)) for i, j in chunk]
            slots = [denoiser.start(job) for job in jobs]
            while not denoiser.done(slots[0]):
                denoiser.advance(slots)
            images = denoiser.images(torch.cat([s.latents for s in slots]), slots)
            for (i, j), slot, image in zip(chunk, slots, images, strict=True):
                product = products[i]
                assert product.reviewer is not None  # checked above
                label = product.reviewer(image)
                counts[label] += 1
                name = f"g{cfg.product_seed}-{slot.job.key}{f'-{j}' if j else ''}.png"
                (out / layout.IMAGES_DIR / name).write_bytes(encode_png(image))
                (out / layout.PRODUCTS_DIR / name).write_bytes(encode_png(product.rgba))
                labels.write(f"{name}\t{LABEL_IDS[label]}\n")
                entry = {
                    "image": name,
                    "product_id": product.key,
                    "prompt": slot.job.prompt,
                    "title": product.caption,
                    "category": product.category,
                    "height_cm": product.height_cm,
                    "split": product.split,
                    "seed": slot.job.seed,
                    "source": "generated",
                    **({"generator": generator} if generator else {}),
                }
                metadata.write(json.dumps(entry) + "\n")
            bar.update(len(chunk))
    return counts
