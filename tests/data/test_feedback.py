import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from reliable_ad.data import layout
from reliable_ad.data.config import ImportConfig, PrepareConfig, SynthConfig, ValidationConfig
from reliable_ad.data.feedback import FeedbackError, ingest, ledger
from reliable_ad.data.shards import prepare_shards
from reliable_ad.data.synth.writer import write_synth

VALIDATION = ValidationConfig(data_docs=False)


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _ingest(batch: Path, dataset: Path, reports: Path):
    return ingest(batch, dataset, ImportConfig(), VALIDATION, reports)


def test_batch_joins_the_dataset_once(tmp_path: Path) -> None:
    write_synth(SynthConfig(n=20, seed=41), tmp_path / "batch")
    first = _ingest(tmp_path / "batch", tmp_path / "feedback", tmp_path / "reports")
    assert first.status == "ingested" and first.rows_accepted == 20 and first.dataset_rows == 20
    dataset = tmp_path / "feedback"
    manifest = pq.read_table(dataset / layout.MANIFEST_FILE).to_pylist()
    assert len(manifest) == 20 and all(row["image_member"] for row in manifest)
    assert len(ledger(dataset)) == 1
    before = _tree(dataset)
    again = _ingest(tmp_path / "batch", dataset, tmp_path / "reports")
    assert again.status == "already ingested" and _tree(dataset) == before

    write_synth(SynthConfig(n=12, seed=42), tmp_path / "batch2")
    second = _ingest(tmp_path / "batch2", dataset, tmp_path / "reports")
    assert second.dataset_rows == 32 and len(ledger(dataset)) == 2
    # the feedback dataset is a source of the prepared shards beside the main dataset
    write_synth(SynthConfig(n=16, seed=43), tmp_path / "main")
    from reliable_ad.data.rf1m import import_dataset

    import_dataset(tmp_path / "main", ImportConfig())
    summary = prepare_shards(
        tmp_path / "main",
        tmp_path / "main" / layout.MANIFEST_FILE,
        tmp_path / "shards",
        PrepareConfig(),
        more=[(dataset, dataset / layout.MANIFEST_FILE)],
    )
    assert sum(summary.rows_written.values()) == 16 + 32
    # each row says which dataset it came from, so evaluation can report the feedback rows apart
    sources = [
        source
        for shard in sorted((tmp_path / "shards").rglob("*.parquet"))
        for source in pq.read_table(shard, columns=["source"]).column("source").to_pylist()
    ]
    assert sorted(set(sources)) == ["feedback", "main"] and sources.count("feedback") == 32


def test_bad_rows_are_quarantined_with_line_and_reason_and_the_rest_lands(tmp_path: Path) -> None:
    """One policy for every bad row: a bad label line and an unreadable image are both quarantined, each named
    with its line and reason; the other rows land; rows in = accepted + quarantined."""
    batch = tmp_path / "batch"
    write_synth(SynthConfig(n=10, seed=45), batch)
    broken = sorted((batch / layout.IMAGES_DIR).iterdir())[5]
    broken.write_bytes(broken.read_bytes()[:40])  # truncated half-way through the batch
    with (batch / layout.LABEL_FILE).open("a") as labels:
        labels.write("extra.png\t9\n")
    names = [line.split("\t")[0] for line in (batch / layout.LABEL_FILE).read_text().splitlines()]
    broken_line = 1 + names.index(broken.name)

    result = _ingest(batch, tmp_path / "feedback", tmp_path / "reports")

    assert result.status == "ingested" and result.reason is None
    assert (result.rows_in, result.rows_accepted, result.rows_quarantined) == (11, 9, 2) and result.dataset_rows == 9
    assert result.quarantined[0].startswith(
        f"label.txt line {broken_line}: {layout.IMAGES_DIR}/{broken.name}: cannot decode"
    )
    assert result.quarantined[1].startswith("label.txt line 11: label id 9 is not one of")
    rejects = [json.loads(line) for line in Path(result.rejects or "").read_text().splitlines()]
    assert [(r["line"], r["stage"]) for r in rejects] == [(broken_line, "validation"), (11, "import")]


def test_a_batch_failing_as_a_batch_changes_nothing_and_says_why(tmp_path: Path) -> None:
    """A product both in test and in train is no row's fault: the whole batch is rejected, with the reason."""
    write_synth(SynthConfig(n=10, seed=44), tmp_path / "good")
    _ingest(tmp_path / "good", tmp_path / "feedback", tmp_path / "reports")
    before = _tree(tmp_path / "feedback")
    batch = tmp_path / "leak"
    write_synth(SynthConfig(n=10, seed=45), batch)
    entries = [json.loads(line) for line in (batch / layout.METADATA_FILE).read_text().splitlines()]
    entries[0]["split"] = "train" if entries[1]["split"] == "test" else "test"
    entries[0]["product_id"] = entries[1]["product_id"]
    (batch / layout.METADATA_FILE).write_text("".join(json.dumps(e) + "\n" for e in entries))

    result = _ingest(batch, tmp_path / "feedback", tmp_path / "reports")

    assert result.status == "rejected" and _tree(tmp_path / "feedback") == before
    assert (result.rows_in, result.rows_accepted, result.rows_quarantined) == (10, 0, 10)
    assert result.reason is not None and "no product both in test and in train/val" in result.reason


