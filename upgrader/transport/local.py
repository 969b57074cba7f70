"""The local transport: commands on this machine through invoke, files by copy."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Sequence

from ..errors import TransportError
from .base import AGENT_SOURCE, CommandResult, shell_join

__all__ = ["LocalTransport"]


class LocalTransport:
    """Runs on the controller's own machine (inventory address ``local``)."""

    #: the host's files are the controller's: packages need no upload
    shares_filesystem = True

    def __init__(self, name: str = "local") -> None:
        self.name = name
        self.python = sys.executable

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
        return str(AGENT_SOURCE)

    def close(self) -> None:
        pass
