"""The review queue: generated images with their products and metadata, pushed to Label Studio as tasks.

A queue is a folder in the RF1M layout without labels (a label.txt there is ignored)::

    metadata.jsonl   one object per image: image, prompt, title (+ product_id, category, height_cm, split) and,
                     when a judge saw it, p_available, judge_label, judge_threshold, judge (its model version)
    images/<image>   the generated image
    products/<image> the product photo (RGBA cut-out)

`rad recurrent --queue` writes one from every judged attempt; a feedback batch is one too. The server serves the
files from where they lie (a local-files storage), so the queue must lie below the server's document root.
Every entry the push cannot use is rejected with its line and reason; entries pushed before are skipped.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote
from xml.sax.saxutils import quoteattr

import numpy as np
from numpy.typing import NDArray
from PIL import Image
from pydantic import BaseModel

from reliable_ad.data import layout
from reliable_ad.data.imageio import decode, encode_png, to_rgb, to_rgba
from reliable_ad.data.layout import UnsafePath, resolve_inside, safe_relative
from reliable_ad.errors import InputError
from reliable_ad.labels import LabelSet
from reliable_ad.review.client import LabelStudio
from reliable_ad.review.config import ReviewConfig

if TYPE_CHECKING:  # these import torch: a push without a judge does not need it
    from reliable_ad.data.products import Product
    from reliable_ad.generation.recurrent import Attempt
    from reliable_ad.judge import RFNetJudge

VERDICT = "verdict"  # the name of the choices in the labelling interface
SHOWN = ("image", "product", "prompt", "title")  # task fields the interface shows
REQUIRED = ("image", "prompt", "title")


class QueueError(InputError):
    """A queue that cannot be pushed at all (missing folder or metadata, outside the served root)."""


@dataclass
class QueueItem:
    name: str  # image file name, the item's key inside its queue
    line: int  # of metadata.jsonl
    metadata: dict[str, Any]

    @property
    def p_available(self) -> float | None:
        value = self.metadata.get("p_available")
        return None if value is None else float(value)


class PushResult(BaseModel):
    project: int
    project_url: str
    queue: str
    items_in: int
    tasks_created: int
    already_pushed: int
    not_pushed: int  # beyond the limit: the next push takes them
    rejected: int
    rejects: str | None
    order: str
    seconds: float


def label_config(labels: LabelSet) -> str:
    """The labelling interface: title, product photo beside the generated image, prompt, one verdict per task."""
    choices = "\n".join(f"    <Choice value={quoteattr(name)}/>" for name in labels.names)
    return f"""<View>
  <Header value="$title"/>
  <View style="display: flex; gap: 16px">
    <View style="flex: 1"><Header value="Product" size="4"/><Image name="product" value="$product"/></View>
    <View style="flex: 1"><Header value="Generated" size="4"/><Image name="image" value="$image"/></View>
  </View>
  <Text name="prompt" value="$prompt"/>
  <Choices name="{VERDICT}" toName="image" choice="single" showInline="true" required="true">
{choices}
  </Choices>
