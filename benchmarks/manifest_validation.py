"""Measure `rad data import` + the manifest-level validation at RF1M's size, and the file pass on RF1M-synth.

Part 1 writes a synthetic label.txt of 1,058,230 lines (RF1M's size; no image files), imports it
(check_files=False, require_metadata=False) and runs the manifest-level GX suite with Data Docs (file checks
off), in this one process, Great Expectations' import included. Targets: <= 20 s in all, <= 2 GiB peak RSS.
Part 2 renders a small RF1M-synth set, as plain files and then with every file in 2 zip packages, and times
the file pass of each with 1 and 2 worker processes.

    python benchmarks/manifest_validation.py [--rows 1058230] [--synth 2000]

Figures are wall-clock seconds on a shared machine: other jobs (a training run) make them noisy.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np

from reliable_ad.data import layout
from reliable_ad.data.config import ImportConfig, SynthConfig, ValidationConfig
from reliable_ad.data.rf1m import import_dataset
from reliable_ad.data.synth.writer import write_synth
from reliable_ad.data.validate import check_images, load_manifest, validate_dataset

RF1M_ROWS = 1_058_230
LABEL_SHARES = [0.56, 0.04, 0.12, 0.1, 0.1, 0.08]  # about the paper's 56 % available at first generation


def write_label_file(path: Path, rows: int, seed: int = 0) -> None:
    """label.txt with shuffled, unique names and labels 1-6 drawn with LABEL_SHARES."""
    rng = np.random.default_rng(seed)
    keys = rng.permutation(rows)
    labels = rng.choice(np.arange(1, 7), size=rows, p=LABEL_SHARES)
    path.write_text("".join(f"rf1m_{k:08x}.jpg\t{label}\n" for k, label in zip(keys, labels, strict=True)))


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux


def manifest_benchmark(rows: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        write_label_file(root / layout.LABEL_FILE, rows)
        print(f"write label.txt     {time.perf_counter() - started:6.2f} s  (setup, not counted)")

        phases: dict[str, float] = {}
        started = time.perf_counter()
        summary = import_dataset(root, ImportConfig(check_files=False, require_metadata=False))
        phases["import"] = time.perf_counter() - started
        assert summary.rows_accepted == rows, summary

        started = time.perf_counter()
        os.environ["GX_ANALYTICS_ENABLED"] = "false"
        import great_expectations  # noqa: F401  (timed on its own; validate_dataset imports it again for free)

        phases["gx import"] = time.perf_counter() - started
        started = time.perf_counter()
        cfg = ValidationConfig(check_files=False, check_images=False, class_share=(0.01, 0.9))
        result = validate_dataset(root, cfg, root / "validation")
        phases["validate"] = time.perf_counter() - started
        assert result.success, result.summary

        total = sum(phases.values())
        for name, seconds in phases.items():
            print(f"{name:19s} {seconds:6.2f} s")
        for name, seconds in result.seconds.items():
            print(f"  validate: {name:8s} {seconds:6.2f} s")
        print(f"total               {total:6.2f} s  (target <= 20 s)")
        print(f"import rows/s       {rows / phases['import']:,.0f}")
        print(f"end-to-end rows/s   {rows / total:,.0f}")
        print(f"peak RSS            {peak_rss_mib():,.0f} MiB  (target <= 2048 MiB)")
        print(f"expectations        {sum(o.success for o in result.expectations)} of {len(result.expectations)} passed")


def file_pass_benchmark(samples: int, archives: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "synth"
        started = time.perf_counter()
        write_synth(SynthConfig(n=samples), root, workers=2, archives=archives)
        import_dataset(root, ImportConfig())
        layout_name = f"every file in {archives} zip package(s)" if archives else "plain files in folders"
        print(f"render + import {samples} samples ({layout_name}): {time.perf_counter() - started:.1f} s (setup)")
        frame = load_manifest(root / layout.MANIFEST_FILE)
        for workers in (1, 2):
            cfg = ValidationConfig(workers=workers)
            _, start_up = check_images(root, frame.head(workers), cfg)  # pool start-up, about nothing to check
            failures, stats = check_images(root, frame, cfg)
            assert not failures, failures
            steady = stats.images / max(stats.seconds - start_up.seconds, 1e-9)
            print(
                f"file pass, {workers} worker(s): {stats.images} rows (image + product + 2 maps each) in "
                f"{stats.seconds:.2f} s = {stats.images_per_s:,.0f} rows/s; start-up {start_up.seconds:.2f} s, "
                f"so about {steady:,.0f} rows/s after it"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=RF1M_ROWS, help="lines of the synthetic label.txt")
    parser.add_argument("--synth", type=int, default=2000, help="RF1M-synth samples for the file pass")
    args = parser.parse_args()
    print(
        f"machine: {platform.platform()}, {platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} CPU(s); load average {os.getloadavg()[0]:.2f} (timings are noisy under load)"
    )
    print(f"--- import + manifest validation, {args.rows:,} label lines")
    manifest_benchmark(args.rows)
    for archives in (0, 2):
        print(f"--- file pass on RF1M-synth, {args.synth} samples of 64x64")
        file_pass_benchmark(args.synth, archives)


if __name__ == "__main__":
    main()
