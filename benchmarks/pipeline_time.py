"""Every stage's time of the full pipeline on a fresh clone: wall and CPU seconds, the machine's load beside them.

Runs what `make run` runs, stage by stage in dvc.yaml's order (`dvc repro --single-item`), after the install,
and prints a markdown table (also written as JSON). Run it from a clean clone (no DVC cache) on the machine to
report:

    git clone <repo> fresh && cd fresh && python3 benchmarks/pipeline_time.py --out pipeline_time.json

The clone's own `.venv` is created by `make install`, timed as its first row.
"""

from __future__ import annotations

import argparse
import graphlib
import json
import os
import platform
import re
import resource
import subprocess
import sys
import time
from pathlib import Path


def timed(command: list[str], log: Path) -> dict[str, float]:
    """Run `command` (its output appended to `log`); wall seconds, the CPU seconds of its processes, the load."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    with log.open("a") as out:
        out.write(f"\n$ {' '.join(command)}\n")
        out.flush()
        code = subprocess.call(command, stdout=out, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if code != 0:
        sys.exit(f"{' '.join(command)} failed with exit code {code}: see {log}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    load = (load_before + os.getloadavg()[0]) / 2
    return {"wall_s": round(wall, 1), "cpu_s": round(cpu, 1), "load_1min": round(load, 2)}


def stage_order(dvc: Path) -> list[str]:
    """dvc.yaml's stages, each after the stages it depends on (from `dvc dag --dot`'s edges)."""
    dot = subprocess.run([str(dvc), "dag", "--dot"], check=True, capture_output=True, text=True).stdout
    stages = re.findall(r"^  ([a-z_]+):\s*$", Path("dvc.yaml").read_text(), re.MULTILINE)
    graph: dict[str, set[str]] = {stage: set() for stage in stages}
    for before, after in re.findall(r'"([^"]+)" -> "([^"]+)"', dot):
        if before in graph and after in graph:  # not the .dvc files of tracked data
            graph[after].add(before)
    return list(graphlib.TopologicalSorter(graph).static_order())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("pipeline_time.json"), help="JSON of every row")
    parser.add_argument("--log", type=Path, default=Path("pipeline_time.log"), help="every command's output")
    parser.add_argument(
        "--stages", nargs="+", help="only these stages, in this order, without the install (to finish a run)"
    )
    args = parser.parse_args()
    env_bin = Path(".venv/bin").resolve()
    os.environ["PATH"] = f"{env_bin}{os.pathsep}{os.environ['PATH']}"  # as the Makefile puts it first
    rows = {}
    if not args.stages:
        rows["install"] = timed(["make", "install"], args.log)
        rows["feedback init"] = timed([str(env_bin / "rad"), "feedback", "init", "data/feedback"], args.log)
    for stage in args.stages or stage_order(env_bin / "dvc"):
        rows[stage] = timed([str(env_bin / "dvc"), "repro", "--single-item", stage], args.log)
        print(f"{stage}: {rows[stage]}", flush=True)
    total = {k: round(sum(r[k] for r in rows.values()), 1) for k in ("wall_s", "cpu_s")}
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}"
    args.out.write_text(json.dumps({"machine": machine, "stages": rows, "total": total}, indent=2) + "\n")
    print(f"machine: {machine}\n\n| stage | wall s | CPU s | load (1 min) |\n|---|---|---|---|")
    for name, row in rows.items():
        print(f"| {name} | {row['wall_s']:.0f} | {row['cpu_s']:.0f} | {row['load_1min']:.1f} |")
    print(f"| **total** | **{total['wall_s']:.0f}** ({total['wall_s'] / 60:.1f} min) | {total['cpu_s']:.0f} | |")


if __name__ == "__main__":
    main()
