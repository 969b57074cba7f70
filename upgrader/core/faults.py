"""Named fault points: the places where a crash or a Ctrl-C must leave the hosts and the records whole.

The engine, the agent client and the guide call ``point(name, **context)`` there. In the product
the registry is empty and ``point`` returns at once: nothing in the product registers a hook, and no
environment variable, file or argument can. Only a program that imports this module itself can
``register`` one, in its own process; the test suite does so from its plugin (tests/plugin), to
kill the controller at a phase boundary or hold a run until the test presses Ctrl-C.

Points (``context`` in brackets):
    ``<phase>:before|started|finished``     the engine around each phase of a host
    ``cancel_check:<step>`` [cancel]        the engine's Ctrl-C check before ``backup``, ``stop``, ...
    ``guide:run_started``, ``guide:access_granted`` [until]   the guide, at its safe points
    ``agent:request`` [op, request]         before a request goes to the host agent (a hook may add
                                            the field the agent's own fault points act on)
    ``agent:lost`` [op, request]            the agent's session broke while that request was out
    ``agent:replied`` [op]                  the host agent answered that request (ok)

The host agent (stdlib only, on the host) has its own steps, ``test_kill(req, "<op>:<step>")`` in
upgrader/hostagent: it acts on them only when a request carries the field that a hook registered here
adds at ``agent:request``; the controller never sets it.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["Hook", "point", "register", "unregister"]


class Hook(Protocol):
    def __call__(self, name: str, **context: object) -> None: ...


_hooks: list[Hook] = []


def point(name: str, **context: object) -> None:
    """A fault point: call every registered hook (none in the product)."""
    for hook in tuple(_hooks):
        hook(name, **context)


def register(hook: Hook) -> None:
    _hooks.append(hook)


def unregister(hook: Hook) -> None:
    if hook in _hooks:
        _hooks.remove(hook)
