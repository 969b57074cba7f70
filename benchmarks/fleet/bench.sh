#!/bin/bash
# bench.sh [--runs R] [--warmup W] [--tools LIST] N [N...]
# For each N, one timing session (hyperfine -N; timer.py when hyperfine is missing) that runs the five
# contenders side by side: ssh_plain, fabric, ansible, pyinfra, upgrader (LIST: a comma-separated subset).
# Every run, warm-up included, is preceded by `reset.sh N` (not timed). Defaults: --runs 5 --warmup 1.
# upgrader is measured from a snapshot of the checkout's HEAD (git archive, bytecode compiled) kept in
# $BENCH_ROOT/upgrader-src/COMMIT. Results in $BENCH_ROOT/results: hf_N.json (every run's wall time),
# time_TOOL_N.txt (GNU time: the controller's CPU and peak RSS of every run, the warm-up first) and
# session_N.env (commit, times, load); summarize.py turns them into the table.
set -euo pipefail
. "$(dirname "$0")/common.sh"
RUNS=5 WARMUP=1 TOOLS=ssh_plain,fabric,ansible,pyinfra,upgrader
usage() { echo "usage: bench.sh [--runs R] [--warmup W] [--tools ssh_plain,fabric,ansible,pyinfra,upgrader] N [N...]" >&2; exit 2; }
ns=()
while [ $# -gt 0 ]; do
  case $1 in
    --runs) RUNS=${2:-}; shift 2 ;;
    --warmup) WARMUP=${2:-}; shift 2 ;;
    --tools) TOOLS=${2:-}; shift 2 ;;
    -h|--help) usage ;;
    -*) echo "bench.sh: unknown option $1" >&2; usage ;;
    *) ns+=("$1"); shift ;;
  esac
done
[ ${#ns[@]} -gt 0 ] || usage
case "$RUNS$WARMUP" in *[!0-9]*|'') usage ;; esac
[ "$RUNS" -ge 1 ] || usage
for n in "${ns[@]}"; do hosts_upto "$n"; done
need_root
our_pid "$R/ssh/sshd.pid" "$R/ssh/sshd_config" >/dev/null ||
  { echo "bench.sh: the private sshd of $R is not running: run setup.sh first" >&2; exit 2; }
IFS=, read -r -a tools <<< "$TOOLS"
for t in "${tools[@]}"; do
  case $t in ssh_plain|fabric|ansible|pyinfra|upgrader) ;; *) echo "bench.sh: unknown tool '$t'" >&2; usage ;; esac
done

# --- upgrader: a snapshot of HEAD -------------------------------------------------------------------
commit=none snap=
if [[ ",$TOOLS," == *,upgrader,* ]]; then
  if ! commit=$(git -C "$REPO" rev-parse --short=12 HEAD 2>/dev/null); then
    echo "bench.sh: $REPO is not a git checkout; upgrader is measured from a snapshot of HEAD" >&2; exit 2
  fi
  snap=$R/upgrader-src/$commit
  if [ ! -f "$snap/.complete" ]; then
    rm -rf "$snap.tmp"; mkdir -p "$snap.tmp"
    git -C "$REPO" archive HEAD | tar -x -C "$snap.tmp"
    "$UVENV/bin/python" -m compileall -q "$snap.tmp/upgrader" "$snap.tmp/version_policy" >/dev/null
    touch "$snap.tmp/.complete"
    rm -rf "$snap"; mv "$snap.tmp" "$snap"
  fi
  dirty=$(git -C "$REPO" status --porcelain -- upgrader version_policy playbooks benchmarks/fleet | wc -l)
  [ "$dirty" = 0 ] || echo "bench.sh: note: $dirty uncommitted change(s) in the checkout; upgrader is measured at commit $commit" >&2
fi

if command -v hyperfine >/dev/null; then
  timer=(hyperfine -N --style basic); timer_name=$(hyperfine --version)
else
  timer=("$VENV/bin/python" "$FLEET/timer.py"); timer_name="timer.py (hyperfine not installed)"
fi
q() { printf '%q' "$1"; }

mkdir -p "$R/results"
for n in "${ns[@]}"; do
  cmd=()
  for t in "${tools[@]}"; do
    # GNU time appends one line per run (warm-up first): wall, user and system CPU seconds of the tool's
    # process and the children it waited for, and the peak RSS (KiB) of the largest of them
    tfile=$R/results/time_${t}_$n.txt; : > "$tfile"
    timed="$(q /usr/bin/time) -f $(q '%e %U %S %M') -a -o $(q "$tfile")"
    case $t in
      ssh_plain) cmd+=(-n ssh_plain "$timed $(q "$FLEET/ssh_plain.sh") $n") ;;
      fabric) cmd+=(-n fabric "$timed $(q "$VENV/bin/python") $(q "$FLEET/fabric_upgrade.py") $n") ;;
      ansible) rm -f "$R/ansible/inventory-$n.ini"; cmd+=(-n ansible "$timed $(q "$FLEET/ansible/run.sh") $n") ;;
      pyinfra) cmd+=(-n pyinfra "$timed $(q "$FLEET/pyinfra/run.sh") $n") ;;
      upgrader) cmd+=(-n upgrader "$timed $(q "$FLEET/upgrader.sh") $(q "$snap") $n") ;;
    esac
  done
  session=$R/results/session_$n.env
  {
    echo "n=$n"; echo "runs=$RUNS"; echo "warmup=$WARMUP"; echo "tools=$TOOLS"; echo "commit=$commit"
    echo "timer='$timer_name'"; echo "start=$(date -u +%FT%TZ)"; echo "load_start='$(cut -d' ' -f1-3 /proc/loadavg)'"
  } > "$session"
  echo "$(date -u +%FT%TZ) session N=$n runs=$RUNS warmup=$WARMUP tools=$TOOLS commit=$commit" >> "$R/results/reset.log"
  echo "bench.sh: N=$n, $WARMUP warm-up + $RUNS runs of ${tools[*]} ($timer_name); load $(cut -d' ' -f1-3 /proc/loadavg)" >&2
  "${timer[@]}" --warmup "$WARMUP" --runs "$RUNS" --prepare "$(q "$FLEET/reset.sh") $n" \
    --export-json "$R/results/hf_$n.json" "${cmd[@]}" >&2
  at2=0
  for i in $(seq "$n"); do [ "$(cat "$R/hosts/h$i/version.txt" 2>/dev/null)" = 2.0 ] && at2=$((at2 + 1)); done
  echo "$(date -u +%FT%TZ) after the last run N=$n: found $at2/$n hosts at 2.0" >> "$R/results/reset.log"
  { echo "end=$(date -u +%FT%TZ)"; echo "load_end='$(cut -d' ' -f1-3 /proc/loadavg)'"; echo "last_run_at_2=$at2"; } >> "$session"
done
echo "bench.sh: done; next: $FLEET/summarize.py" >&2
