"""Transports: how the controller runs commands and moves files on a host.

The engine sees only ``Transport`` (``base.py``); ``local.py`` runs on this machine with invoke,
``ssh.py`` on a remote host with fabric. Both return the same ``CommandResult``.
"""

from .base import AgentClient, CommandResult, Transport

__all__ = ["AgentClient", "CommandResult", "Transport", "connect"]


def connect(host: "object") -> Transport:
    """The transport for an inventory host (``address: local`` runs here)."""
    from ..inventory import Host

    assert isinstance(host, Host)
    if host.is_local:
        from .local import LocalTransport

        return LocalTransport(host.name)
    from .ssh import SSHTransport  # type: ignore[import-not-found]

    return SSHTransport(host)  # type: ignore[no-any-return]
