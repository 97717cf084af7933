#!/usr/bin/env bash
# The README's main command on a fresh clone, timed: installation (venv + pinned stack) and the whole
# pipeline on the embedded default. Prints the machine, the wall time of each part and the targets table.
#
#   benchmarks/full_run.sh [WORKDIR]      (default: a new temporary folder; the clone is kept for inspection)
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
work="${1:-$(mktemp -d)}"
python3 -c "import sys; sys.path.insert(0, '$repo/benchmarks'); from common import machine; print(machine())"
git clone -q "$repo" "$work/clone"
cd "$work/clone"

start=$(date +%s)
make install > "$work/install.log" 2>&1
installed=$(date +%s)
# every output line stamped with the second it arrived: the stage budget comes from dvc's "Running stage" lines
make run 2>&1 | while IFS= read -r line; do printf '%s %s\n' "$(date +%s)" "$line"; done > "$work/run.log"
done_at=$(date +%s)

echo "clone:   $work/clone (logs: $work/install.log, $work/run.log)"
echo "install: $((installed - start)) s"
echo "run:     $((done_at - installed)) s (make run after install: feedback init + dvc repro)"
echo "total:   $((done_at - start)) s"
grep -a "Running stage" "$work/run.log" | sed "s/Running stage '\(.*\)':/\1/" |
    awk -v end="$done_at" '{ if (NR > 1) printf "  %-22s %5d s\n", name, $1 - t; name = $2; t = $1 }
                           END { printf "  %-22s %5d s\n", name, end - t }'
.venv/bin/python "$repo/benchmarks/targets.py" --root .
