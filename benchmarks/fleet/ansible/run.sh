#!/bin/bash
# ansible-playbook: run.sh N  (ansible-playbook -f N over the inventory of h1..hN)
# Writes $BENCH_ROOT/ansible/inventory-N.ini when missing. Each host: 127.0.0.1:$BENCH_SSH_PORT as root
# with the client key, host key checked against $BENCH_ROOT/ssh/known_hosts, its own ControlPath.
set -euo pipefail
. "$(dirname "$0")/../common.sh"
N=${1:?usage: ansible/run.sh N}
inv=$R/ansible/inventory-$N.ini
if [ ! -f "$inv" ]; then
  {
    echo "[all]"
    for i in $(seq "$N"); do
      echo "h$i hostdir=$R/hosts/h$i http_port=$((BENCH_HTTP_BASE + i)) ansible_control_path=$R/ansible/cp/h$i"
    done
    echo
    echo "[all:vars]"
    echo "ansible_host=127.0.0.1"
    echo "ansible_port=$BENCH_SSH_PORT"
    echo "ansible_user=root"
    echo "ansible_ssh_private_key_file=$R/ssh/client_key"
    echo "ansible_ssh_common_args='-o UserKnownHostsFile=$R/ssh/known_hosts -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes -o IdentityAgent=none'"
  } > "$inv.tmp"
  mv "$inv.tmp" "$inv"
fi
export ANSIBLE_CONFIG=$FLEET/ansible/ansible.cfg ANSIBLE_HOME=$R/ansible/home ANSIBLE_LOCAL_TEMP=$R/ansible/tmp
exec "$VENV/bin/ansible-playbook" -i "$inv" -f "$N" "$FLEET/ansible/upgrade.yml" > "$R/ansible/last-run.log"
