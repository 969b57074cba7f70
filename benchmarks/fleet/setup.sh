#!/bin/bash
# Set up the fleet benchmark (idempotent): setup.sh N [FILES=200] [TOTAL_MB=20]
#   - system packages if missing: OpenSSH client and server, curl, hyperfine, GNU time (apt-get)
#   - $BENCH_ROOT/venv: the reference tools at the versions pinned in requirements.txt
#     (BENCH_UNPINNED=1: the newest ansible-core, pyinfra and fabric instead)
#   - $BENCH_ROOT/venv-upgrader: upgrader's dependencies (upgrader itself runs from a snapshot of a commit)
#   - keys, ssh configs and a private sshd on 127.0.0.1:$BENCH_SSH_PORT (restarted when already running)
#   - hosts h1..hN (make_hosts.py; existing hosts are kept), then reset.sh N
# BENCH_PYTHON chooses the interpreter for both venvs (default python3; 3.11 or newer).
set -euo pipefail
. "$(dirname "$0")/common.sh"
need_root
N=${1:-}
FILES=${2:-200}
MB=${3:-20}
case "$N$FILES$MB" in ''|*[!0-9]*) echo "usage: setup.sh N [FILES=200] [TOTAL_MB=20]" >&2; exit 2 ;; esac
PY=${BENCH_PYTHON:-python3}
log() { echo "setup: $*" >&2; }