def test_rad_feedback_ingest_prints_each_quarantined_row(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from reliable_ad.cli import app

    batch = tmp_path / "batch"
    write_synth(SynthConfig(n=6, seed=47), batch)
    with (batch / layout.LABEL_FILE).open("a") as labels:
        labels.write("ghost.png\t1\n")
    args = ["feedback", "ingest", str(batch), "--dataset", str(tmp_path / "fb"), "--reports", str(tmp_path / "r")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    assert printed["quarantined"] == ["label.txt line 7: image 'ghost.png' not found: neither in images/ nor in any "
                                      "of the 0 package(s)"]  # fmt: skip
    assert printed["rows_in"] == 7 == printed["rows_accepted"] + printed["rows_quarantined"]


def test_ids_already_in_the_dataset_are_rejected_with_a_reason(tmp_path: Path) -> None:
    write_synth(SynthConfig(n=8, seed=46), tmp_path / "a")
    _ingest(tmp_path / "a", tmp_path / "feedback", tmp_path / "reports")
    write_synth(SynthConfig(n=8, seed=46, difficulty=0.5), tmp_path / "b")  # same ids, other pixels
    result = _ingest(tmp_path / "b", tmp_path / "feedback", tmp_path / "reports")
    assert result.rows_accepted == 0 and result.rows_quarantined == 8
    clash = [json.loads(line) for line in Path(result.rejects or "").read_text().splitlines()]
    assert len(clash) == 8 and clash[0]["reason"] == "id already in the feedback dataset"
    assert {r["stage"] for r in clash} == {"clash"}


def test_missing_batch(tmp_path: Path) -> None:
    with pytest.raises(FeedbackError, match="does not exist"):
        _ingest(tmp_path / "nowhere", tmp_path / "feedback", tmp_path / "reports")


def test_a_correction_replaces_the_row_it_supersedes(tmp_path: Path) -> None:
    write_synth(SynthConfig(n=6, seed=47), tmp_path / "a")
    first = _ingest(tmp_path / "a", tmp_path / "feedback", tmp_path / "reports")
    old = sorted((tmp_path / "a" / layout.IMAGES_DIR).iterdir())[2]
    entry = next(
        json.loads(line)
        for line in (tmp_path / "a" / layout.METADATA_FILE).read_text().splitlines()
        if json.loads(line)["image"] == old.name
    )
    fix = tmp_path / "fix"  # the same image relabelled, under a new id naming the one it corrects
    for kind in (layout.IMAGES_DIR, layout.PRODUCTS_DIR):
        (fix / kind).mkdir(parents=True)
        (fix / kind / "fix-1.png").write_bytes((tmp_path / "a" / kind / old.name).read_bytes())
    (fix / layout.LABEL_FILE).write_text("fix-1.png\t6\n")
    (fix / layout.METADATA_FILE).write_text(json.dumps(entry | {"image": "fix-1.png", "supersedes": old.stem}) + "\n")

    result = _ingest(fix, tmp_path / "feedback", tmp_path / "reports")
    assert result.status == "ingested" and result.rows_accepted == 1 and result.rows_superseded == 1
    assert result.dataset_rows == first.dataset_rows == 6  # replaced, not added beside
    rows = {r["id"]: r for r in pq.read_table(tmp_path / "feedback" / layout.MANIFEST_FILE).to_pylist()}
    assert old.stem not in rows and rows["fix-1"]["label"] == "shape_hallucination"
    assert old.name not in (tmp_path / "feedback" / layout.LABEL_FILE).read_text()
    meta = [json.loads(line) for line in (tmp_path / "feedback" / layout.METADATA_FILE).read_text().splitlines()]
    assert [m["image"] for m in meta].count(old.name) == 0 and meta[-1]["supersedes"] == old.stem
    assert ledger(tmp_path / "feedback")[-1]["rows_superseded"] == 1


def test_dvc_add_outside_a_dvc_repository_is_refused_before_anything_changes(tmp_path: Path) -> None:
    write_synth(SynthConfig(n=4, seed=48), tmp_path / "batch")
    with pytest.raises(FeedbackError, match="not inside a DVC repository"):
        ingest(tmp_path / "batch", tmp_path / "feedback", ImportConfig(), VALIDATION, tmp_path / "r", dvc_add=True)
    assert not (tmp_path / "feedback").exists()
