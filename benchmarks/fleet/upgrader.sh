#!/bin/bash
# upgrader: upgrader.sh SNAPSHOT N
# Runs contender.py of SNAPSHOT (a commit exported by bench.sh with git archive, its bytecode compiled)
# with upgrader's dependencies from $BENCH_ROOT/venv-upgrader, so that edits made to the working tree
# while the benchmark runs cannot reach the measurement.
set -euo pipefail
. "$(dirname "$0")/common.sh"
snap=${1:?usage: upgrader.sh SNAPSHOT N}
N=${2:?usage: upgrader.sh SNAPSHOT N}
if [ ! -f "$snap/benchmarks/fleet/contender.py" ] || [ ! -d "$snap/upgrader" ]; then
  echo "upgrader.sh: $snap is not an exported commit of upgrader (bench.sh makes it)" >&2
  exit 2
fi
export PYTHONPATH=$snap
exec "$UVENV/bin/python" "$snap/benchmarks/fleet/contender.py" "$N"
