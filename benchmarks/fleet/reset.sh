#!/bin/bash
# reset.sh N: hosts h1..hN back to version 1.0 with their servers running (hyperfine's --prepare; not timed).
# First it appends to $BENCH_ROOT/results/reset.log how many of the N hosts the previous run left at 2.0
# (version.txt), so that every reset after a timed run can be checked to read N/N. Then, for every host
# at once: stop its server (by the pid file, only if that pid is still its http.server), delete what the
# last run made (current/, current.new/, current.old/, backups, version.txt, upgrader's ledger of what
# it installed), rebuild current/ from pristine/ as a copy (one link
# per file, as an installed product has: a backup copies a file that has other links), start the 1.0 server and wait until
# /VERSION answers 1.0. It also ends ansible's ControlPersist masters (so every ansible run starts cold
# like the others) and runs sync.
set -euo pipefail
. "$(dirname "$0")/common.sh"
N=${1:-}
hosts_upto "$N"
mkdir -p "$R/results"

at2=0
for i in $(seq "$N"); do
  [ "$(cat "$R/hosts/h$i/version.txt" 2>/dev/null)" = 2.0 ] && at2=$((at2 + 1))
done
echo "$(date -u +%FT%TZ) reset N=$N: found $at2/$N hosts at 2.0" >> "$R/results/reset.log"

close_ansible_masters

reset_one() {
  local i=$1 D=$R/hosts/h$1 P=$((BENCH_HTTP_BASE + $1)) pid tries=0
  if pid=$(our_pid "$D/run/server.pid" "http.server $P"); then stop_pid "$pid"; fi
  rm -rf "$D/current" "$D/current.new" "$D/current.old" "$D/version.txt" "$D/run/server.pid"
  # upgrader's host ledger records that it installed 2.0 here; putting 1.0 back by hand is what a
  # ledger exists to notice (the next run would be refused), so the reset removes it with the tree.
  # The agent and the staged package stay, found again by their digests.
  rm -f "$D/.upgrader-current/installed.json"
  find "$D/backups" -mindepth 1 -delete
  cp -a "$D/pristine" "$D/current"
  if (exec 3<>"/dev/tcp/127.0.0.1/$P") 2>/dev/null; then
    echo "reset: 127.0.0.1:$P (h$i) is taken by a process that is not h$i's server" >&2; return 1
  fi
  cd "$D" || return 1
  # a simple command in the background: the shell's child becomes setsid itself, holding no descriptor of ours
  PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin P=$P D=$D \
    setsid sh -c 'echo $$ > run/server.pid; exec python3 -m http.server "$P" --bind 127.0.0.1 --directory "$D/current"' \
    > run/server.log 2>&1 < /dev/null &
  until [ "$(curl -sf "http://127.0.0.1:$P/VERSION" 2>/dev/null)" = 1.0 ]; do
    tries=$((tries + 1))
    [ $tries -le 200 ] || { echo "reset: h$i's server does not answer 1.0 on 127.0.0.1:$P after 20 s" >&2; return 1; }
    sleep 0.1
  done
}

pids=()
for i in $(seq "$N"); do reset_one "$i" & pids+=($!); done
failed=0
for p in "${pids[@]}"; do wait "$p" || failed=$((failed + 1)); done
sync
[ $failed = 0 ] || { echo "reset: $failed of $N hosts could not be reset" >&2; exit 1; }
