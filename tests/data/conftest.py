"""Fixtures of the data tests."""

from collections.abc import Callable
from pathlib import Path

import pytest

from reliable_ad.data.config import ImportConfig, SynthConfig
from reliable_ad.data.rf1m import import_dataset
from reliable_ad.data.synth.writer import write_synth


@pytest.fixture(scope="session")
def synth_manifest_factory(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Make an RF1M-synth folder imported into manifest.parquet: factory(n=..., archives=..., seed=...) -> root."""

    def make(n: int = 32, archives: int = 0, seed: int = 0) -> Path:
        root = tmp_path_factory.mktemp("synth") / "ds"
        write_synth(SynthConfig(n=n, seed=seed), root, archives=archives)
        import_dataset(root, ImportConfig())
        return root

    return make


@pytest.fixture(scope="session")
def synth_manifest_root(synth_manifest_factory: Callable[..., Path]) -> Path:
    """A small RF1M-synth folder (plain files) with manifest.parquet. Shared: copy it before changing it."""
    return synth_manifest_factory(n=32)


@pytest.fixture(scope="session")
def synth_zip_manifest_root(synth_manifest_factory: Callable[..., Path]) -> Path:
    """The same samples as `synth_manifest_root`, every file in two zip packages. Shared: copy it first."""
    return synth_manifest_factory(n=32, archives=2)
