"""Obfuscation of host names, domains and IP addresses in text that leaves the site (the diagnostics
bundle with ``--obfuscate``). Pure: names in, text in, text out.

``Obfuscator(names, keep=(), domains=())`` replaces, consistently across every text it sees:

- each host name, matched without regard to case, in its short form and as any fully qualified
  name: a name given as ``app1.corp.example.com`` is also found as ``app1``, and ``app1`` is also
  found as ``app1.corp.example.com``. Its stand-in is ``host1``, ``host2``… (numbered in the
  sorted order of the short names). A name followed by one more dotted word is a name only when
  that word is a known domain or a file extension (``app1.log``): ``vm.swappiness`` is a kernel
  parameter, not the host ``vm``; followed by two or more (``app1.dc1.example.com``) it is a name.
- the domains: the domain part of every fully qualified name given (``corp.example.com`` of
  ``app1.corp.example.com``; domains of one word, like ``local``, are not), and the ``domains``
  given, become ``domain1``, ``domain2``… wherever they appear (``ldap.corp.example.com`` becomes
  ``ldap.domain1``, ``ops@corp.example.com`` becomes ``ops@domain1``);
- IPv4 addresses become ``ip-1``, ``ip-2``…; dotted version numbers that look like an address
  (``7.0.4.1``) are kept when listed in ``keep``;
- IPv6 addresses (``2001:db8::5``, ``::1``, ``fe80::1%eth0``: the zone is kept, ``::ffff:10.0.0.1``,
  and the agent's ``ipv6:<32 hex digits>`` listen addresses from ``/proc/net/tcp6``, which get the
  same stand-in as the address written the usual way) become ``ip6-1``, ``ip6-2``…; the
  unspecified address ``::`` reveals nothing and is kept. A candidate is replaced only when
  ``ipaddress`` accepts it, so times (``10:30:00``), MAC addresses (``52:54:00:12:34:56``: six
  groups, not an address; kept) and ``Class::method`` are left alone.

``mapping`` (real -> stand-in) is the key to read the texts back; keep it out of what is sent.
Names that are IP addresses are left to the address rules; ``local`` and ``localhost`` are kept.
"""

from __future__ import annotations

import ipaddress
import re
from typing import Iterable

__all__ = ["Obfuscator"]

_IPV4 = re.compile(r"(?<![\w.])((?:25[0-5]|2[0-4]\d|1?\d?\d)(?:\.(?:25[0-5]|2[0-4]\d|1?\d?\d)){3})(?![\w]|\.\d)")
_IPV6 = re.compile(r"(?<![\w:.%])(?:(?i:ipv6:)(?P<proc>[0-9A-Fa-f]{32})(?![\w])"
                   r"|(?P<addr>(?:[0-9A-Fa-f]{0,4}:){2,7}(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]{1,4})?)"
                   r"(?P<zone>%[\w.-]+)?(?![\w:]|\.\d))")
_EXTENSIONS = {"log", "out", "err", "pid", "txt", "conf", "cfg", "ini", "xml", "json", "yaml", "yml", "properties",
               "tar", "gz", "tgz", "zip", "pem", "crt", "key", "jks", "p12", "lock", "bak", "tmp", "sh", "html",
               "csv", "gc", "hprof", "dump"}
_KEPT_NAMES = {"", "local", "localhost", "localhost.localdomain", "localdomain", "localhost6"}
_LABEL = re.compile(r"[A-Za-z0-9-]+")


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name.split("%")[0])
        return True
    except ValueError:
        return False


def _proc_ipv6(hexa: str) -> ipaddress.IPv6Address:
    """/proc/net/tcp6 writes an address as four 32-bit words in host (little-endian) byte order."""
    raw = bytes.fromhex(hexa)
    return ipaddress.IPv6Address(b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4)))


class Obfuscator:
    """Consistent replacement of host names, domains, IPv4 and IPv6 addresses over many texts."""

    def __init__(self, hostnames: Iterable[str], keep: Iterable[str] = (), domains: Iterable[str] = ()) -> None:
        self.mapping: dict[str, str] = {}
        self.keep = {k for k in keep if k}
        shorts: set[str] = set()
        suffixes: set[str] = set()  # every domain part given, one word too: app1.local is a name
        found_domains = {d.strip(".").lower() for d in domains if d and d.strip(".")}
        for name in hostnames:
            name = (name or "").strip().strip(".").lower()
            if name in _KEPT_NAMES or _is_ip(name):
                continue
            short, _, domain = name.partition(".")
            if short not in _KEPT_NAMES:
                shorts.add(short)
            if domain:
                suffixes.add(domain)
            if "." in domain:
                found_domains.add(domain)
        for i, short in enumerate(sorted(shorts), start=1):
            self.mapping[short] = f"host{i}"
        self.domains = sorted(found_domains, key=len, reverse=True)
        self._suffixes = suffixes | found_domains
        for i, domain in enumerate(sorted(found_domains), start=1):
            self.mapping[domain] = f"domain{i}"
        alternation = "|".join(re.escape(n) for n in sorted(shorts, key=len, reverse=True))
        self._names = re.compile(rf"(?i)(?<![\w-])(?<![\w-]\.)(?P<name>{alternation})(?P<rest>(?:\.[\w-]+)*)"
                                 r"(?![\w-]|\.[\w-])") if shorts else None
        self._domains = re.compile("(?i)(?<![\\w-])(" + "|".join(re.escape(d) for d in self.domains)
                                   + r")(?![\w-]|\.[\w-])") if self.domains else None
        self._counts = {"ip": 0, "ip6": 0}

    def _stand_in(self, real: str, kind: str) -> str:
        if real not in self.mapping:
            self._counts[kind] += 1
            self.mapping[real] = f"{kind}-{self._counts[kind]}"
        return self.mapping[real]

    def _name(self, m: re.Match[str]) -> str:
        rest = m.group("rest")
        labels = rest.split(".")[1:]
        lowered = rest[1:].lower()
        known = any(lowered == d or lowered.endswith("." + d) for d in self._suffixes)
        dns_like = len(labels) >= 2 and all(_LABEL.fullmatch(x) for x in labels) and labels[-1].isalpha()
        if rest and not (known or dns_like or (len(labels) == 1 and labels[0].lower() in _EXTENSIONS)):
            return m.group(0)  # vm.swappiness: a dotted word, not the host "vm"
        return self.mapping[m.group("name").lower()] + rest

    def _ipv4(self, m: re.Match[str]) -> str:
        ip = m.group(1)
        return ip if ip in self.keep else self._stand_in(ip, "ip")

    def _ipv6(self, m: re.Match[str]) -> str:
        if m.group("proc"):
            return "ipv6:" + self._stand_in(str(_proc_ipv6(m.group("proc"))), "ip6")
        try:
            address = ipaddress.IPv6Address(m.group("addr"))
        except ValueError:
            return m.group(0)  # a time, a MAC address, Class::method
        if address.is_unspecified:
            return m.group(0)
        return self._stand_in(str(address), "ip6") + (m.group("zone") or "")

    def __call__(self, text: str) -> str:
        if self._names is not None:
            text = self._names.sub(self._name, text)
        if self._domains is not None:
            text = self._domains.sub(lambda m: self.mapping[m.group(1).lower()], text)
        if ":" in text:
            text = _IPV6.sub(self._ipv6, text)
        return _IPV4.sub(self._ipv4, text)
