"""Secrets out of text that leaves the process: the one set of secret patterns, used by the
diagnostics bundle (mask ``***``) and by the audit log (``audit.redact``, mask ``[REDACTED]``).
Pure: text in, text out.

What is hidden:

- settings whose name is a secret name (``is_secret_name``), written ``name=value``,
  ``name: value``, ``"name": "value"`` or as an XML attribute ``name="value"``;
- command-line flags with a secret name: ``--password S3cret``, ``--db-token=x``; and the
  MySQL client's glued ``-pS3cret`` (only after ``mysql``, ``mysqldump``, ``mariadb``…: ``-p``
  means other things to other commands, and ``-p S3cret`` with a space is the database name);
- XML: ``<password>x</password>`` (a tag with a secret name), ``<property name="jdbc.password"
  value="x"/>`` (either attribute order), ``<entry key="password">x</entry>`` and
  ``<param-name>password</param-name><param-value>x</param-value>``;
- HTTP headers ``Authorization:``, ``Proxy-Authorization:``, ``Cookie:`` and ``Set-Cookie:``
  (the whole value, to the end of the line or quote); session ids such as ``;jsessionid=…``;
- the password of URLs with credentials (``jdbc:mysql://user:pw@db``, ``https://u:p@h``,
  ``jdbc:oracle:thin:user/pw@db``);
- PEM private key blocks, and the tail of one whose BEGIN line was cut off (a log tail, the last
  characters of a command's output).

A secret name contains ``password``, ``passwd``, ``passphrase``, ``pwd``, ``secret``, ``token``,
``credential``, ``authorization`` or a session id, ends in ``pass`` as a word (``DB_PASS``,
``keystorePass``; not ``bypass`` or ``passed``), or ends in a known kind of key (``api_key``,
``accessKey``, ``private.key``, ``secret_key``, ``signing-key``, ``encryption_key``…; not
``ssh_key`` or ``host_key``, which name fingerprints and files). A name that ends in ``file``,
``path``, ``url``, ``uri``, ``dir`` or ``type`` names where a secret is, not the secret, and is
kept. The rules err on the side of hiding too much: a token's timeout is hidden too.

``MAYBE_SECRET`` finds a word every rule needs: text it does not match holds no secret these
rules would hide, so callers on a hot path skip the rules for it (``redact`` does too).
"""

from __future__ import annotations

import re

from .obfuscation import Obfuscator

__all__ = ["redact", "is_secret_name", "MAYBE_SECRET", "Obfuscator", "MASK"]

MASK = "***"

#: a word that every rule below needs; text without one is returned as it is
MAYBE_SECRET = re.compile(r"(?i)pass|pwd|secret|token|credential|key|auth|cookie|sess|://|jdbc:|mysql|mariadb")

_SECRET_WORD = re.compile(
    r"(?i)passw(?:or)?d|passphrase|pwd|secret|token|credential|authorization|j?session[_.-]?id|phpsessid"
    r"|(?:api|access|private|secret|signing|encryption|master|client|auth|app|license|hmac|session|aes)[_.-]?key(?:s)?$")
# storepass, keypass, DBPASS, db_pass, keystorePass: a name ending in "pass" (not bypass, compass, surpass)
_PASS_SUFFIX = re.compile(r"(?i)(?<!by)(?<!com)(?<!sur)(?<!tres)pass$")
_NOT_THE_SECRET = re.compile(r"(?i)(?:file|path|url|uri|dir|type)$")


def is_secret_name(name: str) -> bool:
    """Does a setting, flag, tag or dict key of this name hold a secret? (See the module docstring.)"""
    name = name.strip("-\"' ")
    if not name or _NOT_THE_SECRET.search(name):
        return False
    return bool(_SECRET_WORD.search(name) or _PASS_SUFFIX.search(name))


# candidates: names with a trigger word; ``is_secret_name`` decides
_CANDIDATE = r"[\w.-]*(?:pass|pwd|secret|token|credential|authorization|sess|key)[\w.-]*"
# a value: quoted, or a word; more words on the same line belong to it unless one is the next name=
_VALUE = (r"\"(?:[^\"\\\n]|\\.)*\"|'[^'\n]*'"
          r"|[^\s,;&<>\"']+(?:[ \t]+[^\s,;&<>\"'=:]+(?=[\s,;&<>\"']|$))*")
_SETTING = re.compile(r"(?i)(?P<key>\b" + _CANDIDATE + r")(?P<sep>[\"']?[ \t]*[=:][ \t]*)(?P<value>" + _VALUE + ")")
_FLAG = re.compile(r"(?i)(?<![\w-])(?P<key>--?" + _CANDIDATE + r")(?P<sep>[ \t]+)"
                   r"(?P<value>\"(?:[^\"\\\n]|\\.)*\"|'[^'\n]*'|(?!-)[^\s;&|]+)")
_MYSQL_P = re.compile(r"(?P<head>(?<![\w-])(?i:mysql\w*|mariadb\w*)\b[^\n;&|]*?[ \t]-p)(?P<value>[^\s;&|'\"]+)")
_ELEMENT = re.compile(r"(?is)<(?P<tag>" + _CANDIDATE.replace(r"[\w.-]", r"[\w:.-]") + r")(?P<attrs>[^>]*)>"
                      r"(?P<value>[^<]*)</(?P=tag)>")
