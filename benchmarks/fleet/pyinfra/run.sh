#!/bin/bash
# pyinfra: run.sh N  (pyinfra -y --parallel N inventory.py deploy.py over h1..hN)
set -euo pipefail
. "$(dirname "$0")/../common.sh"
N=${1:?usage: pyinfra/run.sh N}
export BENCH_N=$N
cd "$FLEET/pyinfra"
exec "$VENV/bin/pyinfra" -y --parallel "$N" inventory.py deploy.py > "$R/pyinfra-last-run.log" 2>&1
