"""The SSH transport: one fabric ``Connection`` per host, reused for every command of a run.

Host keys are verified against ``~/.ssh/known_hosts``, the ``UserKnownHostsFile`` of
``~/.ssh/config`` and the inventory's ``known_hosts``; an unknown host key is refused unless the
inventory says ``host_key: accept-new`` (then it is learned and saved, like OpenSSH's option of
that name). ``~/.ssh/config`` (HostName, User, Port, IdentityFile, ConnectTimeout, ProxyJump) and
the SSH agent are honoured through fabric. Keepalives detect a dead link. Files go over SFTP.
Foreign exceptions (paramiko, socket) become ``TransportError`` here.
"""

from __future__ import annotations

import io
import logging
import os
import socket
from pathlib import Path, PurePosixPath
from typing import Any, Sequence

from ...core.errors import TransportError
from .base import CommandResult, expand_home, login_home, shell_join
from .bundle import AGENT_FLAGS, BOOT, agent_bundle

__all__ = ["SSHTransport", "HostKeyRefused"]

KEEPALIVE_SECONDS = 15
IDLE_WAKEUP_SECONDS = 1.0
CONNECT_TIMEOUT = 15

# paramiko's transport thread logs a failed handshake with its traceback; with no handler set up,
# Python prints that on stderr amid the progress lines. The failure reaches the user as our
# TransportError instead; a program that configures logging still receives paramiko's records.
logging.getLogger("paramiko").addHandler(logging.NullHandler())


#: exit status of the two scripts below when the cache directory or the agent's name there is not plain
_LINKED = 3
# Makes ~/.cache/upgrader (0700) on the host and prints the login directory, physically. The directory is entered
# with cd -P and must be exactly <home>/.cache/upgrader there and its user's own: a link on the way (planted by
# whoever could write ~/.cache; looked for before mkdir -p, which would follow it) or another account's directory
# is refused, and chmod acts on the directory entered, never on a name that could be swapped meanwhile.
_PREPARE_CACHE = ('h=$(cd -P "$HOME" && pwd -P) || exit 1; echo "$h"; '
                  'for p in "$h/.cache" "$h/.cache/upgrader"; do [ -L "$p" ] && exit 3; done; '
                  'mkdir -p "$h/.cache/upgrader" || exit 1; cd -P "$h/.cache/upgrader" || exit 1; '
                  '[ "$(pwd -P)" = "$h/.cache/upgrader" ] && [ -O . ] || exit 3; chmod 700 . || exit 1')
# Renames the uploaded $2 to $3 inside the cache directory checked again as above ($1 the login directory):
# mv -T never moves the file into a directory planted at the name, and a link there is refused, not followed.
_MOVE_INTO_CACHE = ('cd -P "$1/.cache/upgrader" && [ "$(pwd -P)" = "$1/.cache/upgrader" ] && [ -O . ] || exit 3; '
                    '[ -L "$3" ] || [ -d "$3" ] && exit 3; exec mv -f -T -- "$2" "$3"')


class HostKeyRefused(TransportError):
    """The host's key is unknown or not the one known_hosts holds: connecting again will not help."""

    retryable = False