_ATTR_NAME = r"\b(?:name|key|id)[ \t]*=[ \t]*(?P<q1>[\"'])(?P<name>[^\"'<>]*)(?P=q1)"
_ATTR_VALUE = r"\bvalue[ \t]*=[ \t]*(?P<q>[\"'])(?P<value>[^\"'<>]*)(?P=q)"
_PROPERTY = re.compile(r"(?is)(?P<head><[\w:.-]+[^>]*?" + _ATTR_NAME + r"[^>]*?)" + _ATTR_VALUE)
_PROPERTY_VALUE_FIRST = re.compile(r"(?is)(?P<head><[\w:.-]+[^>]*?)" + _ATTR_VALUE + r"(?P<tail>[^>]*?" + _ATTR_NAME
                                   + ")")
_KEYED_ELEMENT = re.compile(r"(?is)(?P<head><(?P<tag>[\w:.-]+)[^>]*?" + _ATTR_NAME + r"[^>]*>)(?P<value>[^<]*)"
                            r"(?=</(?P=tag)>)")
_NAME_VALUE_ELEMENTS = re.compile(r"(?is)(?P<head><(?P<nt>[\w:.-]*name)>\s*(?P<name>[^<]*?)\s*</(?P=nt)>\s*"
                                  r"<(?P<vt>[\w:.-]*value)>)(?P<value>[^<]*)(?=</(?P=vt)>)")
_HEADER = re.compile(r"(?im)(?P<head>(?<![\w-])(?:proxy-)?(?:authorization|set-cookie2?|cookie2?)[ \t]*:[ \t]*)"
                     r"(?P<value>[^\r\n'\"]*[^\s'\"])")
_URL_CREDENTIALS = re.compile(r"(?i)(?P<scheme>\b[a-z][a-z0-9+.:-]*://)(?P<user>[^\s:/@]+):(?P<pw>[^\s@/]+)@")
_ORACLE = re.compile(r"(?i)(?P<prefix>\bjdbc:oracle:[a-z]+:)(?P<user>[^\s/:@]+)/(?P<pw>[^\s@]+)@")
_PEM = re.compile(r"-----BEGIN ([A-Z ]*PRIVATE KEY)-----.*?(-----END \1-----|\Z)", re.S)
_KEY_END = re.compile(r"-----END [A-Z ]*PRIVATE KEY-----")
_BASE64_LINE = re.compile(r"[A-Za-z0-9+/=]+\r?")
_LITERALS = {"null", "none", "true", "false", '""', "''", ""}


def _masked(value: str, mask: str) -> str:
    quote = value[0] if value[:1] in ("'", '"') and len(value) > 1 else ""
    return f"{quote}{mask}{quote}"


def _key_tails(text: str, pem_mask: str, mask: str) -> str:
    """Replace the tail of a private key whose BEGIN line was cut off: the base64 lines right before an
    END line, and that line. Linear in the text (no regex backtracking)."""
    out: list[str] = []
    pos = 0
    for m in _KEY_END.finditer(text):
        lines = text[pos:m.start()].split("\n")
        if lines[-1] or (len(lines) > 1 and lines[-2] == mask):  # not a PEM block, or one already hidden
            continue
        keep = len(lines) - 1
        while keep > 0 and _BASE64_LINE.fullmatch(lines[keep - 1]):
            keep -= 1
        out.append("\n".join(lines[:keep]) + ("\n" if keep else "") + pem_mask)
        pos = m.end()
    return "".join(out) + text[pos:] if out else text


def redact(text: str, mask: str = MASK, pem_mask: str | None = None) -> str:
    """``text`` with every secret it recognises replaced by ``mask``; a private key block becomes
    ``pem_mask`` (default: its BEGIN and END lines around ``mask``)."""
    if not MAYBE_SECRET.search(text):
        return text

    def secret(name: str, value: str) -> bool:
        return value.strip("\"' ").lower() not in _LITERALS and is_secret_name(name)

    def setting(m: re.Match[str]) -> str:
        if not secret(m.group("key"), m.group("value")):
            return m.group(0)
        return f"{m.group('key')}{m.group('sep')}{_masked(m.group('value'), mask)}"

    def named(m: re.Match[str]) -> str:
        if not secret(m.group("name"), m.group("value")):
            return m.group(0)
        whole, at = m.group(0), m.start()
        return whole[:m.start("value") - at] + mask + whole[m.end("value") - at:]

    if "PRIVATE KEY-----" in text:
        text = _PEM.sub(lambda m: pem_mask if pem_mask is not None else
                        f"-----BEGIN {m.group(1)}-----\n{mask}\n-----END {m.group(1)}-----", text)
        text = _key_tails(text, pem_mask if pem_mask is not None else mask, mask)
    text = _URL_CREDENTIALS.sub(lambda m: f"{m.group('scheme')}{m.group('user')}:{mask}@", text)
    text = _ORACLE.sub(lambda m: f"{m.group('prefix')}{m.group('user')}/{mask}@", text)
    text = _HEADER.sub(lambda m: f"{m.group('head')}{mask}", text)
    text = _MYSQL_P.sub(lambda m: f"{m.group('head')}{mask}", text)
    text = _PROPERTY.sub(named, text)
    text = _PROPERTY_VALUE_FIRST.sub(named, text)
    text = _KEYED_ELEMENT.sub(named, text)
    text = _NAME_VALUE_ELEMENTS.sub(named, text)
    text = _ELEMENT.sub(lambda m: f"<{m.group('tag')}{m.group('attrs')}>{mask}</{m.group('tag')}>"
                        if secret(m.group("tag"), m.group("value")) else m.group(0), text)
    text = _FLAG.sub(setting, text)
    return _SETTING.sub(setting, text)
