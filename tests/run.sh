#!/usr/bin/env bash
# The whole test suite, with its own set-up: on a fresh machine it creates the virtual environment
# (.venv) with upgrader and its test dependencies, installs the system tools the tests use
# (OpenSSH server and client, Chromium, libfaketime, tmux, a Java runtime) when run as root and they are
# missing, makes sure apt knows the Tomcat packages the real-Tomcat tests download, then runs pytest.
# Extra arguments go to pytest, e.g. `bash tests/run.sh -k policy -x`.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
"$PY" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
  || { echo "tests/run.sh: Python 3.11 or newer is needed ($("$PY" -V 2>&1))" >&2; exit 2; }

# --- system tools the tests drive for real --------------------------------------------------------
need=()
[ -x /usr/sbin/sshd ] || need+=(openssh-server)
command -v ssh >/dev/null && command -v ssh-keygen >/dev/null || need+=(openssh-client)
command -v chromium >/dev/null || need+=(chromium)
# libfaketime: tests run the CLI as a child process at another "now" (the product has no test clock)
compgen -G '/usr/lib/*/faketime/libfaketime.so.1' >/dev/null || need+=(faketime)
# the customer's guide is also driven through tmux (send-keys, capture-pane) as a person at a terminal
command -v tmux >/dev/null || need+=(tmux)
# Chinese labels of the HTML reports render with a CJK font (the screenshots are test artifacts)
[ -e /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ] || need+=(fonts-wqy-microhei)
# the real Tomcat (tests/tomcat.py) runs on Debian's OpenJDK; its packages come through apt-get download
command -v java >/dev/null || need+=(default-jdk-headless)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "tests/run.sh: missing ${need[*]}; run as root once, or install them with apt-get" >&2
    exit 2
  fi
  echo "tests/run.sh: installing ${need[*]}"
  # keep Debian's postinst from starting a system sshd listening on all interfaces
  made_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; made_policy=1
  fi
  rc=0
  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"; } || rc=$?
  [ -n "$made_policy" ] && rm -f /usr/sbin/policy-rc.d
  [ "$rc" = 0 ] || { echo "tests/run.sh: apt-get install ${need[*]} failed" >&2; exit 2; }
fi

# the real-Tomcat fixture fetches tomcat10 with apt-get download (cached in .cache/tomcat/): apt's
# package lists must name the versions, which a fresh container often lacks
if [ ! -d .cache/tomcat ] && [ -z "$(apt-cache madison tomcat10 2>/dev/null)" ] && [ "$(id -u)" = 0 ]; then
  echo "tests/run.sh: apt-get update (the package lists do not name tomcat10)"
  apt-get update -qq || { echo "tests/run.sh: apt-get update failed" >&2; exit 2; }
fi

# --- Python dependencies in .venv, reinstalled when pyproject.toml changes --------------------------
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -x .venv/bin/python ] || [ ! -e "$stamp" ]; then
  [ -x .venv/bin/python ] || "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  .venv/bin/python -m pip install -q -e '.[test]'
  rm -f .venv/.installed-*; touch "$stamp"
fi

mkdir -p test-artifacts
# as root: the suite runs in a mount namespace of its own, with an empty tmpfs at /etc/upgrader, so the host
# trust roots and agent configs the tests write there, and the mounts some tests make (bind mounts in an install,
# a tmpfs over /boot), are never seen by this machine's other processes and vanish with the suite
private=()
if [ "$(id -u)" = 0 ] && command -v unshare >/dev/null && [ -z "${UPGRADER_TEST_NAMESPACE:-}" ]; then
  mkdir -p /etc/upgrader
  private=(env UPGRADER_TEST_NAMESPACE=1 unshare -m sh -c \
    'mount --make-rprivate / && mount -t tmpfs -o mode=0755 tmpfs /etc/upgrader && exec "$@"' sh)
fi

# the whole suite (no arguments) runs as UPGRADER_TEST_SHARDS pytest processes side by side (default 2), each in
# a mount namespace of its own, the test files split by their recorded seconds (tests/shards.py): the suite
# mostly waits (services starting and stopping, SSH sessions, a JVM, observation windows), so the shards
# overlap their waits. The first shard prints as it goes; the others' output follows when they are done.
shards=${UPGRADER_TEST_SHARDS:-2}
if [ $# -gt 0 ] || [ "$shards" -le 1 ]; then
  set +e
  "${private[@]}" .venv/bin/python -m pytest "$@"
  rc=$?
  set -e
  if [ "$rc" = 5 ]; then echo "tests/run.sh: pytest collected no tests" >&2; exit 1; fi
  exit "$rc"
fi

rm -f test-artifacts/durations.json
tmp_root=$(mktemp -d "${TMPDIR:-/tmp}/upgrader-tests.XXXXXX")
pids=()
trap 'trap - INT TERM; kill 0' INT TERM   # stop every shard with the run
for i in $(seq 1 "$shards"); do
  mapfile -t files < <(.venv/bin/python tests/shards.py "$shards" "$i")
  [ ${#files[@]} -gt 0 ] || continue
  echo "tests/run.sh: shard $i of $shards: ${#files[@]} test files"
  mkdir -p "$tmp_root/shard-$i"
  argv=(.venv/bin/python -m pytest --basetemp="$tmp_root/shard-$i/pytest" "${files[@]}")
  if [ "$i" = 1 ]; then
    ( set +e; "${private[@]}" "${argv[@]}"; echo $? > "$tmp_root/shard-$i/rc" ) &
  else
    ( set +e; "${private[@]}" "${argv[@]}" > "$tmp_root/shard-$i/log" 2>&1; echo $? > "$tmp_root/shard-$i/rc" ) &
  fi
  pids+=($!)
done
wait "${pids[@]}" || true
rc=0
summary=()
for i in $(seq 1 "$shards"); do
  [ -e "$tmp_root/shard-$i/rc" ] || continue
  r=$(cat "$tmp_root/shard-$i/rc")
  if [ "$i" != 1 ]; then
    echo; echo "======================== tests/run.sh: shard $i of $shards ========================"
    cat "$tmp_root/shard-$i/log"
  fi
  summary+=("shard $i: exit $r")
  [ "$r" = 0 ] || rc=1
done
echo "tests/run.sh: ${summary[*]}; test files' seconds in test-artifacts/durations.json"
if [ "$rc" = 0 ]; then rm -rf "$tmp_root"; else echo "tests/run.sh: the shards' temporary files are kept in $tmp_root"; fi
exit "$rc"
