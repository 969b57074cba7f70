"""The transport interface and the client that speaks to the host-side agent through it.

A transport runs an argument list on its host (quoted for the shell when it has to cross one)
and copies files there; it knows nothing of phases. ``AgentClient`` sends one JSON request per
phase action to the host agent (``upgrader/hostagent``, which reaches the host as one zip: see
bundle.py) and turns its reply into a result or an ``AgentFailure``.
"""

from __future__ import annotations

import json
import os
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, Sequence

from ...core import faults
from ...core.errors import TransportError

__all__ = ["CommandResult", "Transport", "Stream", "AgentClient", "AgentFailure", "login_home", "expand_home"]


@dataclass(frozen=True)
class CommandResult:
    """What a command did: the same shape for every transport (like invoke's ``Result``)."""

    command: str
    exited: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exited == 0

    def tail(self, stream: str = "stderr", lines: int = 10) -> str:
        return "\n".join(getattr(self, stream).splitlines()[-lines:])


class Transport(Protocol):
    """Runs commands and puts files on one host."""

    name: str
    #: the python interpreter that runs the agent on the host
    python: str

    def run(self, argv: Sequence[str], *, stdin: str | None = None,
            timeout: float | None = None) -> CommandResult: ...

    def put(self, local: Path, remote: str) -> None: ...

    def agent_path(self) -> str:
        """Where the agent's zip is on the host (copied there once per version if needed)."""
        ...

    def open_stream(self, argv: Sequence[str]) -> "Stream":
        """Start a long-running command and talk to it line by line."""
        ...

    def close(self) -> None: ...


class Stream(Protocol):
    """Lines to and from a running command (the agent's session)."""

    def send_line(self, line: str) -> None: ...

    def read_line(self, timeout: float | None) -> str:
        """The next line; raises TransportError on end of stream or timeout."""
        ...

    def close(self) -> None: ...


class AgentFailure(Exception):
    """The agent reported that an action failed; ``kind`` says how (failed, bad_input, locked, ...)."""

    def __init__(self, op: str, kind: str, message: str, data: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.op = op
        self.kind = kind
        self.message = message
        self.data = data or {}


class AgentClient:
    """Calls agent operations on one host, over one agent session (one process, one channel) that is
    opened on the first call and reopened after it breaks."""

    def __init__(self, transport: Transport) -> None:
        self.transport = transport
        self._agent: str | None = None
        self._stream: Stream | None = None
        self._lease: object = None

    def _own_stream(self) -> Stream | None:
        """This client's session, unless the transport took it back meanwhile (an SSH transport keeps the
        session of a caller that ended its sessions for the next client of the same host: see
        ``SSHTransport.end_sessions``); its lease then changed and this client opens a session of its own."""
        if self._stream is not None and getattr(self._stream, "lease", None) != self._lease:
            self._stream = None
        return self._stream

    def call(self, op: str, timeout: float | None = None, **request: Any) -> dict[str, Any]:
        stream = self._session()
        faults.point("agent:request", op=op, request=request)
        return self._result(op, self._exchange(stream, op, {"op": op, **request}, timeout))

    def call_batch(self, requests: Sequence[tuple[str, dict[str, Any]]],
                   timeout: float | None = None) -> list[dict[str, Any]]:
        """Several actions in one round trip, in order (the agent handles each as if it came alone and stops at the
        first that fails): their results, or the first failure raised as ``call`` raises it. Only for actions that
        the engine would send one right after the other whatever the first answers."""
        stream = self._session()
        for op, request in requests:
            faults.point("agent:request", op=op, request=request)
        names = "+".join(op for op, _ in requests)
        reply = self._exchange(stream, names, {"op": "batch", "requests": [{"op": op, **r} for op, r in requests]},
                               timeout)
        replies = reply.get("result", {}).get("replies") if reply.get("ok") else None
        if not isinstance(replies, list) or not all(isinstance(r, dict) for r in replies):
            self.close()
            raise TransportError(f"the agent gave no answer to {names!r}", host=self.transport.name)
        results = [self._result(op, sub) for (op, _), sub in zip(requests, replies)]
        if len(results) < len(requests):
            raise TransportError(f"the agent gave no answer to {requests[len(results)][0]!r}", host=self.transport.name)
        return results

    def _session(self) -> Stream:
        """This client's agent session, opened when it has none."""
        if self._agent is None:
            self._agent = self.transport.agent_path()
        if self._own_stream() is None:
            self._stream = self.transport.open_stream([self.transport.python, self._agent, "--serve"])
            self._lease = getattr(self._stream, "lease", None)
        assert self._stream is not None
        return self._stream

    def _exchange(self, stream: Stream, op: str, message: dict[str, Any], timeout: float | None) -> dict[str, Any]:
        """One request line out, one reply line in, on the session; a broken one is closed."""
        try:
            stream.send_line(json.dumps(message))
            line = stream.read_line(timeout)
        except TransportError:
            self.close()
            faults.point("agent:lost", op=op, request=message)
            raise
        try:
            reply = json.loads(line)
        except ValueError:
            self.close()
            raise TransportError(f"the agent answered {op!r} with something that is not JSON: {line[:200]!r}",
                                 host=self.transport.name) from None
        if not isinstance(reply, dict) or "ok" not in reply:
            self.close()
            raise TransportError(f"the agent gave no answer to {op!r}", host=self.transport.name)
        return reply

    @staticmethod
    def _result(op: str, reply: dict[str, Any]) -> dict[str, Any]:
        """The result of one answered action; a refusal raised as AgentFailure."""
        if not reply.get("ok"):
            raise AgentFailure(op, str(reply.get("kind", "failed")), str(reply.get("error")),
                               reply.get("data"))
        faults.point("agent:replied", op=op)
        return _bounded(dict(reply["result"]))

    def close(self) -> None:
        if self._own_stream() is not None:
            stream, self._stream = self._stream, None
            assert stream is not None
            stream.close()


def _bounded(value: Any, in_probes: bool = False) -> Any:
    """An agent's answer with command output and probe details redacted, then cut (the agent sends them whole
    enough for that: redacting after a cut can miss a secret whose name or '@' was cut off)."""
    from ...audit.redaction import shorten, tail

    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if k in ("stdout", "stderr") and isinstance(v, str):
                out[k] = tail(v, 4000)
            elif k == "detail" and in_probes and isinstance(v, str):
                out[k] = shorten(v, 200)
            else:
                out[k] = _bounded(v, in_probes or k == "probes")
        return out
    if isinstance(value, list):
        return [_bounded(v, in_probes) for v in value]
    return value


def shell_join(argv: Sequence[str]) -> str:
    return " ".join(shlex.quote(a) for a in argv)


def login_home() -> str:
    """This account's login directory on the controller. For root the password database's, never $HOME: ``sudo``
    keeps the caller's HOME, and root would otherwise trust that account's known_hosts and ssh config, and keep
    (and run) its agent in that account's cache. For any other account ``~`` as usual."""
    if os.getuid() == 0:
        import pwd

        return pwd.getpwuid(0).pw_dir
    return os.path.expanduser("~")


def expand_home(path: str) -> str:
    """``path`` with a leading ``~`` (``~/...``) read as login_home(); ``~user`` and other paths as usual."""
    if path == "~" or path.startswith("~/"):
        return login_home() + path[1:]
    return os.path.expanduser(path)