class SSHTransport:
    """Runs commands on a remote host over one SSH connection."""

    shares_filesystem = False
    python = "python3"

    def __init__(self, host: Any) -> None:
        self.host = host
        self.name = host.name
        self._conn: Any = None
        self._agent: str | None = None
        self._digest = ""
        self._streams: list[SSHStream] = []
        #: the agent session of a caller that ended its sessions, kept for the next agent client of this host
        self._idle: SSHStream | None = None

    # -- connection -------------------------------------------------------------------------

    def _connect(self) -> Any:
        if self._conn is not None and self._conn.is_connected:
            return self._conn
        import paramiko
        from fabric import Config, Connection

        h = self.host
        kwargs: dict[str, Any] = {}
        if h.key:
            kwargs["key_filename"] = [expand_home(h.key)]
            kwargs["look_for_keys"] = False
        # root's ~/.ssh/config is root's own (login_home), not that of the account whose HOME sudo kept
        config = Config(lazy=False, user_ssh_path=os.path.join(login_home(), ".ssh", "config"))
        conn = Connection(h.address, user=h.user, port=h.port if h.port != 22 else None, config=config,
                          connect_timeout=CONNECT_TIMEOUT, connect_kwargs=kwargs)
        client = conn.client
        for path in self._known_hosts_files(conn):
            try:
                client.load_host_keys(path)
            except (OSError, paramiko.SSHException):
                continue
        if h.host_key == "accept-new":
            client.set_missing_host_key_policy(_AcceptNew(self._known_hosts_files(conn)[0]))
        else:
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            conn.open()
        except paramiko.BadHostKeyException as e:
            raise HostKeyRefused(f"the host key of {h.address} CHANGED ({e.key.get_name()}); refusing to connect "
                                 "(possible man-in-the-middle)", host=self.name,
                                 hint="if the host was reinstalled, fix its known_hosts entry after checking") from e
        except paramiko.SSHException as e:
            if "not found in known_hosts" in str(e) or "known_hosts" in str(e):
                raise HostKeyRefused(f"unknown host key for {h.address}:{h.port}; refusing to connect", host=self.name,
                                     hint=_unknown_key_hint(h)) from e
            raise TransportError(f"SSH to {h.address}:{h.port} failed: {e}", host=self.name) from e
        except (OSError, socket.timeout, EOFError) as e:
            raise TransportError(f"cannot reach {h.address}:{h.port}: {e}", host=self.name) from e
        conn.transport.set_keepalive(KEEPALIVE_SECONDS)
        # paramiko's reader thread wakes every 0.1 s on an idle connection to look for its own shutdown;
        # with dozens of hosts those wake-ups cost more controller CPU than the upgrade. Data still wakes
        # it at once; only the idle check (and keepalive timing) becomes coarser.
        conn.transport.sock.settimeout(IDLE_WAKEUP_SECONDS)
        self._conn = conn
        return conn

    def _known_hosts_files(self, conn: Any) -> list[str]:
        """The known_hosts files whose keys are trusted: the inventory's, ssh config's, then ~/.ssh/known_hosts --
        root's own (login_home): a HOME kept by sudo would let that account add a host key root then trusts."""
        files = [expand_home("~/.ssh/known_hosts")]
        extra = conn.ssh_config.get("userknownhostsfile")
        if extra:
            files = [expand_home(p) for p in str(extra).split()] + files
        if getattr(self.host, "known_hosts", None):
            files.insert(0, expand_home(self.host.known_hosts))
        return files

    # -- the Transport interface ------------------------------------------------------------

    def run(self, argv: Sequence[str], *, stdin: str | None = None,
            timeout: float | None = None) -> CommandResult:
        """One command on one new channel of the open connection.

        fabric opens the connection (ssh_config, keys, agent, host keys); commands go straight to a
        paramiko channel: invoke's runner threads poll at 10 ms and cost more controller CPU than
        the whole upgrade of a host.
        """
        import paramiko

        conn = self._connect()
        command = shown = shell_join(argv)
        if timeout is not None:
            # closing the channel at the deadline does not stop a remote command: coreutils' timeout on the
            # host does (TERM 2 s after our deadline, so that we report the timeout; KILL 5 s later), as the
            # local transport kills its child
            # (a host without GNU timeout, e.g. AIX or a small busybox, runs the command unwrapped)
            wrapper = (f'if timeout -k 5 5 true 2>/dev/null; then exec timeout -k 5 {timeout + 2:.1f} "$@"; fi; '
                       'exec "$@"')
            command = shell_join(["sh", "-c", wrapper, "sh", *argv])
        channel = None
        try:
            channel = conn.transport.open_session(timeout=CONNECT_TIMEOUT)
            channel.settimeout(timeout)
            channel.exec_command(command)
            if stdin:
                channel.sendall(stdin.encode())
            channel.shutdown_write()
            stdout, stderr = _drain(channel, timeout)
            status = channel.recv_exit_status()
            channel.close()
        except socket.timeout as e:
            try:
                if channel is not None:
                    channel.close()
            except Exception:  # noqa: BLE001 - the connection may be gone as well
                pass
            raise TransportError(f"command timed out after {timeout}s: {argv[0]}", host=self.name) from e
        except (paramiko.SSHException, OSError, EOFError) as e:
            self._drop()
            raise TransportError(f"connection lost: {e}", host=self.name) from e
        if status == -1:
            self._drop()
            raise TransportError("connection lost while a command ran (no exit status)", host=self.name)
        return CommandResult(shown, status, stdout.decode("utf-8", "replace"), stderr.decode("utf-8", "replace"))

    def put(self, local: Path, remote: str) -> None:
        """Copy a file over SFTP, making the missing parent directories (as the local transport does)."""
        import paramiko

        conn = self._connect()
        try:
            sftp = conn.sftp()
            missing, parent = [], PurePosixPath(remote).parent
            while str(parent) not in ("/", "."):
                try:
                    sftp.stat(str(parent))
                    break
                except FileNotFoundError:
                    missing.append(parent)
                    parent = parent.parent
            for directory in reversed(missing):
                sftp.mkdir(str(directory))
            conn.put(str(local), remote)
        except (paramiko.SSHException, OSError, EOFError) as e:
            raise TransportError(f"upload of {local.name} failed: {e}", host=self.name) from e

    def agent_path(self) -> str:
        """The agent's zip on the host, named after its sha256, uploaded once per version into ~/.cache/upgrader
        (and checked against that digest each time it starts: bundle.BOOT)."""
        if self._agent:
            return self._agent
        self._digest = agent_bundle().sha256
        self._agent = f".cache/upgrader/{agent_bundle().name}"  # relative to the login directory
        return self._agent

    def open_stream(self, argv: Sequence[str]) -> "SSHStream":
        """Start the agent session; if the agent is not on the host yet, send it first (one upload per version)."""
        import paramiko

        agent = self.agent_path()
        if list(argv[1:]) == [agent, "--serve"]:
            idle, self._idle = self._idle, None
            if idle is not None:
                if idle.reusable():
                    self._streams.append(idle)
                    return idle
                idle.close()
            boot = (f'test -f "$HOME/{agent}" || {{ echo UPGRADER-AGENT-MISSING; exit 97; }}; '
                    f'exec {argv[0]} {" ".join(AGENT_FLAGS)} -c "{BOOT}" "$HOME/{agent}" {self._digest} --serve')
        else:
            boot = shell_join(argv)
        conn = self._connect()
        for attempt in (1, 2):
            try:
                channel = conn.transport.open_session(timeout=CONNECT_TIMEOUT)
                channel.exec_command(boot)
            except (paramiko.SSHException, OSError, EOFError) as e:
                self._drop()
                raise TransportError(f"connection lost: {e}", host=self.name) from e
            stream = SSHStream(self, channel, agent="UPGRADER-AGENT-MISSING" in boot)
            if "UPGRADER-AGENT-MISSING" in boot:
                first = stream.read_line(60)
                if first == "UPGRADER-AGENT-MISSING" and attempt == 1:
                    stream.close()
                    self._upload_agent(agent)
                    continue
                if first != "UPGRADER-AGENT-READY":
                    stream.close()
                    raise TransportError(f"the agent did not start on the host: {first[:200]!r}", host=self.name)
            self._streams.append(stream)
            return stream
        raise TransportError("the agent could not be installed on the host", host=self.name)

    def _upload_agent(self, agent: str) -> None:
        import paramiko

        res = self.run(["sh", "-c", _PREPARE_CACHE])
        home = res.stdout.strip()
        if res.exited == _LINKED:
            raise TransportError(f"the agent's cache directory {home}/.cache/upgrader on the host leads elsewhere (a "
                                 "link on its way, or a directory of another account): the agent is never written "
                                 "through it; remove it (the agent makes its own directory again)", host=self.name)
        if res.exited != 0 or not home.startswith("/"):
            raise TransportError(f"cannot prepare the agent directory: {res.tail()}", host=self.name)
        # several inventory hosts may be installs on one machine, all sending the agent at once: each
        # writes its own temp file and renames it into place whole (a shared name is truncated or
        # moved away under the others' feet)
        part = f"{home}/{agent}.part-{os.urandom(6).hex()}"
        try:
            self._connect().sftp().putfo(io.BytesIO(agent_bundle().data), part)
        except (paramiko.SSHException, OSError, EOFError) as e:
            self.run(["rm", "-f", part])
            raise TransportError(f"upload of the agent failed: {e}", host=self.name) from e
        moved = self.run(["sh", "-c", _MOVE_INTO_CACHE, "sh", home, PurePosixPath(part).name,
                          PurePosixPath(agent).name])
        if moved.exited != 0:
            self.run(["rm", "-f", part])
            what = "a directory or a link is in the way" if moved.exited == _LINKED else moved.tail()
            raise TransportError(f"cannot install the agent as {home}/{agent}: {what}; remove it (the agent is "
                                 "sent again)", host=self.name)

    def _alive(self) -> bool:
        return bool(self._conn is not None and self._conn.transport is not None and self._conn.transport.is_active())

    def _drop(self) -> None:
        self._idle = None  # its channel goes with the connection
        try:
            if self._conn is not None:
                self._conn.close()
        except Exception:  # noqa: BLE001 - closing a dead connection may fail in any way
            pass
        self._conn = None

    def end_sessions(self) -> None:
        """End the agent sessions opened so far, but keep one idle agent session (no request in flight, nothing
        unread, still open) for the next agent client of this host in this process: the gate's read of the host
        and the engine's run, or plan and run in one process, then share one agent process instead of booting
        the agent (python start-up, the zip's digest, compiling its modules) for each. The kept session ran the
        zip checked at its own boot; its former client loses it (``lease``) and opens a new one if it calls again."""
        keep = None
        while self._streams:
            stream = self._streams.pop()
            if keep is None and stream.reusable():
                keep = stream
            else:
                stream.close()
        if keep is not None:
            keep.lease = object()
            if self._idle is not None:
                self._idle.close()
            self._idle = keep

    def close(self) -> None:
        self.end_sessions()
        if self._idle is not None:
            self._idle.close()
            self._idle = None
        self._drop()


