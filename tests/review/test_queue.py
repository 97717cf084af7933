"""The review queue without a server: reading it strictly, ordering it, the interface and the tasks it makes."""

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from reliable_ad.data import layout
from reliable_ad.labels import LabelSet
from reliable_ad.review.queue import (
    QueueError,
    judge_items,
    label_config,
    ordered,
    read_queue,
    served_path,
    task,
    write_queue,
)

LABELS = LabelSet()


def _entry(name: str, **extra: object) -> dict:
    return {"image": name, "product_id": name[:-4], "prompt": "on a desk", "title": "red mug, 10 cm", **extra}


def _queue(folder: Path, entries: list[dict]) -> Path:
    pixels = np.zeros((8, 8, 3), np.uint8)
    write_queue(folder, [(e, pixels, np.zeros((8, 8, 4), np.uint8)) for e in entries])
    return folder


def test_every_entry_is_used_or_rejected_with_its_line_and_reason(tmp_path: Path) -> None:
    folder = _queue(tmp_path / "q", [_entry("a.png"), _entry("b.png"), _entry("c.png"), _entry("d.png")])
    (folder / layout.PRODUCTS_DIR / "b.png").unlink()
    lines = (folder / layout.METADATA_FILE).read_text().splitlines()
    lines[2] = json.dumps(_entry("c.png", p_available=1.5))
    lines[3] = json.dumps(_entry("d.png", judge_label="blurry"))
    lines += [
        json.dumps(_entry("a.png")),  # listed twice
        json.dumps({"image": "a.png", "title": "no prompt"}),
        json.dumps(_entry("../../etc/passwd")),
        "{not json",
    ]
    (folder / layout.METADATA_FILE).write_text("\n".join(lines) + "\n")
    items, rejects = read_queue(folder, LABELS)
    assert [i.name for i in items] == ["a.png"]
    assert len(items) + len(rejects) == len(lines)
    reasons = {r["line"]: r["reason"] for r in rejects}
    assert "products/b.png does not exist" in reasons[2]
    assert "p_available 1.5" in reasons[3]
    assert "'blurry' is not in the label set" in reasons[4]
    assert "listed twice" in reasons[5] and "no prompt" in reasons[6]
    assert "escapes the data root" in reasons[7] and 8 in reasons


def test_a_queue_without_metadata_or_outside_the_served_root_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(QueueError, match=r"no metadata\.jsonl"):
        read_queue(tmp_path / "empty", LABELS)
    with pytest.raises(QueueError, match="not below the review document root"):
        served_path(tmp_path / "empty", tmp_path / "elsewhere")
    assert served_path(tmp_path / "empty", tmp_path) == "empty"


def test_uncertain_first_random_or_queue_order(tmp_path: Path) -> None:
    entries = [
        _entry("far.png", p_available=0.95, judge_threshold=0.5),
        _entry("unjudged.png"),
        _entry("close.png", p_available=0.55, judge_threshold=0.5),
        _entry("closest.png", p_available=0.31, judge_threshold=0.3),
    ]
    items, _ = read_queue(_queue(tmp_path / "q", entries), LABELS)
    names = lambda order, seed=0: [i.name for i in ordered(items, order, seed)]  # noqa: E731
    assert names("uncertain") == ["closest.png", "close.png", "far.png", "unjudged.png"]
    assert names("all") == ["far.png", "unjudged.png", "close.png", "closest.png"]
    assert names("random", 1) == names("random", 1) and sorted(names("random", 1)) == sorted(names("all"))
    assert {tuple(names("random", seed)) for seed in range(6)} != {tuple(names("all"))}


def test_the_interface_offers_exactly_the_configured_labels() -> None:
    five = LabelSet(tuple(n for n in LabelSet().names if n != "unsuitable"))
    root = ET.fromstring(label_config(five))
    choices = [c.get("value") for c in root.iter("Choice")]
    assert choices == list(five.names)
    images = {i.get("name"): i.get("value") for i in root.iter("Image")}
    assert images == {"product": "$product", "image": "$image"}
    assert {t.get("value") for t in root.iter("Text")} == {"$prompt"}


def test_a_task_shows_both_images_and_carries_the_judges_verdict(tmp_path: Path) -> None:
    judged = _entry("a b.png", p_available=0.25, judge_label="size_mismatch", judge="rfnet@champion", height_cm=10)
    items, _ = read_queue(_queue(tmp_path / "q", [judged, _entry("b.png")]), LABELS)
    made = task(items[0], "runs/q")
    assert made["data"]["image"] == "/data/local-files/?d=runs/q/images/a%20b.png"
    assert made["data"]["product"] == "/data/local-files/?d=runs/q/products/a%20b.png"
    assert made["data"]["rad"] == {
        "queue": "runs/q",
        "name": "a b.png",
        "product_id": "a b",
        "p_available": 0.25,
        "judge_label": "size_mismatch",
        "judge": "rfnet@champion",
        "height_cm": 10,
    }
    (prediction,) = made["predictions"]
    assert prediction["model_version"] == "rfnet@champion" and prediction["score"] == 0.25
    assert prediction["result"][0]["value"] == {"choices": ["size_mismatch"]}
    assert "predictions" not in task(items[1], "runs/q")


def test_a_judge_fills_in_the_verdicts_the_queue_lacks_and_leaves_the_queue_as_it_was(
    tmp_path: Path, make_judge
) -> None:
    from reliable_ad.data.config import SynthConfig
    from reliable_ad.data.synth.writer import write_synth

    write_synth(SynthConfig(n=5, seed=8), tmp_path / "q")  # renderings: a queue without verdicts
    before = (tmp_path / "q" / layout.METADATA_FILE).read_bytes()
    lines = before.decode().splitlines()
    lines[0] = json.dumps(json.loads(lines[0]) | {"p_available": 0.5, "judge_label": "available", "judge": "kept"})
    (tmp_path / "q" / layout.METADATA_FILE).write_text("\n".join(lines) + "\n")
    before = (tmp_path / "q" / layout.METADATA_FILE).read_bytes()
    judge = make_judge(vocabulary=[])
    judge.batch_size = 2
    items, _ = read_queue(tmp_path / "q", LABELS)
    assert judge_items(tmp_path / "q", items, judge, "rfnet-abc") == 4
    assert items[0].metadata["judge"] == "kept"
    for item in items[1:]:
        assert 0 <= item.p_available <= 1 and item.metadata["judge_label"] in LABELS  # type: ignore[operator]
        assert item.metadata["judge_threshold"] == judge.threshold and item.metadata["judge"] == "rfnet-abc"
    assert (tmp_path / "q" / layout.METADATA_FILE).read_bytes() == before
