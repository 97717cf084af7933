"""Prepared shards survive a DVC round trip: add, push to a local remote, lose everything, pull back."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from reliable_ad.data import layout
from reliable_ad.data.config import PrepareConfig
from reliable_ad.data.shards import prepare_shards


def _run(repo: Path, *args: str) -> str:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    result = subprocess.run(args, cwd=repo, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def _dvc(repo: Path, *args: str) -> str:
    return _run(repo, sys.executable, "-m", "dvc", *args)


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_push_and_pull_give_identical_shards(synth_zip_manifest_root: Path, tmp_path: Path) -> None:
    repo, remote = tmp_path / "repo", tmp_path / "remote"
    repo.mkdir()
    _run(repo, "git", "init", "-q")
    _run(repo, "git", "config", "user.name", "test")
    _run(repo, "git", "config", "user.email", "test@example.com")
    _dvc(repo, "init", "-q")
    shards = repo / "data" / "shards"
    root = synth_zip_manifest_root
    prepare_shards(root, root / layout.MANIFEST_FILE, shards, PrepareConfig(samples_per_shard=10))
    original = _tree(shards)
    assert len(original) > 3

    _dvc(repo, "add", "-q", "data/shards")
    _dvc(repo, "remote", "add", "-d", "local", str(remote))
    _dvc(repo, "push", "-q")
    assert sum(p.is_file() for p in remote.rglob("*")) >= len(original)
    _run(repo, "git", "add", "-A")
    _run(repo, "git", "commit", "-q", "-m", "shards")

    shutil.rmtree(shards)
    shutil.rmtree(repo / ".dvc" / "cache")
    _dvc(repo, "pull", "-q")
    assert _tree(shards) == original
    assert "up to date" in _dvc(repo, "status").lower()
