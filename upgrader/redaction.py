"""Secrets out of text that leaves the site (the diagnostics bundle), and optional obfuscation of host
names and IP addresses. Pure: text in, text out.

``redact`` replaces with ``***`` the values of ``password=…``, ``passwd``, ``pwd``, ``secret``,
``token``, ``credential``, ``authorization`` and ``…key`` settings (``=`` or ``:``, quoted or
not, also as XML attributes), XML elements such as ``<password>x</password>``, the password of
URLs with credentials (``jdbc:mysql://user:pw@db``, ``https://u:p@h``,
``jdbc:oracle:thin:user/pw@db``) and PEM private key blocks.
It errs on the side of hiding too much: a value named like a key or a token is hidden even when
it was harmless.

``Obfuscator`` replaces the given host names with ``host1``, ``host2``… and every IPv4 address
with ``ip-1``, ``ip-2``… consistently across all the texts it sees; ``mapping`` is the key to
read the bundle back, and is kept out of the bundle. Dotted version numbers that look like an
address (``7.0.4.1``) are kept when listed in ``keep``.
"""

from __future__ import annotations

import re
from typing import Iterable

__all__ = ["redact", "Obfuscator", "MASK"]

MASK = "***"
_NAME = r"[\w.-]*(?:password|passwd|pwd|secret|token|credential|authorization|apikey|api_key|key)[\w.-]*"
_SETTING = re.compile(
    r"(?i)(?P<key>\b" + _NAME + r")(?P<sep>[\"']?\s*[=:]\s*)"
    r"(?P<value>\"(?:[^\"\\\n]|\\.)*\"|'[^'\n]*'|[^\s,;&<>\"']+(?:[ \t]+[^\s,;&<>\"'=:]+)*)")
_ELEMENT = re.compile(r"(?is)<(?P<tag>[\w:.-]*(?:password|passwd|secret|token|credential)[\w:.-]*)(?P<attrs>[^>]*)>"
                      r"(?P<value>[^<]*)</(?P=tag)>")
_URL_CREDENTIALS = re.compile(r"(?i)(?P<scheme>\b[a-z][a-z0-9+.:-]*://)(?P<user>[^\s:/@]+):(?P<pw>[^\s@/]+)@")
_ORACLE = re.compile(r"(?i)(?P<prefix>\bjdbc:oracle:[a-z]+:)(?P<user>[^\s/:@]+)/(?P<pw>[^\s@]+)@")
_PEM = re.compile(r"-----BEGIN ([A-Z ]*PRIVATE KEY)-----.*?(-----END \1-----|\Z)", re.S)
_LITERALS = {"null", "none", "true", "false", '""', "''"}


def _setting(m: re.Match[str]) -> str:
    value = m.group("value")
    if value.lower() in _LITERALS or re.fullmatch(r"-?\d+(\.\d+)?", value) and len(value) < 6:
        return m.group(0)  # null, booleans and small numbers (key sizes, ports) hide nothing
    quote = value[0] if value[:1] in ("'", '"') else ""
    return f"{m.group('key')}{m.group('sep')}{quote}{MASK}{quote}"


def redact(text: str) -> str:
    """``text`` with every secret it recognises replaced by ``***``."""
    text = _PEM.sub(lambda m: f"-----BEGIN {m.group(1)}-----\n{MASK}\n-----END {m.group(1)}-----", text)
    text = _URL_CREDENTIALS.sub(lambda m: f"{m.group('scheme')}{m.group('user')}:{MASK}@", text)
    text = _ORACLE.sub(lambda m: f"{m.group('prefix')}{m.group('user')}/{MASK}@", text)
    text = _ELEMENT.sub(lambda m: f"<{m.group('tag')}{m.group('attrs')}>{MASK}</{m.group('tag')}>", text)
    return _SETTING.sub(_setting, text)


_IPV4 = re.compile(r"(?<![\w.])((?:25[0-5]|2[0-4]\d|1?\d?\d)(?:\.(?:25[0-5]|2[0-4]\d|1?\d?\d)){3})(?![\w]|\.\d)")


class Obfuscator:
    """Consistent replacement of host names and IPv4 addresses over many texts."""

    def __init__(self, hostnames: Iterable[str], keep: Iterable[str] = ()) -> None:
        self.mapping: dict[str, str] = {}
        self.keep = {k for k in keep if k}
        names = sorted({n for n in hostnames if n and n not in ("local", "localhost")}, key=len, reverse=True)
        for i, name in enumerate(sorted(names), start=1):
            self.mapping[name] = f"host{i}"
        self._names = re.compile("|".join(rf"(?<![\w])(?<![\w]\.){re.escape(n)}(?![\w]|\.[A-Za-z_])" for n in names)) \
            if names else None
        self._ips = 0

    def _ip(self, m: re.Match[str]) -> str:
        ip = m.group(1)
        if ip in self.keep:
            return ip
        if ip not in self.mapping:
            self._ips += 1
            self.mapping[ip] = f"ip-{self._ips}"
        return self.mapping[ip]

    def __call__(self, text: str) -> str:
        if self._names is not None:
            text = self._names.sub(lambda m: self.mapping[m.group(0)], text)
        return _IPV4.sub(self._ip, text)
