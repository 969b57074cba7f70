"""Exit codes of every upgrader command, exactly as PRODUCT.md defines them."""

from enum import IntEnum

__all__ = ["ExitCode"]


class ExitCode(IntEnum):
    OK = 0
    ROLLED_BACK = 1
    BAD_INPUT = 2
    POLICY_REFUSED = 3
    APPROVAL_REFUSED = 4
    NEEDS_PERSON = 5
    AUDIT_ALTERED = 6