</View>"""


def verdict_result(label: str) -> list[dict[str, Any]]:
    """An annotation or prediction result that picks `label`."""
    return [{"from_name": VERDICT, "to_name": "image", "type": "choices", "value": {"choices": [label]}}]


def read_queue(folder: Path, labels: LabelSet) -> tuple[list[QueueItem], list[dict[str, Any]]]:
    """The usable entries of a queue and the rejected ones ({line, image, reason}); rows in = both together."""
    meta = folder / layout.METADATA_FILE
    if not meta.is_file():
        raise QueueError(f"review queue {folder}: no {layout.METADATA_FILE} (one JSON object per generated image)")
    items: list[QueueItem] = []
    rejects: list[dict[str, Any]] = []
    seen: set[str] = set()
    for number, text in enumerate(meta.read_text().splitlines(), 1):
        if not text.strip():
            continue
        try:
            entry = json.loads(text)
            if not isinstance(entry, dict):
                raise ValueError("not a JSON object")
            item = QueueItem(str(entry.get("image", "")), number, entry)
            _check(folder, item, labels, seen)
        except (ValueError, UnsafePath) as error:
            rejects.append({"line": number, "image": _image_of(text), "reason": str(error)})
            continue
        seen.add(item.name)
        items.append(item)
    return items, rejects


def _image_of(text: str) -> str | None:
    try:
        entry = json.loads(text)
    except ValueError:
        return None
    return str(entry.get("image")) if isinstance(entry, dict) else None


def _check(folder: Path, item: QueueItem, labels: LabelSet, seen: set[str]) -> None:
    missing = [key for key in REQUIRED if not str(item.metadata.get(key) or "").strip()]
    if missing:
        raise ValueError(f"no {', '.join(missing)}")
    name = safe_relative(item.name, f"{folder / layout.METADATA_FILE}:{item.line}")
    if "/" in name:
        raise ValueError(f"image {name!r} is a path; give the file name inside {layout.IMAGES_DIR}/")
    if name in seen:
        raise ValueError(f"image {name!r} is listed twice")
    for kind in (layout.IMAGES_DIR, layout.PRODUCTS_DIR):
        if not (folder / kind / name).is_file():
            raise ValueError(f"{kind}/{name} does not exist")
    p = item.metadata.get("p_available")
    if p is not None and not (isinstance(p, int | float) and not isinstance(p, bool) and 0 <= p <= 1):
        raise ValueError(f"p_available {p!r} is not a number in [0, 1]")
    judged = item.metadata.get("judge_label")
    if judged is not None and judged not in labels:
        raise ValueError(f"judge_label {judged!r} is not in the label set {list(labels.names)}")


def ordered(items: Sequence[QueueItem], order: str, seed: int) -> list[QueueItem]:
    """The push order: `uncertain` puts the judge's closest calls first (unjudged items last, in queue order)."""
    if order == "random":
        shuffled = list(items)
        random.Random(seed).shuffle(shuffled)
        return shuffled
    if order == "uncertain":

        def margin(item: QueueItem) -> float:
            p = item.p_available
            return math.inf if p is None else abs(p - float(item.metadata.get("judge_threshold", 0.5)))

        return sorted(items, key=margin)  # stable: ties keep queue order
    return list(items)


def served_path(path: Path, root: Path) -> str:
    """`path` relative to the server's document root; refused when it lies elsewhere."""
    try:
        return path.resolve().relative_to(root.resolve()).as_posix()
    except ValueError:
        raise QueueError(
            f"{path} is not below the review document root {root} (review.document_root: the folder Label Studio "
            "serves local files from, LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT)"
        ) from None


def task(item: QueueItem, queue: str) -> dict[str, Any]:
    """A task: what the interface shows, the item's metadata under `rad`, and the judge's verdict as prediction."""
    meta = item.metadata

    def url(kind: str) -> str:
        return "/data/local-files/?d=" + quote(f"{queue}/{kind}/{item.name}")

    data: dict[str, Any] = {
        "image": url(layout.IMAGES_DIR),
        "product": url(layout.PRODUCTS_DIR),
        "prompt": meta["prompt"],
        "title": meta["title"],
        "rad": {"queue": queue, "name": item.name, **{k: v for k, v in meta.items() if k not in SHOWN}},
    }
    if item.p_available is not None:
        data["p_available"] = item.p_available  # a Data Manager column: sort and filter by it
    out: dict[str, Any] = {"data": data}
    if meta.get("judge_label") is not None:
        out["predictions"] = [
            {
                "model_version": str(meta.get("judge") or "rfnet"),
                "score": item.p_available,
                "result": verdict_result(str(meta["judge_label"])),
            }
        ]
    return out


def judge_items(folder: Path, items: Sequence[QueueItem], judge: RFNetJudge, version: str) -> int:
    """Add the judge's verdict to the items whose metadata has none (in memory: the queue stays as it was)."""
    todo = [item for item in items if item.p_available is None]
    for start in range(0, len(todo), judge.batch_size):
        chunk = todo[start : start + judge.batch_size]
        out = judge(
            [to_rgb(read_image(folder / layout.IMAGES_DIR / item.name)) for item in chunk],
            [to_rgba(read_image(folder / layout.PRODUCTS_DIR / item.name)) for item in chunk],
            [str(item.metadata["title"]) for item in chunk],
        )
        for item, label, p in zip(chunk, out.labels, out.p_available.tolist(), strict=True):
            item.metadata.update(p_available=p, judge_label=label, judge_threshold=judge.threshold, judge=version)
    return len(todo)


def read_image(path: Path) -> Image.Image:
    return decode(path.read_bytes(), str(path))


