#!/bin/bash
# contender.py run from an exported copy of one commit, so that edits other people make in a shared
# working tree cannot leak into a measurement that takes half an hour. Make the copy first:
#     mkdir -p /tmp/upgrader-snap && git -C . archive COMMIT | tar -x -C /tmp/upgrader-snap
# then use this script as the harness's EXTRA_CMD (it passes its arguments, N last, to contender.py):
#     EXTRA_NAME=upgrader EXTRA_CMD=$PWD/benchmarks/fleet/snapshot_contender.sh $A/bench.sh 3 50
# UPGRADER_SNAPSHOT: the copy (default /tmp/upgrader-snap); UPGRADER_PYTHON: the interpreter (default
# the repository's .venv, whose packages are used; upgrader itself comes from the copy).
set -e
snap=${UPGRADER_SNAPSHOT:-/tmp/upgrader-snap}
py=${UPGRADER_PYTHON:-$(dirname "$(readlink -f "$0")")/../../.venv/bin/python}
if [ ! -f "$snap/benchmarks/fleet/contender.py" ] || [ ! -d "$snap/upgrader" ]; then
  echo "snapshot_contender.sh: no exported commit in $snap (git archive COMMIT | tar -x -C $snap)" >&2
  exit 2
fi
export PYTHONPATH=$snap${PYTHONPATH:+:$PYTHONPATH}
exec "$py" "$snap/benchmarks/fleet/contender.py" "$@"
