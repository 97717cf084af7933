"""Peak memory and speed of `prepare_shards` at 10k and 100k rows, then `dvc status` on the 100k output.

The rows are cheap fakes: a few hundred RF1M-synth samples are rendered once (every file in 2 zip packages)
and a manifest references them over and over under unique ids.
Every row is still read, checked and written, but the source files sit in the page cache, so the rows/s is an
upper bound for a real dataset on disk. Each size runs in a fresh subprocess; its peak RSS comes from
os.wait4 of that child alone.

    python benchmarks/prepare_memory.py [--sizes 10000 100000] [--base 500] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from reliable_ad.data import layout

DVC_STATUS_TARGET_S = 5.0


def machine_info() -> str:
    cpus = os.cpu_count()
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, {cpus} CPUs, "
        f"{memory_gib:.1f} GiB RAM, Python {platform.python_version()}, load average (1/5/15 min) {load}"
    )


def render_base(folder: Path, n: int) -> list[dict[str, object]]:
    """Render `n` synth samples into `folder` (every file in 2 zip packages) and import them; return the
    manifest rows."""
    from reliable_ad.data.config import ImportConfig, SynthConfig
    from reliable_ad.data.rf1m import import_dataset
    from reliable_ad.data.synth.writer import write_synth

    write_synth(SynthConfig(n=n), folder, archives=2)
    import_dataset(folder, ImportConfig())
    rows: list[dict[str, object]] = pq.read_table(folder / layout.MANIFEST_FILE).to_pylist()
    return rows


def write_manifest(path: Path, base: list[dict[str, object]], size: int, chunk: int = 10_000) -> None:
    """A manifest of `size` rows cycling through `base` with unique ids, written in row groups."""
    with pq.ParquetWriter(path, layout.manifest_schema()) as writer:
        for start in range(0, size, chunk):
            rows = [
                {
                    **base[i % len(base)],
                    "id": f"{base[i % len(base)]['id']}-r{i // len(base):05d}",
                    "source_line": i + 1,
                }
                for i in range(start, min(size, start + chunk))
            ]
            writer.write_table(pa.Table.from_pylist(rows, schema=layout.manifest_schema()))


def measure(args: list[str]) -> tuple[float, float, str]:
    """(seconds, peak RSS in MiB, stdout) of one fresh child process."""
    env = {**os.environ, "TQDM_DISABLE": "1"}
    started = time.perf_counter()
    child = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, env=env, text=True)
    assert child.stdout is not None
    out = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)  # reaped here, so that wait4 gives its rusage
    if child.returncode != 0:
        raise SystemExit(f"child {args} failed with exit code {child.returncode}")
    return seconds, usage.ru_maxrss / 1024, out


def run(cmd: list[str], cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True, env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    return time.perf_counter() - started


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def child_main(root: Path, manifest: Path, out: Path) -> None:
    from reliable_ad.data.config import PrepareConfig
    from reliable_ad.data.shards import prepare_shards

    summary = prepare_shards(root, manifest, out, PrepareConfig())
    print(summary.model_dump_json())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--base", type=int, default=500, help="real synth samples rendered and reused")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (default: a temp folder)")
    parser.add_argument("--child", nargs=3, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child_main(*args.child)
        return

    work = args.keep or Path(tempfile.mkdtemp(prefix="prepare-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    print(machine_info())
    print("caveat: another process trains a model on this machine in the background; timings are noisy")
    print(
        f"data: {args.base} RF1M-synth samples (64x64, images, products, depth and saliency in 2 zip packages) "
        "rendered once; each manifest references them repeatedly under unique ids"
    )
    try:
        base_rows = render_base(work / "base", args.base)
        seconds, rss, _ = measure(["-c", "import reliable_ad.data.shards"])
        print(f"baseline: a child that only imports reliable_ad.data.shards peaks at {rss:.0f} MiB RSS")
        repo = work / "repo"
        repo.mkdir()
        for size in args.sizes:
            manifest = work / f"manifest-{size}.parquet"
            write_manifest(manifest, base_rows, size)
            out = repo / "data" / "shards" if size == max(args.sizes) else work / f"shards-{size}"
            seconds, rss, stdout = measure([__file__, "--child", str(work / "base"), str(manifest), str(out)])
            summary = json.loads(stdout)
            rows = sum(summary["rows_written"].values())
            print(
                f"prepare {size:>7,} rows: peak RSS {rss:6.0f} MiB, {seconds:6.1f} s wall (child incl. imports), "
                f"{summary['rows_per_s']:7.0f} rows/s inside prepare, {rows:,} rows in {summary['shards']} shards, "
                f"{folder_bytes(out) / 2**20:,.0f} MiB"
            )
        dvc_status(repo, "data/shards")
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


def dvc_status(repo: Path, target: str) -> None:
    """Time `dvc add` and `dvc status` of one shard folder in a fresh git + dvc repository."""
    dvc = [sys.executable, "-m", "dvc"]
    run(["git", "init", "-q"], repo)
    run([*dvc, "init", "-q"], repo)
    files = sum(1 for p in (repo / target).iterdir())
    add = run([*dvc, "add", "-q", target], repo)
    statuses = [run([*dvc, "status"], repo) for _ in range(3)]
    verdict = "meets" if max(statuses) <= DVC_STATUS_TARGET_S else "MISSES"
    print(f"dvc add {target} ({files} files): {add:.1f} s")
    print(
        f"dvc status: {', '.join(f'{s:.2f}' for s in statuses)} s (3 runs, each a new process incl. dvc's "
        f"start-up) -> {verdict} the <= {DVC_STATUS_TARGET_S:.0f} s target"
    )


if __name__ == "__main__":
    main()
