"""pyinfra inventory of h1..hN (N from $BENCH_N, set by run.sh): every host is the private sshd on
127.0.0.1:$BENCH_SSH_PORT as root with the client key, its host key checked against
$BENCH_ROOT/ssh/known_hosts."""

import os
from pathlib import Path

_root = Path(os.environ["BENCH_ROOT"])
_port = int(os.environ["BENCH_SSH_PORT"])
_http = int(os.environ["BENCH_HTTP_BASE"])

hosts = [
    (f"h{i}", {
        "ssh_hostname": "127.0.0.1",
        "ssh_port": _port,
        "ssh_user": "root",
        "ssh_key": str(_root / "ssh" / "client_key"),
        "ssh_allow_agent": False,
        "ssh_look_for_keys": False,
        "ssh_known_hosts_file": str(_root / "ssh" / "known_hosts"),
        "ssh_strict_host_key_checking": "yes",
        "hostdir": str(_root / "hosts" / f"h{i}"),
        "http_port": _http + i,
    })
    for i in range(1, int(os.environ["BENCH_N"]) + 1)
]
