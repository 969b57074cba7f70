#!/bin/bash
# compare.sh [--runs R] [--warmup W] [--interleave] N COMMIT [COMMIT...]
# upgrader at several commits side by side in one timing session (hyperfine -N; timer.py without it), on the
# hosts h1..hN of setup.sh, with `reset.sh N` before every run (not timed), plain ssh as the yardstick.
# Without --interleave the timer runs all runs of one command, then all of the next (a load that changes during
# the session weighs on the commands unevenly); with it, R rounds of one run of each command, the order reversed
# every other round (A B C, C B A, ...), the warm-ups in the first round, merged into one cmp_N.json.
# Each commit runs from its own snapshot (git archive, bytecode compiled) in $BENCH_ROOT/upgrader-src/cmp-COMMIT,
# with its own contender.py and its own HOME ($BENCH_ROOT/upgrader-cmp-COMMIT), so that no two commits share
# plans, runs or audit logs. A contender older than the runner's HTTP port setting (a57477b and before) gets
# three edits in its snapshot, none in upgrader: the hosts' HTTP ports from bench.env (it assumed 18000+I), and
# `window: {outside: allow}` in its policy like today's contender (a benchmark runs at any hour). A playbook that
# names the hosts' pid file (outside the install, refused by later commits such as 2beeb31) loses that line.
# Results in $BENCH_ROOT/results: cmp_N.json (every run's wall time), cmp_time_NAME_N.txt (GNU time: controller
# CPU and peak RSS per run, the warm-up first), cmp_N.env (commits, times, load). Defaults: --runs 5 --warmup 1.
set -euo pipefail
. "$(dirname "$0")/common.sh"
RUNS=5 WARMUP=1 INTERLEAVE=0
usage() { echo "usage: compare.sh [--runs R] [--warmup W] [--interleave] N COMMIT [COMMIT...]" >&2; exit 2; }
while [ $# -gt 0 ]; do
  case $1 in
    --runs) RUNS=${2:-}; shift 2 ;;
    --warmup) WARMUP=${2:-}; shift 2 ;;
    --interleave) INTERLEAVE=1; shift ;;
    -h|--help) usage ;;
    -*) echo "compare.sh: unknown option $1" >&2; usage ;;
    *) break ;;
  esac
done
[ $# -ge 2 ] || usage
N=$1; shift
case "$RUNS$WARMUP" in *[!0-9]*|'') usage ;; esac
hosts_upto "$N"
need_root
our_pid "$R/ssh/sshd.pid" "$R/ssh/sshd_config" >/dev/null ||
  { echo "compare.sh: the private sshd of $R is not running: run setup.sh first" >&2; exit 2; }

if command -v hyperfine >/dev/null; then
  timer=(hyperfine -N --style basic); timer_name=$(hyperfine --version)
else
  timer=("$VENV/bin/python" "$FLEET/timer.py"); timer_name="timer.py (hyperfine not installed)"
fi
q() { printf '%q' "$1"; }
mkdir -p "$R/results"
tfile=$R/results/cmp_time_ssh_plain_$N.txt; : > "$tfile"
cmd=(-n ssh_plain "$(q /usr/bin/time) -f $(q '%e %U %S %M') -a -o $(q "$tfile") $(q "$FLEET/ssh_plain.sh") $N")
commits=()
for rev in "$@"; do
  c=$(git -C "$REPO" rev-parse --short=12 "$rev^{commit}") || { echo "compare.sh: no commit $rev" >&2; exit 2; }
  commits+=("$c")
  snap=$R/upgrader-src/cmp-$c
  if [ ! -f "$snap/.complete" ]; then
    rm -rf "$snap.tmp"; mkdir -p "$snap.tmp"
    git -C "$REPO" archive "$c" | tar -x -C "$snap.tmp"
    "$UVENV/bin/python" - "$snap.tmp/benchmarks/fleet/contender.py" "upgrader-cmp-$c" <<'PY'
import sys
path, home = sys.argv[1], sys.argv[2]
s = open(path).read()
edits = [('home = root / "upgrader"\n', 'home = root / "%s"\n' % home)]
if "BENCH_HTTP_BASE" not in s:  # a57477b's contender: ports 18000+I, no window in its policy
    edits += [('port: \\"{18000 + i}\\"', 'port: \\"{http_base + i}\\"'),
              ('def inventory(root: Path, home: Path, port: int, n: int) -> Path:\n',
               'def inventory(root: Path, home: Path, port: int, n: int) -> Path:\n'
               '    http_base = int(dict(kv.split("=", 1) for kv in (root / "bench.env").read_text().split())'
               '["BENCH_HTTP_BASE"])\n'),
              ('"catalog: {trusted_signers: keys/vendor_signers}\\n")',
               '"catalog: {trusted_signers: keys/vendor_signers}\\n"\n        "window: {outside: allow}\\n")')]
