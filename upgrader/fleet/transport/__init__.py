"""Transports: how the controller runs commands and moves files on a host.

The engine sees only ``Transport`` (``base.py``); ``local.py`` runs on this machine with invoke,
``ssh.py`` on a remote host with fabric. Both return the same ``CommandResult``.
"""

from .base import AgentClient, CommandResult, Transport

__all__ = ["AgentClient", "CommandResult", "Transport", "connect", "close_all"]


_POOL: dict[tuple[object, ...], "_Pooled"] = {}


class _Pooled:
    """A shared SSH connection: ``close`` ends the caller's agent sessions but keeps the connection
    open for the next command of this process (plan and run in one process connect once)."""

    def __init__(self, inner: "object") -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    def close(self) -> None:
        self._inner.end_sessions()  # type: ignore[attr-defined]


def connect(host: "object") -> Transport:
    """The transport for an inventory host (``address: local`` runs here). SSH connections are
    shared within one process and closed when it exits."""
    from ..inventory import Host

    assert isinstance(host, Host)
    if host.is_local:
        from .local import LocalTransport

        return LocalTransport(host.name)
    from .ssh import SSHTransport

    key = (host.name, host.address, host.port, host.user, host.key, host.known_hosts, host.host_key)
    pooled = _POOL.get(key)
    if pooled is None:
        if not _POOL:
            import atexit

            atexit.register(close_all)
        pooled = _POOL[key] = _Pooled(SSHTransport(host))
    return pooled  # type: ignore[return-value]


def close_all() -> None:
    """Close every shared connection (in parallel: closing one waits for its reader thread)."""
    pooled = list(_POOL.values())
    _POOL.clear()
    if len(pooled) == 1:
        pooled[0]._inner.close()  # type: ignore[attr-defined]
    elif pooled:
        import threading  # not an executor: this also runs at interpreter exit

        closers = [threading.Thread(target=p._inner.close, daemon=True) for p in pooled]  # type: ignore[attr-defined]
        for t in closers:
            t.start()
        for t in closers:
            t.join(10)
