"""Read the holiday calendar a policy names, and build the policy's service window from it.

``load_holidays`` reads a holidays YAML file with the same guards as a policy file (at most
1 MiB, UTF-8, no anchors or aliases, no duplicate keys, ``yaml.safe_load`` only) and hands the
data to ``window.parse_holidays``; ``load_window`` resolves ``window.holidays`` against the
policy file (null: the calendar shipped in the package, ``holidays-cn.yaml``). This is the only
I/O of the service window; the decision itself is in ``window`` and reads no clock.
"""

from __future__ import annotations

import hashlib
import os
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import cast

from .errors import PolicyError
from .policy import MAX_POLICY_BYTES, Policy, _safe_yaml, read_small_text
from .window import HolidayCalendar, ServiceWindow, parse_holidays, service_window

__all__ = ["default_holidays_path", "load_holidays", "load_window"]


def default_holidays_path() -> Traversable:
    """The holiday calendar shipped inside the package (Chinese public holidays)."""
    return files("version_policy").joinpath("holidays-cn.yaml")


def load_holidays(path: str | os.PathLike[str] | None = None) -> HolidayCalendar:
    """Read and check a holidays file; None means the shipped ``holidays-cn.yaml``."""
    source, content, text = read_small_text(
        path, default_holidays_path(),
        unreadable="cannot read the holidays file ({}); check window.holidays in the policy",
        too_large="the holidays file is larger than 1 MiB; check that this is the right file")
    return parse_holidays(_safe_yaml(text, source), source, hashlib.sha256(content).hexdigest())


def load_window(policy: Policy) -> ServiceWindow:
    """The policy's service window, with the holiday calendar it names: the bytes read (and hashed into the
    policy's identity) when the policy was loaded, not the file read again."""
    named = cast(str | None, policy.value("window.holidays"))
    if not named:
        return service_window(policy, load_holidays(None))
    read = policy.trust_file("window.holidays")
    if read is None:  # a policy made without its trust files (a test's Policy): the file as it is now
        return service_window(policy, load_holidays(policy.resolve_path(named)))
    if read.content is None:
        raise PolicyError(f"cannot read the holidays file ({read.state}); check window.holidays in the policy",
                          path=read.source or str(named))
    source = read.source or str(named)
    if len(read.content) > MAX_POLICY_BYTES:
        raise PolicyError("the holidays file is larger than 1 MiB; check that this is the right file", path=source)
    try:
        text = read.content.decode("utf-8")
    except UnicodeDecodeError:
        raise PolicyError("the holidays file is not UTF-8 text; save it as UTF-8", path=source) from None
    digest = hashlib.sha256(read.content).hexdigest()
    return service_window(policy, parse_holidays(_safe_yaml(text, source), source, digest))
