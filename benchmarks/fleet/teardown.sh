#!/bin/bash
# teardown.sh: stop what setup.sh and reset.sh started under $BENCH_ROOT, each by its recorded PID and only
# while that PID is still the process recorded (host servers, ansible's ssh masters, the private sshd).
# Files stay; `rm -rf $BENCH_ROOT` removes them.
set -uo pipefail
. "$(dirname "$0")/common.sh"
stopped=0
for d in "$R"/hosts/h*; do
  [ -d "$d" ] || continue
  i=${d##*/h}
  if pid=$(our_pid "$d/run/server.pid" "http.server $((BENCH_HTTP_BASE + i))"); then
    stop_pid "$pid"; rm -f "$d/run/server.pid"; stopped=$((stopped + 1))
  fi
done
close_ansible_masters
if pid=$(our_pid "$R/ssh/sshd.pid" "$R/ssh/sshd_config"); then
  stop_pid "$pid"; rm -f "$R/ssh/sshd.pid"; echo "teardown: stopped $stopped host servers and sshd (pid $pid)" >&2
else
  echo "teardown: stopped $stopped host servers; no sshd of $R was running" >&2
fi
