"""version_policy: vendor version grammar, ordering, and the free-upgrade policy.

A pure package: it parses and orders versions (``versions``), reads version ranges
(``ranges``), loads the YAML policy (``policy``) and decides whether an upgrade is a free
maintenance upgrade (``rules``), and says whether a time is inside the service window
(``window``, with the holiday calendar ``holidays`` reads). It reads no clock (``today`` and
``now`` are passed in), touches no host, and does no I/O beyond reading a policy file and the
holiday calendar it names. Its only exceptions are ``VersionError`` and
``PolicyError``, both ``VersionPolicyError``\\s and ``ValueError``\\s.
"""

from .errors import PolicyError, VersionError, VersionPolicyError
from .holidays import default_holidays_path, load_holidays, load_window
from .policy import Policy, default_policy_path, load_policy
from .ranges import VersionRange, parse_range, parse_range_list
from .rules import Decision, RuleResult, UpgradeRequest, decide
from .versions import Comparison, Tag, Version, compare, parse_version
from .window import (HolidayCalendar, ServiceWindow, WindowStatus, parse_holidays, service_window,
                     window_status)

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
    "HolidayCalendar",
    "ServiceWindow",
    "WindowStatus",
    "parse_holidays",
    "service_window",
    "window_status",
    "load_holidays",
    "load_window",
    "default_holidays_path",
    "VersionError",
    "PolicyError",
    "VersionPolicyError",
]