class SSHStream:
    """The agent's session on one SSH channel."""

    def __init__(self, transport: SSHTransport, channel: Any, agent: bool = False) -> None:
        self.transport = transport
        self.channel = channel
        self._buf = bytearray()  # grown in place: a reply of many MiB is read in linear time
        self.agent = agent  # the agent's own session (BOOT), which another client of this host may reuse
        self.lease = object()  # changes when the transport takes the session back (end_sessions)
        self.pending = False  # a request was sent and its reply not read yet

    def reusable(self) -> bool:
        """An agent session that another client can use: open, idle (no request in flight, nothing unread)."""
        try:
            return bool(self.agent and not self.pending and not self._buf and not self.channel.closed
                        and not self.channel.eof_received and not self.channel.exit_status_ready()
                        and not self.channel.recv_ready() and not self.channel.recv_stderr_ready()
                        and self.transport._alive())
        except Exception:  # noqa: BLE001 - a dead channel may fail in any way: not reusable
            return False

    def send_line(self, line: str) -> None:
        self.pending = True
        try:
            self.channel.sendall(line.encode("utf-8") + b"\n")
        except (OSError, EOFError, Exception) as e:  # paramiko raises SSHException or socket errors
            self.transport._drop()
            raise TransportError(f"connection lost: {e}", host=self.transport.name) from e

    def read_line(self, timeout: float | None) -> str:
        import select
        import time

        deadline = None if timeout is None else time.monotonic() + timeout
        seen = 0
        while (end := self._buf.find(b"\n", seen)) < 0:
            seen = len(self._buf)
            if self.channel.recv_ready():
                chunk = self.channel.recv(65536)
                if not chunk:
                    raise self._lost("the agent session ended")
                self._buf += chunk
                continue
            if self.channel.closed or self.channel.eof_received or not self.transport._alive():
                raise self._lost("the agent session ended (connection lost)")
            wait = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
            if wait <= 0:
                self.close()
                raise TransportError(f"no answer from the agent within {timeout}s (timed out)",
                                     host=self.transport.name)
            select.select([self.channel], [], [], wait)
        line = bytes(self._buf[:end])
        del self._buf[:end + 1]
        self.pending = False
        return line.decode("utf-8", "replace")

    def _lost(self, what: str) -> TransportError:
        err = b""
        try:
            while self.channel.recv_stderr_ready():
                err += self.channel.recv_stderr(65536)
        except Exception:  # noqa: BLE001
            pass
        self.close()
        self.transport._drop()
        detail = err.decode("utf-8", "replace").strip()[-300:]
        return TransportError(f"{what}" + (f": {detail}" if detail else ""), host=self.transport.name)

    def close(self) -> None:
        try:
            self.channel.shutdown_write()
            self.channel.close()
        except Exception:  # noqa: BLE001 - closing a dead channel may fail in any way
            pass


