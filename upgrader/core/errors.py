"""The one exception tree of upgrader.

Every error a user can cause or meet is an ``UpgraderError``; it carries its exit code and the
data a message needs (file, key, host). ``cli.main`` is the only place that catches it. Foreign
exceptions (yaml, tarfile, invoke, paramiko, OSError) are translated where they enter.
"""

from __future__ import annotations

from .exit_codes import ExitCode

__all__ = [
    "UpgraderError",
    "InputError",
    "PolicyRefused",
    "ApprovalRefused",
    "UpgradeFailed",
    "NeedsPerson",
    "AuditAltered",
    "TransportError",
]


class UpgraderError(Exception):
    """Base of all user-facing errors; ``str()`` is the message, ``exit_code`` the code."""

    exit_code: ExitCode = ExitCode.BAD_INPUT

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  -> {self.hint}" if self.hint else self.message


class InputError(UpgraderError):
    """Bad input: usage, an unreadable or invalid file. Nothing was changed."""

    exit_code = ExitCode.BAD_INPUT

    def __init__(self, message: str, *, path: str | None = None, key: str | None = None,
                 hint: str | None = None) -> None:
        where = ": ".join(p for p in (path, key) if p)
        super().__init__(f"{where}: {message}" if where else message, hint=hint)
        self.path = path
        self.key = key


class PolicyRefused(UpgraderError):
    """The version policy refused the upgrade. Nothing was changed."""

    exit_code = ExitCode.POLICY_REFUSED


class ApprovalRefused(UpgraderError):
    """Approval missing, invalid, expired, replayed or for another plan. Nothing was changed."""

    exit_code = ExitCode.APPROVAL_REFUSED


class UpgradeFailed(UpgraderError):
    """An upgrade failed and was rolled back; the host runs the old version."""

    exit_code = ExitCode.ROLLED_BACK


class NeedsPerson(UpgraderError):
    """A host's state needs a person: rollback failed or the host was lost mid-run."""

    exit_code = ExitCode.NEEDS_PERSON


class AuditAltered(UpgraderError):
    """The audit log was altered."""

    exit_code = ExitCode.AUDIT_ALTERED


class TransportError(UpgraderError):
    """A host could not be reached or a command could not be run on it."""

    exit_code = ExitCode.NEEDS_PERSON

    def __init__(self, message: str, *, host: str | None = None, hint: str | None = None) -> None:
        super().__init__(f"{host}: {message}" if host else message, hint=hint)
        self.host = host