# --- system packages --------------------------------------------------------------------------------
missing=()
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
command -v ssh >/dev/null || missing+=(openssh-client)
command -v ssh-keygen >/dev/null || missing+=(openssh-client)
command -v curl >/dev/null || missing+=(curl)
[ -x /usr/bin/time ] || missing+=(time)
command -v hyperfine >/dev/null || missing+=(hyperfine)
if [ ${#missing[@]} -gt 0 ]; then
  log "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if ! { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >&2; then
    command -v hyperfine >/dev/null || log "no hyperfine: bench.sh will time with its Python fallback (timer.py)"
  fi
fi
for tool in ssh ssh-keygen curl; do
  command -v $tool >/dev/null || { echo "setup: $tool is missing and could not be installed" >&2; exit 1; }
done
[ -x /usr/sbin/sshd ] || { echo "setup: /usr/sbin/sshd is missing and could not be installed" >&2; exit 1; }

mkdir -p "$R"/{ssh,home,results,hosts,ansible/cp,ansible/tmp,upgrader-src}
chmod 755 "$R" "$R/hosts"
chmod 700 "$R/ssh" "$R/ansible/cp"

# --- venvs ------------------------------------------------------------------------------------------
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
  { echo "setup: $PY is older than 3.11 (upgrader needs 3.11+); set BENCH_PYTHON" >&2; exit 1; }
req=$FLEET/requirements.txt
stamp="$(sha256sum "$req" | cut -c1-16)-${BENCH_UNPINNED:-0}"
if [ ! -f "$VENV/.installed-$stamp" ]; then
  log "venv for the reference tools: $VENV"
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip >&2
  if [ "${BENCH_UNPINNED:-0}" = 1 ]; then
    "$VENV/bin/pip" install -q ansible-core pyinfra fabric >&2
  else
    "$VENV/bin/pip" install -q -r "$req" >&2 ||
      { echo "setup: the pinned versions in $req did not install; BENCH_UNPINNED=1 takes the newest" >&2; exit 1; }
  fi
  touch "$VENV/.installed-$stamp"
fi
ustamp=$(sha256sum "$REPO/pyproject.toml" | cut -c1-16)
if [ ! -f "$UVENV/.installed-$ustamp" ]; then
  log "venv for upgrader's dependencies: $UVENV"
  rm -rf "$UVENV"
  "$PY" -m venv "$UVENV"
  "$UVENV/bin/pip" install -q --upgrade pip >&2
  "$UVENV/bin/python" -c 'import sys, tomllib; print("\n".join(tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]))' \
    "$REPO/pyproject.toml" > "$UVENV/requirements.txt"
  "$UVENV/bin/pip" install -q -r "$UVENV/requirements.txt" >&2
  touch "$UVENV/.installed-$ustamp"
fi

# --- keys and ssh configs ---------------------------------------------------------------------------
S=$R/ssh
[ -f "$S/host_ed25519_key" ] || ssh-keygen -q -t ed25519 -N '' -C bench-sshd -f "$S/host_ed25519_key"
[ -f "$S/client_key" ] || ssh-keygen -q -t ed25519 -N '' -C bench-client -f "$S/client_key"
cp "$S/client_key.pub" "$S/authorized_keys"
chmod 600 "$S/authorized_keys"
echo "[127.0.0.1]:$BENCH_SSH_PORT $(cut -d' ' -f1,2 "$S/host_ed25519_key.pub")" > "$S/known_hosts"

{
  echo "# the fleet benchmark's private sshd (written by setup.sh)"
  echo "ListenAddress 127.0.0.1"
  echo "Port $BENCH_SSH_PORT"
  echo "HostKey $S/host_ed25519_key"
  echo "PidFile $S/sshd.pid"
  echo "AuthorizedKeysFile $S/authorized_keys"
  echo "PermitRootLogin prohibit-password"
  echo "PubkeyAuthentication yes"
  echo "PasswordAuthentication no"
  echo "KbdInteractiveAuthentication no"
  echo "UsePAM no"
  echo "UseDNS no"
  echo "MaxStartups 200:30:400"
  echo "MaxSessions 200"
  echo "Subsystem sftp internal-sftp"
  # A controller's own shell start-up files (for example a pyenv init in root's ~/.bashrc) would run
  # on every remote command and weigh on tools by the number of commands they send; a plain server
  # has none, so the sessions get an empty HOME and the stock PATH.
  echo "SetEnv HOME=$R/home PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
  # sshd checks that no directory above authorized_keys is group- or world-writable; /tmp is.
  d=$S; writable=no
  while [ "$d" != / ]; do d=$(dirname "$d"); [ -n "$(find "$d" -maxdepth 0 -perm /022)" ] && writable=yes; done
  [ $writable = yes ] && echo "StrictModes no"
} > "$S/sshd_config"

cat > "$S/ssh_config" <<CFG
# OpenSSH client settings for hosts h1..hN (written by setup.sh): all reach the private sshd
Host h*
  HostName 127.0.0.1
  Port $BENCH_SSH_PORT
  User root
  IdentityFile $S/client_key
  IdentitiesOnly yes
  IdentityAgent none
  UserKnownHostsFile $S/known_hosts
  GlobalKnownHostsFile /dev/null
  StrictHostKeyChecking yes
  BatchMode yes
  LogLevel ERROR
CFG

# --- sshd -------------------------------------------------------------------------------------------
if pid=$(our_pid "$S/sshd.pid" "$S/sshd_config"); then log "restarting sshd (pid $pid)"; stop_pid "$pid"; fi
if (exec 3<>"/dev/tcp/127.0.0.1/$BENCH_SSH_PORT") 2>/dev/null; then
  echo "setup: 127.0.0.1:$BENCH_SSH_PORT is taken by another program; choose BENCH_SSH_PORT (or teardown.sh the other BENCH_ROOT)" >&2
  exit 1
fi
mkdir -p /run/sshd
/usr/sbin/sshd -t -f "$S/sshd_config"
/usr/sbin/sshd -f "$S/sshd_config"
for _ in $(seq 100); do our_pid "$S/sshd.pid" "$S/sshd_config" >/dev/null && break; sleep 0.05; done
ssh -F "$S/ssh_config" h1 true || { echo "setup: cannot log in to the private sshd on 127.0.0.1:$BENCH_SSH_PORT" >&2; exit 1; }

cat > "$R/bench.env" <<ENV
BENCH_SSH_PORT=$BENCH_SSH_PORT
BENCH_HTTP_BASE=$BENCH_HTTP_BASE
ENV

# --- hosts ------------------------------------------------------------------------------------------
log "hosts h1..h$N ($FILES files, $MB MiB per version)"
BENCH_ROOT=$R "$VENV/bin/python" "$FLEET/make_hosts.py" "$N" "$FILES" "$MB"
"$FLEET/reset.sh" "$N"
log "ready: BENCH_ROOT=$R, sshd 127.0.0.1:$BENCH_SSH_PORT (pid $(cat "$S/sshd.pid")), hosts h1..h$N on HTTP ports $((BENCH_HTTP_BASE + 1))..$((BENCH_HTTP_BASE + N))"
