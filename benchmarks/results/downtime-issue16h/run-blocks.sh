#!/bin/bash
# The final session of downtime-issue16h.md (blocks A6 P3 F3 F4 P4 A7), runnable from the repository root:
#   bash benchmarks/results/downtime-issue16h/run-blocks.sh [WORKDIR]
# Each commit is measured by its own benchmarks/downtime.py from a detached checkout of that commit (git worktree),
# 10 MiB, 3 repetitions per block, every upgrader command under GNU time (cli-time.sh, TIMELOG). The results go to
# WORKDIR (default: a new temporary directory): OUT-<block>/, time-<block>.log, blocks.txt.
set -uo pipefail
REPO=$(git rev-parse --show-toplevel)
B=${1:-$(mktemp -d)}
PY=$REPO/.venv/bin/python            # the CLI that runs each snapshot (downtime.py --snapshot sets PYTHONPATH)
[ -x "$PY" ] || { echo "run-blocks: $PY missing: run tests/run.sh once to make the venv" >&2; exit 2; }
for c in a57477b 2beeb31 0bfc910; do
  [ -d "$B/src-$c" ] || git -C "$REPO" worktree add -q --detach "$B/src-$c" "$c"
done
printf '#!/bin/bash\nexec /usr/bin/time -a -o "$TIMELOG" -f "%%e %%U %%S %%C" %q/.venv/bin/upgrader "$@"\n' "$REPO" \
  > "$B/cli-time.sh"
chmod +x "$B/cli-time.sh"
unset PYTHONDONTWRITEBYTECODE
drun() { local tag=$1 src=$2; export TIMELOG=$B/time-$tag.log; : > "$TIMELOG"
  (cd "$B/src-$src" && "$PY" benchmarks/downtime.py --snapshot -r 3 --sizes 10M --workdir /var/tmp \
     --results "$B/OUT-$tag" --cli "$B/cli-time.sh") > "$B/log-$tag.txt" 2>&1
  echo "$tag $src rc=$? $(date -u +%T) load $(cut -d' ' -f1 /proc/loadavg)" >> "$B/blocks.txt"; }
drun A6 a57477b; drun P3 2beeb31; drun F3 0bfc910; drun F4 0bfc910; drun P4 2beeb31; drun A7 a57477b
echo "done: $B (remove the checkouts with: git worktree remove --force $B/src-COMMIT)"
