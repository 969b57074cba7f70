"""version_policy: vendor version grammar, ordering, and the free-upgrade policy.

A pure package: it parses and orders versions (``versions``), reads version ranges
(``ranges``), loads the YAML policy (``policy``) and decides whether an upgrade is a free
maintenance upgrade (``rules``). It reads no clock (``today`` is passed in), touches no host,
and does no I/O beyond reading a policy file. Its only exceptions are ``VersionError`` and
``PolicyError``, both ``VersionPolicyError``\\s and ``ValueError``\\s.
"""

from .errors import PolicyError, VersionError, VersionPolicyError
from .policy import Policy, default_policy_path, load_policy
from .ranges import VersionRange, parse_range, parse_range_list
from .rules import Decision, RuleResult, UpgradeRequest, decide
from .versions import Comparison, Tag, Version, compare, parse_version

__all__ = [
    "Version",
    "Tag",
    "Comparison",
    "parse_version",
    "compare",
    "VersionRange",
    "parse_range",
    "parse_range_list",
    "Policy",
    "load_policy",
    "default_policy_path",
    "UpgradeRequest",
    "RuleResult",
    "Decision",
    "decide",
    "VersionError",
    "PolicyError",
    "VersionPolicyError",
]
