"""The local transport: commands on this machine through invoke, files by copy.

The agent runs from the same zip as on SSH hosts (bundle.py), cached in this user's own cache dir and
started by the same boot, which checks its sha256 before anything of it runs: local and SSH runs
execute the same bytes.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Sequence

from ...core.errors import TransportError
from .base import CommandResult, shell_join
from .bundle import AGENT_FLAGS, BOOT, agent_bundle, local_copy

__all__ = ["LocalTransport", "LocalStream"]


class LocalTransport:
    """Runs on the controller's own machine (inventory address ``local``)."""

    #: the host's files are the controller's: packages need no upload
    shares_filesystem = True

    def __init__(self, name: str = "local") -> None:
        self.name = name
        self.python = sys.executable
        self._streams: list[LocalStream] = []

    def run(self, argv: Sequence[str], *, stdin: str | None = None,
            timeout: float | None = None) -> CommandResult:
        import io

        from invoke import Context
        from invoke.exceptions import CommandTimedOut

        command = shell_join(argv)
        try:
            # invoke feeds in_stream a byte at a time; give it nothing to feed when there is no input
            result = Context().run(command, hide=True, warn=True, timeout=timeout, pty=False,
                                   in_stream=io.StringIO(stdin) if stdin else False)
        except CommandTimedOut as e:
            raise TransportError(f"command timed out after {timeout}s: {argv[0]}", host=self.name) from e
        except OSError as e:
            raise TransportError(f"cannot run {argv[0]}: {e}", host=self.name) from e
        assert result is not None
        return CommandResult(command, result.exited, result.stdout, result.stderr)

    def put(self, local: Path, remote: str) -> None:
        Path(remote).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(local, remote)

    def agent_path(self) -> str:
        """The agent's zip in this user's cache dir (written once per version, checked again at each start)."""
        return str(local_copy(host=self.name))

    def open_stream(self, argv: Sequence[str]) -> "LocalStream":
        """Start a command; the agent's session (``[python, agent_path(), "--serve"]``) starts through the
        boot that runs the zip only when its bytes still have their sha256 (a changed copy is written again)."""
        boot = len(argv) == 3 and argv[2] == "--serve" and Path(argv[1]).name == agent_bundle().name
        for attempt in (1, 2):
            if boot:
                stream = LocalStream(self.name, [argv[0], *AGENT_FLAGS, "-c", BOOT, argv[1], agent_bundle().sha256,
                                                 "--serve"])
                first = stream.read_line(60)
                if first == "UPGRADER-AGENT-MISSING" and attempt == 1:
                    stream.close()
                    local_copy(host=self.name)
                    continue
                if first != "UPGRADER-AGENT-READY":
                    stream.close()
                    raise TransportError(f"the agent did not start: {first[:200]!r}", host=self.name)
            else:
                stream = LocalStream(self.name, argv)
            self._streams.append(stream)
            return stream
        raise TransportError("the agent could not be installed", host=self.name)

    def close(self) -> None:
        while self._streams:
            self._streams.pop().close()


class LocalStream:
    """A child process on this machine, spoken to line by line (invoke has no interactive session)."""

    def __init__(self, name: str, argv: Sequence[str]) -> None:
        import subprocess
        import tempfile

        self.name = name
        self._stderr = tempfile.TemporaryFile()
        try:
            # its own session: Ctrl-C and a hang-up in the operator's terminal are the controller's to
            # handle (cancel between actions); in the terminal's process group the agent could die from
            # them while it starts, before its own handlers are installed
            self.proc = subprocess.Popen(list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=self._stderr, bufsize=0, start_new_session=True)
        except OSError as e:
            raise TransportError(f"cannot start {argv[0]}: {e}", host=name) from e
        self._buf = bytearray()  # grown in place: a reply of many MiB is read in linear time

    def send_line(self, line: str) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(line.encode("utf-8") + b"\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as e:
            raise TransportError(f"the agent session ended: {self._err()}", host=self.name) from e

    def read_line(self, timeout: float | None) -> str:
        import select
        import time

        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        deadline = None if timeout is None else time.monotonic() + timeout
        seen = 0
        while (end := self._buf.find(b"\n", seen)) < 0:
            seen = len(self._buf)
            wait = None if deadline is None else deadline - time.monotonic()
            if wait is not None and wait <= 0:
                self.close()
                raise TransportError(f"no answer from the agent within {timeout}s (timed out)", host=self.name)
            ready, _, _ = select.select([fd], [], [], wait)
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                raise TransportError(f"the agent session ended: {self._err()}", host=self.name)
            self._buf += chunk
        line = bytes(self._buf[:end])
        del self._buf[:end + 1]
        return line.decode("utf-8", "replace")

    def _err(self) -> str:
        self._stderr.seek(0)
        return self._stderr.read()[-500:].decode("utf-8", "replace").strip() or "no message"

    def close(self) -> None:
        if self.proc.returncode is not None and self._stderr.closed:
            return
        for f in (self.proc.stdin, self.proc.stdout):
            try:
                if f:
                    f.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=30)
        except Exception:  # noqa: BLE001 - the session is being abandoned either way
            self.proc.kill()
        self._stderr.close()
