"""Small pieces every command uses: the console, JSON output, policy loading."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

from ...core.errors import InputError
from ...core.playbook import SYSTEM_PLAYBOOKS, load_operator_playbook, playbook_roots

__all__ = ["console", "print_json", "load_policy_or_fail", "policy_path", "policy_origin", "SYSTEM_POLICY",
           "SYSTEM_PLAYBOOKS", "playbook_roots", "load_operator_playbook", "parse_variables", "VARIABLE_NAME"]


def console(stderr: bool = False) -> Any:
    import os

    from rich.console import Console

    c = Console(stderr=stderr, highlight=False, soft_wrap=False)
    if not c.is_terminal and "COLUMNS" not in os.environ:
        c.width = 140  # logs and pipes: do not wrap at 80 columns
    return c


def print_json(data: Any) -> None:
    """``--json`` output, with secrets replaced (``redaction.redact_value``): scripts and CI logs keep it."""
    from ...core.plan import readable_json
    from ...audit.redaction import redact_value

    sys.stdout.write(readable_json(redact_value(data), default=str))


#: the machine's policy, used when neither --policy nor HOME/policy.yaml exists (the operator's, like /etc/ssh)
SYSTEM_POLICY = Path("/etc/upgrader/policy.yaml")


def policy_path(args: Any) -> str | None:
    """The operator's policy: --policy, else HOME/policy.yaml, else SYSTEM_POLICY when it exists, else None (the
    shipped default). Never a path written in a plan: the plan is the requester's document."""
    import os

    if getattr(args, "policy", None):
        return os.path.abspath(args.policy)  # plans and audit events name the file wherever they are read
    for candidate in (Path(args.home) / "policy.yaml", SYSTEM_POLICY):
        if candidate.is_file():
            return os.path.abspath(candidate)
    return None


def policy_origin(args: Any) -> str:
    """Which level of the order policy_path follows gave the policy, in words."""
    if getattr(args, "policy", None):
        return "--policy"
    if (Path(args.home) / "policy.yaml").is_file():
        return "HOME/policy.yaml"
    return "system policy" if SYSTEM_POLICY.is_file() else "the shipped default"


def load_policy_or_fail(path: str | None) -> Any:
    from version_policy import PolicyError, load_policy

    try:
        return load_policy(path)
    except PolicyError as e:
        raise InputError(str(e), hint="fix the policy file or leave out --policy to use the default") from None


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
