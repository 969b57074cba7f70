#!/bin/bash
# Plain OpenSSH, the lower bound: ssh_plain.sh N
# One `ssh hI` per host, all N at once, each sending the five steps as one bash script
# ("set -e; export D=... P=..." first, so a host stops at its first failing step).
# Exit 0 only when every host completed every step.
set -uo pipefail
. "$(dirname "$0")/common.sh"
N=${1:?usage: ssh_plain.sh N}
body=$(cat "$STEPS"/[0-9]_*.sh)
pids=()
for i in $(seq "$N"); do
  script="set -e; export D=$R/hosts/h$i P=$((BENCH_HTTP_BASE + i))
$body"
  ssh -F "$R/ssh/ssh_config" "h$i" "bash -c $(printf %q "$script")" < /dev/null &
  pids+=($!)
done
failed=0
for i in $(seq "$N"); do
  wait "${pids[$((i - 1))]}" || { echo "ssh_plain: h$i failed" >&2; failed=$((failed + 1)); }
done
[ $failed = 0 ]
