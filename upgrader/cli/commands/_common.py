"""Small pieces every command uses: the console, JSON output, policy loading."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

from ...core.clock import Clock, SystemClock
from ...core.errors import InputError

__all__ = ["console", "print_json", "load_policy_or_fail", "policy_path", "context_of", "warn", "parse_variables",
           "VARIABLE_NAME"]


def console(stderr: bool = False) -> Any:
    import os

    from rich.console import Console

    c = Console(stderr=stderr, highlight=False, soft_wrap=False)
    if not c.is_terminal and "COLUMNS" not in os.environ:
        c.width = 140  # logs and pipes: do not wrap at 80 columns
    return c


def print_json(data: Any, redacted: bool = False) -> None:
    """``--json`` output, with secrets replaced (``redaction.redact_value``): scripts and CI logs keep it.
    ``redacted``: the caller has just passed ``data`` through ``redact_value`` itself."""
    from ...core.plan import readable_json
    from ...audit.redaction import redact_value

    sys.stdout.write(readable_json(data if redacted else redact_value(data), default=str))


def context_of(args: Any) -> Any:
    """The ``upgrader.api.Context`` of a command: --home, the clock handed to ``cli.main``, --policy,
    --audit-key; warnings go to stderr at once (before any host is touched)."""
    from ...api import Context

    policy = getattr(args, "policy", None)
    key = getattr(args, "audit_key", None)
    return Context(home=Path(args.home), clock=clock_of(args), policy=Path(policy) if policy else None,
                   audit_key=Path(key) if key else None, warn=warn)


def clock_of(args: Any) -> Clock:
    """The clock a command was handed (``cli.main(argv, clock=...)``), else the system's."""
    given: Clock | None = getattr(args, "clock", None)
    return given if given is not None else SystemClock()


def warn(text: str) -> None:
    print(f"upgrader: warning: {text}", file=sys.stderr)


def policy_path(args: Any) -> str | None:
    """The operator's policy: --policy, else HOME/policy.yaml, else the system's policy when it exists, else None
    (the shipped default). Never a path written in a plan: the plan is the requester's document."""
    from ...api import policy_file

    return policy_file(context_of(args))


def load_policy_or_fail(path: str | None) -> Any:
    from ...api import load_policy

    return load_policy(path)


VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def parse_variables(pairs: list[str] | None) -> dict[str, str]:
    """``--var NAME=VALUE`` options (a playbook's variables) as a dict; NAME as a playbook writes it."""
    out = {}
    for pair in pairs or ():
        name, sep, value = pair.partition("=")
        if not sep or not VARIABLE_NAME.fullmatch(name.strip()):
            raise InputError(f"--var {pair!r}: expected NAME=VALUE, e.g. --var http_port=8088",
                             hint="NAME is a playbook variable: letters, digits and _, not starting with a digit")
        out[name.strip()] = value
    return out
