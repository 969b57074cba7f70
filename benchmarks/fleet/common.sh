# Sourced by the fleet benchmark's scripts (not run): where things are, and the settings setup.sh recorded.
#   BENCH_ROOT       everything the benchmark makes (default /tmp/upgrader-bench; absolute, no spaces)
#   BENCH_SSH_PORT   the private sshd's port on 127.0.0.1 (default 2222)
#   BENCH_HTTP_BASE  host hI serves HTTP on 127.0.0.1:BENCH_HTTP_BASE+I (default 18000)
# setup.sh writes the ports it used to $BENCH_ROOT/bench.env; the other scripts take them from there.
FLEET=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$FLEET/../.." && pwd)
BENCH_ROOT=${BENCH_ROOT:-/tmp/upgrader-bench}
case $BENCH_ROOT in
  /*) ;;
  *) echo "BENCH_ROOT must be an absolute path (got '$BENCH_ROOT')" >&2; exit 2 ;;
esac
case $BENCH_ROOT in
  *[[:space:]]*) echo "BENCH_ROOT must not contain spaces (got '$BENCH_ROOT')" >&2; exit 2 ;;
esac
if [ ${#BENCH_ROOT} -gt 70 ]; then
  echo "BENCH_ROOT is ${#BENCH_ROOT} characters long; keep it at most 70 (ssh control sockets live below it)" >&2
  exit 2
fi
BENCH_ROOT=${BENCH_ROOT%/}
if [ -f "$BENCH_ROOT/bench.env" ]; then
  # shellcheck disable=SC1091
  . "$BENCH_ROOT/bench.env"
fi
BENCH_SSH_PORT=${BENCH_SSH_PORT:-2222}
BENCH_HTTP_BASE=${BENCH_HTTP_BASE:-18000}
export BENCH_ROOT BENCH_SSH_PORT BENCH_HTTP_BASE
R=$BENCH_ROOT
VENV=$R/venv                # the reference tools (requirements.txt)
UVENV=$R/venv-upgrader      # upgrader's dependencies; upgrader itself runs from a snapshot of a commit
STEPS=$FLEET/steps

need_root() {
  if [ "$(id -u)" != 0 ]; then echo "$(basename "$0"): run as root (the tools log in to the simulated hosts as root)" >&2; exit 2; fi
}

# hosts_upto N: fail unless setup.sh made at least N hosts
hosts_upto() {
  local n=$1
  case $n in ''|*[!0-9]*|0) echo "N must be a positive integer (got '$n')" >&2; exit 2 ;; esac
  if [ ! -f "$R/hosts/h$n/.complete" ]; then
    echo "no host h$n under $R/hosts: run setup.sh $n first (BENCH_ROOT=$R)" >&2; exit 2
  fi
}

# our_pid PIDFILE PATTERN: print the pid in PIDFILE if that process is alive and its command line contains PATTERN
our_pid() {
  local pid
  [ -f "$1" ] || return 1
  pid=$(cat "$1" 2>/dev/null) || return 1
  case $pid in ''|*[!0-9]*) return 1 ;; esac
  [ -r "/proc/$pid/cmdline" ] || return 1
  tr '\0' ' ' < "/proc/$pid/cmdline" | grep -qF -- "$2" || return 1
  echo "$pid"
}

# stop_pid PID: TERM, wait up to 5 s until it has exited (a zombie waiting for its parent or init to
# reap it has exited), then KILL
stop_pid() {
  local pid=$1 i state
  kill "$pid" 2>/dev/null || return 0
  for i in $(seq 100); do
    state=$(sed 's/.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1) || return 0
    case $state in ''|Z|X) return 0 ;; esac
    sleep 0.02
  done
  kill -9 "$pid" 2>/dev/null || true
}

# close_ansible_masters: end the ControlPersist ssh masters ansible left (one socket per host)
close_ansible_masters() {
  local s
  for s in "$R"/ansible/cp/h*; do
    [ -S "$s" ] || continue
    ssh -F /dev/null -o ControlPath="$s" -O exit bench-master >/dev/null 2>&1 || rm -f "$s"
  done
}
