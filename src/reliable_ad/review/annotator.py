"""The embedded world's annotator: the simulated reviewer answering open Label Studio tasks through the API.

It looks at what a person would: the generated image and the product photo the task shows (read from the
queue folder the server serves them from) and the product's height from the task's metadata. It never reads a
label file or the judge's prediction. Answers go in as the token's user, a few requests at a time (each one
waits on the server, not on this process).
"""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from reliable_ad.data.imageio import to_rgb, to_rgba
from reliable_ad.data.reviewer import product_mask, review
from reliable_ad.errors import InputError
from reliable_ad.review.client import LabelStudio
from reliable_ad.review.queue import item_files, ours, read_image, verdict_result

WORKERS = 4


def reviewer_label(root: Path, task: dict[str, Any]) -> str:
    """What the simulated reviewer says of a task's image."""
    rad = task["data"]["rad"]
    files = item_files(root, rad)
    image, product = to_rgb(read_image(files["images"])), to_rgba(read_image(files["products"]))
    height = rad.get("height_cm")
    if height is None:
        raise InputError(f"task {task['id']}: no height_cm in its metadata; the reviewer judges size from it")
    return review(image, product_mask(product), float(height)).label


def annotate_open_tasks(client: LabelStudio, project: int, root: Path) -> dict[str, int]:
    """Answer every task of ours that nobody has answered; returns the count of each label given."""
    open_tasks = [t for t in ours(client.export(project, all_tasks=True)) if not t.get("annotations")]
    labels = [reviewer_label(root, t) for t in open_tasks]
    with ThreadPoolExecutor(WORKERS) as pool:
        list(pool.map(lambda t, label: client.annotate(t["id"], verdict_result(label)), open_tasks, labels))
    return dict(Counter(labels))