def push(
    client: LabelStudio,
    folder: Path,
    cfg: ReviewConfig,
    labels: LabelSet,
    reports: Path,
    judge: RFNetJudge | None = None,
    judge_version: str = "rfnet",
) -> PushResult:
    """Push the queue's new items to the project (made with the interface when missing), in the configured order;
    with a `judge`, the items without a verdict are judged first."""
    started = time.perf_counter()
    if not folder.is_dir():
        raise QueueError(f"review queue {folder} does not exist or is not a folder")
    queue = served_path(folder, cfg.document_root)
    if not queue or queue == ".":
        raise QueueError(f"review queue {folder} is the document root itself; Label Studio serves only folders below")
    items, rejects = read_queue(folder, labels)
    project = client.project(cfg.project) or client.create_project(
        cfg.project, label_config(labels), "Generated ad images beside their products: pick one verdict each."
    )
    client.serve_folder(project["id"], str(folder.resolve()))
    pushed = {(t["data"]["rad"]["queue"], t["data"]["rad"]["name"]) for t in ours(client.export(project["id"], True))}
    new = [item for item in items if (queue, item.name) not in pushed]
    if judge is not None:
        judge_items(folder, new, judge, judge_version)
    chosen = ordered(new, cfg.order, cfg.seed)[: cfg.limit]
    client.import_tasks(project["id"], [task(item, queue) for item in chosen])
    reject_file = write_jsonl(reports / "push_rejects.jsonl", rejects)
    return PushResult(
        project=project["id"],
        project_url=f"{client.url}/projects/{project['id']}/data",
        queue=str(folder),
        items_in=len(items) + len(rejects),
        tasks_created=len(chosen),
        already_pushed=len(items) - len(new),
        not_pushed=len(new) - len(chosen),
        rejected=len(rejects),
        rejects=reject_file,
        order=cfg.order,
        seconds=time.perf_counter() - started,
    )


def find_project(client: LabelStudio, title: str) -> int:
    """The id of the project a push made; refused when there is none."""
    found = client.project(title)
    if found is None:
        raise QueueError(f"Label Studio at {client.url} has no project {title!r}: push a queue first")
    return int(found["id"])


def ours(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Tasks a push made (others in the project, imported by hand, are left alone)."""
    return [t for t in tasks if isinstance(t.get("data", {}).get("rad"), dict)]


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> str | None:
    """Rejects or held items, one JSON object a line; no file (and an old one removed) when there are none."""
    if not records:
        path.unlink(missing_ok=True)
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


def write_queue(folder: Path, entries: Sequence[tuple[dict[str, Any], NDArray[np.uint8], NDArray[np.uint8]]]) -> int:
    """Write (metadata, image, product) entries as a queue; the metadata names the image file."""
    for kind in (layout.IMAGES_DIR, layout.PRODUCTS_DIR):
        (folder / kind).mkdir(parents=True, exist_ok=True)
    with (folder / layout.METADATA_FILE).open("w") as handle:
        for metadata, image, product in entries:
            name = metadata["image"]
            (folder / layout.IMAGES_DIR / name).write_bytes(encode_png(image))
            (folder / layout.PRODUCTS_DIR / name).write_bytes(encode_png(product))
            handle.write(json.dumps(metadata) + "\n")
    return len(entries)


def item_files(root: Path, rad: dict[str, Any]) -> dict[str, Path]:
    """Where a task's image and product lie (pull and the simulated annotator read them back)."""
    where = f"task data rad={rad}"
    queue = resolve_inside(root, str(rad.get("queue", "")), where)
    return {kind: resolve_inside(queue, f"{kind}/{rad.get('name', '')}", where) for kind in ("images", "products")}


def recurrent_queue(
    attempts: Sequence[Attempt], products: Sequence[Product], threshold: float, judge: str
) -> list[tuple[dict[str, Any], NDArray[np.uint8], NDArray[np.uint8]]]:
    """Queue entries of recurrent generation's judged attempts (aborted ones have no final image)."""
    by_key = {p.key: p for p in products}
    entries = []
    for a in attempts:
        if a.status == "aborted" or a.image is None:
            continue
        product = by_key[a.product]
        metadata = {
            "image": f"{a.product}_a{a.attempt}.png",
            "product_id": a.product,
            "prompt": a.prompt,
            "title": product.caption,
            "height_cm": product.height_cm,
            "seed": a.seed,
            "attempt": a.attempt,
            "status": a.status,
            "p_available": a.p_available,
            "judge_label": a.judge_label,
            "judge_threshold": threshold,
            "judge": judge,
        }
        entries.append((metadata, a.image, product.rgba))
    return entries