def _drain(channel: Any, timeout: float | None) -> tuple[bytes, bytes]:
    """Read stdout and stderr to the end without busy-waiting (select on the channel)."""
    import select
    import time

    out, err = bytearray(), bytearray()
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        while channel.recv_ready():
            out += channel.recv(65536)
        while channel.recv_stderr_ready():
            err += channel.recv_stderr(65536)
        if channel.exit_status_ready() and not channel.recv_ready() and not channel.recv_stderr_ready():
            if channel.eof_received or channel.closed:
                break
        if channel.closed and not channel.recv_ready() and not channel.recv_stderr_ready():
            break
        wait = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
        if wait <= 0:
            raise socket.timeout()
        select.select([channel], [], [], wait)
    return bytes(out), bytes(err)


def _unknown_key_hint(h: Any) -> str:
    """The three ways to accept a host key, spelled out for this host."""
    keyscan = f"ssh-keyscan -p {h.port} {h.address}" if h.port != 22 else f"ssh-keyscan {h.address}"
    return (f"accept it in one of three ways, after checking its fingerprint with the customer: (1) {keyscan} "
            ">> ~/.ssh/known_hosts; (2) put that line in a file and name it in the inventory (known_hosts: FILE for "
            f"{h.name}); (3) set host_key: accept-new for {h.name} in the inventory (learned on first contact)")


class _AcceptNew:
    """Learn an unknown host key and save it (OpenSSH's StrictHostKeyChecking=accept-new)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
        client.get_host_keys().add(hostname, key.get_name(), key)
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
