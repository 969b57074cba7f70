#!/bin/bash
# The blocks of the final session (A6 ... A7): each commit's own benchmarks/downtime.py from a detached checkout
# of that commit (git worktree add --detach), 10 MiB, 3 repetitions, every upgrader command under GNU time.
# src-a57477b: a57477b; src-2beeb31: 2beeb31 (where issue 16's work began); src-fix2: 0bfc910
# with the PATH fix of benchmarks/downtime.py (the service's interpreter first on PATH).
B=BENCH; PY=REPO/.venv/bin/python
unset PYTHONDONTWRITEBYTECODE
drun() { local tag=$1 src=$2; export TIMELOG=$B/time-$tag.log; : > $TIMELOG
  (cd $B/src-$src && $PY benchmarks/downtime.py --snapshot -r 3 --sizes 10M --workdir /var/tmp --results $B/OUT-$tag --cli $B/cli-time.sh) > $B/log-$tag.txt 2>&1
  echo "$tag $src rc=$? $(date -u +%T) load $(cut -d' ' -f1 /proc/loadavg)" >> $B/blocks.txt; }
drun A6 a57477b; drun P3 2beeb31; drun F3 fix2; drun F4 fix2; drun P4 2beeb31; drun A7 a57477b
