#!/bin/bash
# blocks: A1 a57477b, M1 main, F1 fix, F2 fix, M2 main, A2 a57477b (10 MiB, 2 reps each)
B=BENCH; PY=REPO/.venv/bin/python
unset PYTHONDONTWRITEBYTECODE
run() { local tag=$1 src=$2; export TIMELOG=$B/time-$tag.log; : > $TIMELOG
  (cd $B/src-$src && $PY benchmarks/downtime.py --snapshot -r 2 --sizes 10M --workdir VARTMP --results $B/OUT-$tag --cli $B/cli-time.sh) > $B/log-$tag.txt 2>&1
  echo "$tag $src rc=$? $(date -u +%T) load $(cut -d' ' -f1 /proc/loadavg)" >> $B/blocks.txt; }
run A1 a57477b; run M1 c5d62f8; run F1 d3b4efe; run F2 d3b4efe; run M2 c5d62f8; run A2 a57477b
echo ALLDONE >> $B/blocks.txt