for old, new in edits:
    if s.count(old) != 1:
        sys.exit("compare.sh: cannot adapt %s (%r not found once)" % (path, old))
    s = s.replace(old, new)
open(path, "w").write(s)
# A playbook of the days when the fleet benchmark named the hosts' pid file (outside the install: ${hostdir}/run)
# is refused by the commits that check pid files beneath the install (2beeb31 among them): drop that one line.
yaml = path.replace("contender.py", "bench-middleware.yaml")
y = open(yaml).read()
line = '  pid_file: "${hostdir}/run/server.pid"\n'
if line in y:
    open(yaml, "w").write(y.replace(line, ""))
PY
    "$UVENV/bin/python" -m compileall -q "$snap.tmp/upgrader" "$snap.tmp/version_policy" >/dev/null
    touch "$snap.tmp/.complete"
    rm -rf "$snap"; mv "$snap.tmp" "$snap"
  fi
  tfile=$R/results/cmp_time_upgrader-${c}_$N.txt; : > "$tfile"
  cmd+=(-n "upgrader@$c" "$(q /usr/bin/time) -f $(q '%e %U %S %M') -a -o $(q "$tfile") $(q "$FLEET/upgrader.sh") $(q "$snap") $N")
done
{
  echo "n=$N"; echo "runs=$RUNS"; echo "warmup=$WARMUP"; echo "interleave=$INTERLEAVE"; echo "commits='${commits[*]}'"
  echo "timer='$timer_name'"
  echo "start=$(date -u +%FT%TZ)"; echo "load_start='$(cut -d' ' -f1-3 /proc/loadavg)'"
} > "$R/results/cmp_$N.env"
echo "$(date -u +%FT%TZ) compare N=$N runs=$RUNS warmup=$WARMUP commits=${commits[*]}" >> "$R/results/reset.log"
if [ "$INTERLEAVE" = 0 ]; then
  "${timer[@]}" --warmup "$WARMUP" --runs "$RUNS" --prepare "$(q "$FLEET/reset.sh") $N" \
    --export-json "$R/results/cmp_$N.json" "${cmd[@]}" >&2
else
  rounds=()
  for round in $(seq "$RUNS"); do
    order=("${cmd[@]}")
    if [ $((round % 2)) = 0 ]; then  # every other round in the reverse order (cmd holds -n NAME COMMAND triples)
      order=(); for ((i = ${#cmd[@]} - 3; i >= 0; i -= 3)); do order+=("${cmd[@]:i:3}"); done
    fi
    w=0; [ "$round" = 1 ] && w=$WARMUP
    "${timer[@]}" --warmup "$w" --runs 1 --prepare "$(q "$FLEET/reset.sh") $N" \
      --export-json "$R/results/cmp_$N.round-$round.json" "${order[@]}" >&2
    rounds+=("$R/results/cmp_$N.round-$round.json")
  done
  "$UVENV/bin/python" - "$R/results/cmp_$N.json" "${rounds[@]}" <<'PY'
import json, statistics, sys
out, merged = sys.argv[1], {}
for path in sys.argv[2:]:
    for r in json.load(open(path))["results"]:
        m = merged.setdefault(r["command"], {"command": r["command"], "times": [], "exit_codes": [],
                                            "user_s": [], "system_s": []})
        m["times"] += r["times"]
        m["exit_codes"] += r.get("exit_codes") or []
        m["user_s"].append(r["user"])  # each round's one run (the first round's mean includes no warm-up)
        m["system_s"].append(r["system"])
results = []
for m in merged.values():
    t = m["times"]
    m.update(mean=statistics.mean(t), median=statistics.median(t), min=min(t), max=max(t),
             stddev=statistics.stdev(t) if len(t) > 1 else 0.0, user=statistics.mean(m["user_s"]),
             system=statistics.mean(m["system_s"]))
    results.append(m)
json.dump({"interleaved_rounds": len(sys.argv) - 2, "results": results}, open(out, "w"), indent=1)
PY
  rm -f "${rounds[@]}"
fi
at2=0
for i in $(seq "$N"); do [ "$(cat "$R/hosts/h$i/version.txt" 2>/dev/null)" = 2.0 ] && at2=$((at2 + 1)); done
echo "$(date -u +%FT%TZ) after the last run N=$N: found $at2/$N hosts at 2.0" >> "$R/results/reset.log"
{ echo "end=$(date -u +%FT%TZ)"; echo "load_end='$(cut -d' ' -f1-3 /proc/loadavg)'"; echo "last_run_at_2=$at2"; } \
  >> "$R/results/cmp_$N.env"
"$UVENV/bin/python" - "$R/results/cmp_$N.json" <<'PY'
import json, sys
for r in json.load(open(sys.argv[1]))["results"]:
    t = sorted(r["times"])
    print("%-22s runs %d  median %.2f s  min %.2f  max %.2f" % (r["command"], len(t), r["median"], t[0], t[-1]))
PY
