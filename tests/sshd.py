"""A real OpenSSH server on 127.0.0.1 for the tests: own host key, one authorized client key.

Started by a session fixture (see conftest.py). A missing sshd is a failure, never a skip:
tests/run.sh installs openssh-server. The server runs with ``SetEnv HOME=...`` so the remote
shell is not slowed down by the controller's shell start-up files.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = "/usr/sbin/sshd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class SSHServer:
    root: Path
    port: int
    client_key: Path
    known_hosts: Path
    host_pub: str
    proc: subprocess.Popen[bytes] | None = None
    user: str = "root"

    @property
    def authorized_keys(self) -> Path:
        return self.root / "authorized_keys"

    def host_entry(self, **extra: object) -> dict[str, object]:
        """Inventory settings that reach this server with the client key and verified host key."""
        return {"address": "127.0.0.1", "port": self.port, "user": self.user, "key": str(self.client_key),
                "known_hosts": str(self.known_hosts), **extra}

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def kill_sessions(self) -> int:
        """SIGKILL every per-connection sshd child of this server (drops live SSH sessions); return how many."""
        if not self.proc:
            return 0
        killed = 0
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                stat = (entry / "stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            if ppid == self.proc.pid:
                try:
                    os.kill(int(entry.name), 9)
                    killed += 1
                except OSError:
                    pass
        return killed


def start_sshd(root: Path, *, port: int | None = None, extra_config: str = "") -> SSHServer:
    if not Path(SSHD).exists() or not shutil.which("ssh-keygen"):
        raise RuntimeError("OpenSSH server/client not installed: run tests/run.sh (it installs openssh-server)")
    root.mkdir(parents=True, exist_ok=True)
    Path("/run/sshd").mkdir(parents=True, exist_ok=True)
    host_key = root / "host_ed25519"
    client_key = root / "client_ed25519"
    for key in (host_key, client_key):
        if not key.exists():
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", key.name, "-f", str(key)], check=True)
    (root / "authorized_keys").write_text(client_key.with_suffix(".pub").read_text())
    os.chmod(root / "authorized_keys", 0o600)
    home = root / "home"
    home.mkdir(exist_ok=True)
    port = port or free_port()
    config = root / "sshd_config"
    config.write_text(f"""ListenAddress 127.0.0.1
Port {port}
HostKey {host_key}
PidFile {root}/sshd.pid
AuthorizedKeysFile {root}/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin prohibit-password
StrictModes no
UseDNS no
MaxStartups 200:30:400
MaxSessions 200
Subsystem sftp internal-sftp
SetEnv HOME={home} PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
LogLevel ERROR
{extra_config}
""")
    host_pub = " ".join(host_key.with_suffix(".pub").read_text().split()[:2])
    known = root / "known_hosts"
    known.write_text(f"[127.0.0.1]:{port} {host_pub}\n")
    log = open(root / "sshd.log", "ab")
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    server = SSHServer(root, port, client_key, known, host_pub, proc)
    deadline = time.monotonic() + 10
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited with {proc.returncode}: {(root / 'sshd.log').read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                break
        except OSError:
            if time.monotonic() > deadline:
                server.stop()
                raise RuntimeError("sshd did not start listening within 10 s") from None
            time.sleep(0.05)
    return server
