"""Secrets out of text that leaves the process: the one set of secret patterns, used by the
diagnostics bundle (mask ``***``) and by the audit log (``audit.redact``, mask ``[REDACTED]``).
Pure: text in, text out.

What is hidden:

- settings whose name is a secret name (``is_secret_name``), written ``name=value``,
  ``name: value``, ``"name": "value"`` or as an XML attribute ``name="value"``;
- command-line flags with a secret name: ``--password S3cret``, ``--db-token=x``; and the
  MySQL client's glued ``-pS3cret`` (only after ``mysql``, ``mysqldump``, ``mariadb``…: ``-p``
  means other things to other commands, and ``-p S3cret`` with a space is the database name);
  ``-p=x`` and ``-P=x`` after any command (a port hidden this way is the price of never
  showing a password);
- XML: ``<password>x</password>`` (a tag with a secret name), ``<property name="jdbc.password"
  value="x"/>`` (either attribute order), ``<entry key="password">x</entry>`` and
  ``<param-name>password</param-name><param-value>x</param-value>``;
- HTTP headers ``Authorization:``, ``Proxy-Authorization:``, ``Cookie:`` and ``Set-Cookie:``
  (the whole value, to the end of the line or quote); session ids such as ``;jsessionid=…``;
- the password of URLs with credentials (``jdbc:mysql://user:pw@db``, ``https://u:p@h``,
  ``jdbc:oracle:thin:user/pw@db``): the user info runs to the last ``@`` before the host, so a
  password holding ``@`` is hidden whole;
- PEM private key blocks, and the tail of one whose BEGIN line was cut off (a log tail, the last
  characters of a command's output).

A secret name contains ``password``, ``passwd``, ``passphrase``, ``pwd``, ``secret``, ``token``,
``credential``, ``authorization`` or a session id, ends in ``pass`` as a word (``DB_PASS``,
``keystorePass``; not ``bypass`` or ``passed``), or ends in a known kind of key (``api_key``,
``accessKey``, ``private.key``, ``secret_key``, ``signing-key``, ``encryption_key``…; not
``ssh_key`` or ``host_key``, which name fingerprints and files). A name that ends in ``file``,
``path``, ``url``, ``uri``, ``dir`` or ``type`` names where a secret is, not the secret, and is
kept. The rules err on the side of hiding too much: a token's timeout is hidden too.

The structure of each format comes first, line patterns after it; nothing needs the whole file to
parse (a bundle must be written from a damaged file too):

- JSON (the whole text, or a line of JSON Lines, that parses): every value under a secret name is
  replaced whatever its type (``"db_password": 123456``, a nested object), other strings are
  redacted as text; the JSON is written back;
- YAML: a secret key's whole value, including block scalars (``password: |`` and ``>-``) and
  every more-indented line below it; flow maps (``{user: a, password: b;c}``) to the next ``,``
  or ``}``; and a line ``key: value`` or ``key=value`` (YAML, ``.properties``, shell, INI) to its
  end, with ``.properties`` continuation lines (a trailing backslash) and the ``.properties`` form
  ``key value`` (so a line that starts with a secret name and a space hides the rest: ``token
  expired`` becomes ``token ***``; but a check's verdict ``pass same_product: …`` is kept);
- XML: elements (``CDATA`` sections too), attributes (also split over lines, and a value ending in a
  backslash, which escapes nothing in XML), ``<property name=... value=...>``, and the
  literal value of every DTD ``<!ENTITY name "value">`` (an entity can carry a password into an
  element: ``<password>&pw;</password>``);
- YAML explicit keys: ``? password`` then ``: value`` hides the value and the lines indented below it.

``MAYBE_SECRET`` finds a word every rule needs: text it does not match holds no secret these
rules would hide, so callers on a hot path skip the rules for it (``redact`` does too).
"""

from __future__ import annotations

import functools
import json
import re
import threading
from typing import cast

from .obfuscation import Obfuscator

__all__ = ["redact", "redact_value", "is_secret_name", "MAYBE_SECRET", "Obfuscator", "MASK", "shorten", "tail"]

MASK = "***"


class _Later:
    """A rule's pattern, compiled on its first use (about 40 patterns: compiling them all costs a process that never
    meets a text with a trigger word, ``MAYBE_SECRET``, some 10-15 ms of CPU at start-up). On first use the compiled
    pattern takes this object's place in the module, so later uses cost nothing more; host threads that meet it at
    once compile it once (a lock)."""

    __slots__ = ("pattern", "flags", "compiled")

    def __init__(self, pattern: str, flags: int) -> None:
        self.pattern = pattern
        self.flags = flags
        self.compiled: re.Pattern[str] | None = None

    def __getattr__(self, attr: str) -> object:  # only for what the slots do not hold: the pattern's methods
        with _COMPILING:
            if self.compiled is None:
                self.compiled = re.compile(self.pattern, self.flags)
                module = globals()
                for name, value in list(module.items()):
                    if value is self:
                        module[name] = self.compiled
        return getattr(self.compiled, attr)


_COMPILING = threading.Lock()


def _later(pattern: str, flags: int = 0) -> "re.Pattern[str]":
    return cast("re.Pattern[str]", _Later(pattern, flags))

#: a word that every rule below needs; text without one is returned as it is
MAYBE_SECRET = re.compile(r"(?i)pass|pwd|pw\b|_pw|secret|token|credential|key|auth|cookie|sess|://|jdbc:|mysql|mariadb"
                          r"|密码|口令|密钥|秘钥|私钥|令牌|--user|-u\s|sig=|\\u00|(?<![\w-])-p=|<!entity"
                          r"|(?m:^[^:\s]+:(?:\d+|\*):[^:\s]+:[^:\s]+:\S)")

_SECRET_WORD = re.compile(
    r"(?i)passw(?:or)?d|passphrase|passcode|pwd|(?:^|[_.-])pw$|密码|口令|密钥|秘钥|私钥|令牌"
    r"|secret|token|credential|authorization|j?session[_.-]?id|phpsessid"
    r"|(?:api|access|private|secret|signing|encryption|master|client|auth|app|license|hmac|session|aes)[_.-]?key(?:s)?$")
# storepass, keypass, DBPASS, db_pass, keystorePass: a name ending in "pass" (not bypass, compass, surpass)
_PASS_SUFFIX = re.compile(r"(?i)(?<!by)(?<!com)(?<!sur)(?<!tres)pass$")
_NOT_THE_SECRET = re.compile(r"(?i)(?:file|path|url|uri|dir|type)$")


@functools.lru_cache(maxsize=4096)  # pure; the same keys come back for every host, event and journal record
def is_secret_name(name: str) -> bool:
    """Does a setting, flag, tag or dict key of this name hold a secret? (See the module docstring.)"""
    name = name.strip("-\"' ")
    if "\\u" in name:  # .properties and JSON spell any character as \\uXXXX: db.pass\\u0077ord is db.password
        name = re.sub(r"\\u([0-9a-fA-F]{4})", lambda m: chr(int(m.group(1), 16)), name)
    if not name or _NOT_THE_SECRET.search(name):
        return False
    return bool(_SECRET_WORD.search(name) or _PASS_SUFFIX.search(name))


# candidates: names with a trigger word; ``is_secret_name`` decides
_CANDIDATE = (r"(?:[\w.-]|\\u[0-9a-fA-F]{4})*(?:pass|pwd|pw|secret|token|credential|authorization|sess|key|密码|口令|密钥"
              r"|秘钥|私钥|令牌|\\u00[0-9a-fA-F]{2})(?:[\w.-]|\\u[0-9a-fA-F]{4})*")
# a value: quoted, or a word; more words on the same line belong to it unless one is the next name=
# (a double-quoted value whose backslash escapes nothing, as in XML: ``password="x\"/>``, is the second form)
_VALUE = (r"\"(?:[^\"\\\n]|\\.)*\"|\"[^\"\n]*\"|'(?:[^'\n]|'')*'"
          r"|[^\s,;&<>\"']+(?:[ \t]+[^\s,;&<>\"'=:]+(?=[\s,;&<>\"']|$))*")
_SETTING = _later(r"(?i)(?P<key>(?<![\w\\])" + _CANDIDATE + r")(?P<sep>[\"']?[ \t]*[=:：][ \t]*)(?P<value>" + _VALUE
                      + ")")
_FLAG = _later(r"(?i)(?<![\w-])(?P<key>--?" + _CANDIDATE + r")(?P<sep>[ \t]+)"
                   r"(?P<value>\"(?:[^\"\\\n]|\\.)*\"|'[^'\n]*'|(?!-)[^\s;&|]+)")
# ``-p=x`` / ``-P=x`` (a password flag to many tools; a glued ``-px`` only after the MySQL clients, below)
_P_EQUALS = _later(r"(?P<head>(?<![\w-])-[pP]=)(?P<value>\"(?:[^\"\\\n]|\\.)*\"|'[^'\n]*'|[^\s;&|]+)")
_MYSQL_P = _later(r"(?P<head>(?<![\w-])(?i:mysql\w*|mariadb\w*)\b[^\n;&|]*?[ \t]-p)(?P<value>[^\s;&|'\"]+)")
_TEXT = r"(?:[^<]|<!\[CDATA\[.*?\]\]>)*"  # an element's text: characters and CDATA sections
_ELEMENT = _later(r"(?is)<(?P<tag>" + _CANDIDATE.replace(r"[\w.-]", r"[\w:.-]") + r")(?P<attrs>[^>]*)>"
                      r"(?P<value>" + _TEXT + r")</(?P=tag)>")
_ATTR_NAME = r"\b(?:name|key|id)[ \t]*=[ \t]*(?P<q1>[\"'])(?P<name>[^\"'<>]*)(?P=q1)"
_ATTR_VALUE = r"\bvalue[ \t]*=[ \t]*(?P<q>[\"'])(?P<value>(?:(?!(?P=q))[^<>])*)(?P=q)"
_PROPERTY = _later(r"(?is)(?P<head><[\w:.-]+[^>]*?" + _ATTR_NAME + r"[^>]*?)" + _ATTR_VALUE)
_PROPERTY_VALUE_FIRST = _later(r"(?is)(?P<head><[\w:.-]+[^>]*?)" + _ATTR_VALUE + r"(?P<tail>[^>]*?" + _ATTR_NAME
                                   + ")")
_KEYED_ELEMENT = _later(r"(?is)(?P<head><(?P<tag>[\w:.-]+)[^>]*?" + _ATTR_NAME + r"[^>]*>)(?P<value>"
                            + _TEXT + r")(?=</(?P=tag)>)")
_NAME_VALUE_ELEMENTS = _later(r"(?is)(?P<head><(?P<nt>[\w:.-]*name)>\s*(?P<name>[^<]*?)\s*</(?P=nt)>\s*"
                                  r"<(?P<vt>[\w:.-]*value)>)(?P<value>" + _TEXT + r")(?=</(?P=vt)>)")
# an XML start tag (its attributes may be split over lines; a quoted value holds no '<'), and one attribute in it
_TAG = _later(r"<[\w:.-]+(?:[^<>\"']|\"[^\"<]*\"|'[^'<]*')*>")
_TAG_ATTR = _later(r"(?<![\w:.-])(?P<key>[\w:.-]+)(?P<sep>\s*=\s*)(?P<value>\"[^\"]*\"|'[^']*')")
# a DTD entity's literal value: <!ENTITY pw "x"> and <!ENTITY % pw 'x'> (not an external entity's SYSTEM "uri")
_ENTITY = _later(r"(?i)(?P<head><!ENTITY\s+(?:%\s+)?[\w:.-]+\s+)(?P<value>\"[^\"]*\"|'[^']*')")
_HEADER = _later(r"(?im)(?P<head>(?<![\w-])(?:proxy-)?(?:authorization|set-cookie2?|cookie2?)[ \t]*:[ \t]*)"
                     r"(?P<value>[^\r\n'\"]*[^\s'\"])")
# the authority: up to the first / ? # (a password holds those only percent-encoded), or the end of the URL
_URL_AUTHORITY = _later(r"(?i)(?P<scheme>\b[a-z][a-z0-9+.:-]*://)(?P<authority>[^\s/?#\"<>]*@[^\s/?#\"<>]*)")
_ORACLE_QUOTED = _later(r"(?i)(?P<prefix>\bjdbc:oracle:[a-z]+:[^\s/:@\"]+/)\"[^\"\n]*\"(?=@)")
_ORACLE = _later(r"(?i)(?P<prefix>\bjdbc:oracle:[a-z]+:)(?P<user>[^\s/:@]+)/(?P<pw>\S+)@(?=[^\s@]*(?:\s|$))")
# a whole line that sets one thing: ``key: value`` (YAML), ``key=value`` (.properties, shell, INI)
_LINE_SETTING = _later(r"(?m)^(?P<head>(?P<indent>[ \t]*)(?P<dash>-[ \t]+)?[\"']?(?P<key>(?:[\w.$-]|\\u[0-9a-fA-F]{4})+)"
                           r"[\"']?[ \t]*(?:[=:：](?:[ \t]+|(?=\S))|：))(?P<value>[^\n]*?)(?P<tail>[ \t\r]*)$")
_SPACE_SETTING = _later(r"(?m)^(?P<head>[ \t]*(?P<key>[\w.$-]+)[ \t]+)(?P<value>[^\s=:][^\n]*?)(?P<tail>[ \t\r]*)$")
# ``pass same_product: the package is for …``: a check's verdict (``pass <check>: <reason>``), not ``pass <password>``
_CHECK_VERDICT = _later(r"(?i)[ \t]*pass[ \t]+[\w.-]+:(?:[ \t]|$)")
_BLOCK_INDICATOR = _later(r"[|>][+-]?[1-9]?[+-]?(?:[ \t]+#.*)?")
_FLOW_MAP = _later(r"\{(?:\"(?:[^\"\\\n]|\\.)*\"|'(?:[^'\n]|'')*'|[^{}\"'\n])*\}")
_FLOW_SETTING = _later(r"(?P<key>[\w.$-]+)(?P<sep>[\"']?[ \t]*:[ \t]*)(?P<value>\"(?:[^\"\\]|\\.)*\"|'(?:[^']|'')*'"
                           r"|[^,}\n]*[^,}\s])")
_PEM = _later(r"-----BEGIN ([A-Z ]*PRIVATE KEY)-----.*?(-----END \1-----|\Z)", re.S)
# k8s / compose env lists: ``- name: DB_PASSWORD`` then ``value: x`` (either order, same item)
_NAME_VALUE_ITEM = _later(r"(?m)^(?P<head>[ \t]*-[ \t]+name:[ \t]*[\"']?(?P<name>[^\s\"']+)[\"']?[ \t]*\r?\n"
                              r"[ \t]+value:[ \t]*)(?P<value>[^\n]*?)(?=[ \t\r]*$)")
_VALUE_NAME_ITEM = _later(r"(?m)^(?P<head>[ \t]*-[ \t]+value:[ \t]*)(?P<value>[^\n]*?)(?P<tail>[ \t\r]*\n[ \t]+name:"
                              r"[ \t]*[\"']?(?P<name>[^\s\"']+)[\"']?[ \t]*)$")
# Spring: <property name="password"><value>x</value></property> (on one line or several)
_PROPERTY_ELEMENT = _later(r"(?is)(?P<head><[\w:.-]*property\b[^>]*?" + r"\bname[ \t]*=[ \t]*(?P<q1>[\"'])(?P<name>"
                               r"[^\"'<>]*)(?P=q1)[^>]*>\s*<(?P<vt>[\w:.-]*value)\b[^>]*>)(?P<value>[^<]*)(?=</(?P=vt)>)")
# HTML: <input type="password" ... value="x">
_PASSWORD_INPUT = _later(r"(?is)(?P<head><input\b(?=[^>]*\btype[ \t]*=[ \t]*[\"']?password)[^>]*?\bvalue[ \t]*=[ \t]*"
                             r"(?P<q>[\"']?))(?P<value>[^\"'\s>]*)")
# a URL password holding '/' or '#' (not percent-encoded, as people write them): up to the last '@' of the word
_URL_ODD_PASSWORD = _later(r"(?i)(?P<head>\b[a-z][a-z0-9+.:-]*://[^\s/?#\"<>@:]*:)(?P<pw>[^\s\"<>]*[/#][^\s\"<>]*)"
                               r"(?=@[^\s@/?#\"<>]+)")
# curl -u user:password, --user user:password (also --user=...)
_USER_FLAG = _later(r"(?P<head>(?<![\w-])(?:-u|--user|--proxy-user)(?:[ \t]+|=)[^\s:'\"]*:)(?P<value>[^\s'\"]+)")
# .pgpass: host:port:database:user:password
_PGPASS = _later(r"(?m)^(?P<head>[^:\s#]+:(?:\d+|\*):[^:\s]+:[^:\s]+:)(?P<value>\S[^\n]*?)(?=[ \t\r]*$)")
# Azure SAS and other signed URLs: sig=...
_SIG = _later(r"(?i)(?P<head>[?&;]sig=)(?P<value>[^&\s\"'#<>]+)")
_KEY_END = _later(r"-----END [A-Z ]*PRIVATE KEY-----")
_BASE64_LINE = _later(r"[A-Za-z0-9+/=]+\r?")
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


#: texts up to this length are remembered (``_redact_remembered``): a run redacts the same plan strings, paths and
#: event details for every host, event, journal record and output (a plan of 50 hosts holds some 4,000 strings)
_REMEMBERED_TEXT = 1024


# an SSH signature (``ssh-keygen -Y sign``, the run journal's seal, approvals, checkpoints) is public by construction:
# kept byte for byte, only base64 lines between its armor lines. Redacting inside it (its base64 may well spell
# ``pwd=``) would break the signature it is kept to prove.
_SSH_SIGNATURE = re.compile(r"-----BEGIN SSH SIGNATURE-----\r?\n(?:[A-Za-z0-9+/]+={0,2}\r?\n)+"
                            r"-----END SSH SIGNATURE-----")


def redact(text: str, mask: str = MASK, pem_mask: str | None = None) -> str:
    """``text`` with every secret it recognises replaced by ``mask``; a private key block becomes
    ``pem_mask`` (default: its BEGIN and END lines around ``mask``). SSH signature blocks are kept as they are."""
    if "-----BEGIN SSH SIGNATURE-----" in text:
        kept: list[str] = []
        at = 0
        for m in _SSH_SIGNATURE.finditer(text):
            kept += [_redact_part(text[at:m.start()], mask, pem_mask), m.group(0)]
            at = m.end()
        return "".join(kept) + _redact_part(text[at:], mask, pem_mask)
    return _redact_part(text, mask, pem_mask)


def _redact_part(text: str, mask: str, pem_mask: str | None) -> str:
    if len(text) <= _REMEMBERED_TEXT:
        return _redact_remembered(text, mask, pem_mask)
    return _redact(text, mask, pem_mask)


@functools.lru_cache(maxsize=8192)  # pure: text in, text out
def _redact_remembered(text: str, mask: str, pem_mask: str | None) -> str:
    return _redact(text, mask, pem_mask)


def _redact(text: str, mask: str, pem_mask: str | None) -> str:
    if not MAYBE_SECRET.search(text):
        return text

    def secret(name: str, value: str) -> bool:
        return (value.strip("\"' ").lower() not in _LITERALS and not _BLOCK_INDICATOR.fullmatch(value)
                and is_secret_name(name))

    def setting(m: re.Match[str]) -> str:
        if not secret(m.group("key"), m.group("value")):
            return m.group(0)
        return f"{m.group('key')}{m.group('sep')}{_masked(m.group('value'), mask)}"

    def line_setting(m: re.Match[str]) -> str:
        value = m.group("value")
        if not secret(m.group("key"), value):
            return m.group(0)
        return f"{m.group('head')}{_masked(value, mask)}{m.group('tail')}"

    def named(m: re.Match[str]) -> str:
        if not secret(m.group("name"), m.group("value")):
            return m.group(0)
        whole, at = m.group(0), m.start()
        return whole[:m.start("value") - at] + mask + whole[m.end("value") - at:]

    if "PRIVATE KEY-----" in text:
        text = _PEM.sub(lambda m: pem_mask if pem_mask is not None else
                        f"-----BEGIN {m.group(1)}-----\n{mask}\n-----END {m.group(1)}-----", text)
        text = _key_tails(text, pem_mask if pem_mask is not None else mask, mask)
    text = _json_documents(text, mask, pem_mask)
    text = _explicit_keys(text, mask)
    text = _indented_values(text, mask)
    text = _continued_lines(text, mask)
    text = _LINE_SETTING.sub(line_setting, text)
    text = _SPACE_SETTING.sub(lambda m: m.group(0) if _CHECK_VERDICT.match(m.group(0)) else line_setting(m), text)
    text = _FLOW_MAP.sub(lambda m: _FLOW_SETTING.sub(setting, m.group(0)), text)
    text = _URL_AUTHORITY.sub(lambda m: m.group("scheme") + _authority(m.group("authority"), mask), text)
    text = _ORACLE_QUOTED.sub(lambda m: f"{m.group('prefix')}{mask}", text)
    text = _ORACLE.sub(lambda m: f"{m.group('prefix')}{m.group('user')}/{mask}@", text)
    text = _HEADER.sub(lambda m: f"{m.group('head')}{mask}", text)
    text = _MYSQL_P.sub(lambda m: f"{m.group('head')}{mask}", text)
    text = _P_EQUALS.sub(lambda m: m.group("head") + _masked(m.group("value"), mask), text)
    if "<" in text:
        text = _TAG.sub(lambda m: _TAG_ATTR.sub(setting, m.group(0)) if MAYBE_SECRET.search(m.group(0))
                        else m.group(0), text)
        text = _ENTITY.sub(lambda m: m.group("head") + _masked(m.group("value"), mask), text)
    text = _PROPERTY.sub(named, text)
    text = _PROPERTY_VALUE_FIRST.sub(named, text)
    text = _KEYED_ELEMENT.sub(named, text)
    text = _NAME_VALUE_ELEMENTS.sub(named, text)
    text = _ELEMENT.sub(lambda m: f"<{m.group('tag')}{m.group('attrs')}>{mask}</{m.group('tag')}>"
                        if secret(m.group("tag"), m.group("value")) else m.group(0), text)
    text = _PROPERTY_ELEMENT.sub(named, text)
    text = _NAME_VALUE_ITEM.sub(named, text)
    text = _VALUE_NAME_ITEM.sub(lambda m: m.group("head") + _masked(m.group("value"), mask) + m.group("tail")
                                if secret(m.group("name"), m.group("value")) else m.group(0), text)
    text = _PASSWORD_INPUT.sub(lambda m: m.group("head") + mask, text)
    text = _URL_ODD_PASSWORD.sub(lambda m: m.group("head") + mask, text)
    text = _USER_FLAG.sub(lambda m: m.group("head") + mask, text)
    text = _PGPASS.sub(lambda m: m.group("head") + mask, text)
    text = _SIG.sub(lambda m: m.group("head") + mask, text)
    text = _FLAG.sub(setting, text)
    return _SETTING.sub(setting, text)


def redact_value(value: object, key: str = "", mask: str = MASK, pem_mask: str | None = None) -> object:
    """A copy of a parsed value (JSON, YAML) with secrets replaced: everything under a secret name, whatever its
    type (``"db_password": 123456``, a nested object), and secret-looking text in other strings."""
    if key and is_secret_name(key) and not _empty(value):  # both pure: the remembered name first
        return mask
    if type(value) is str:  # the most common node first (a subclass of str takes the isinstance path below)
        return redact(value, mask, pem_mask)
    if isinstance(value, dict):
        return {k: redact_value(v, str(k), mask, pem_mask) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_value(v, key, mask, pem_mask) for v in value]
    if isinstance(value, str):
        return redact(value, mask, pem_mask)
    return value


def _empty(value: object) -> bool:
    """null, true, false and "" say nothing secret (``"password": null``); 0 and 1 may be a PIN."""
    return value is None or value is True or value is False or value == ""


def _json_documents(text: str, mask: str, pem_mask: str | None) -> str:
    """The whole text, or each line, that is a JSON object or array, redacted by its structure."""
    stripped = text.strip()
    if stripped[:1] in ("{", "["):
        try:
            doc = json.loads(stripped)
        except ValueError:
            pass
        else:
            indent = 2 if "\n" in stripped else None
            return json.dumps(redact_value(doc, "", mask, pem_mask), indent=indent, ensure_ascii=False) \
                + ("\n" if text.endswith("\n") else "")
    if "\n" not in stripped:
        return text
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if line.lstrip()[:1] in ("{", "[") and MAYBE_SECRET.search(line):
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            lines[i] = json.dumps(redact_value(doc, "", mask, pem_mask), ensure_ascii=False)
    return "\n".join(lines)


_KEY_LINE = _later(r"(?P<indent>[ \t]*)(?P<dash>-[ \t]+)?[\"']?(?P<key>[\w.$-]+)[\"']?[ \t]*:(?:[ \t].*)?")


def _indented_values(text: str, mask: str) -> str:
    """YAML: the lines below a secret key that are indented deeper than the key (a block scalar ``|`` or ``>-``,
    a continued plain or quoted scalar, a nested map) become one line holding ``mask``."""
    if "\n" not in text:
        return text
    lines = text.split("\n")
    i = 0
    while i < len(lines) - 1:
        m = _KEY_LINE.fullmatch(lines[i].rstrip("\r"))
        if m is None or not is_secret_name(m.group("key")):
            i += 1
            continue
        column = len(m.group("indent")) + len(m.group("dash") or "")
        empty = not lines[i].split(":", 1)[1].split("#", 1)[0].strip()
        end = i + 1
        # deeper lines, and a YAML compact sequence (``tokens:`` then ``- x`` at the key's own indent)
        while end < len(lines) and (not lines[end].strip() or _indent(lines[end]) > column
                                    or (empty and _indent(lines[end]) == column
                                        and lines[end].lstrip(" \t").startswith("- "))):
            end += 1
        while end > i + 1 and not lines[end - 1].strip():  # blank lines after the value are not part of it
            end -= 1
        if end > i + 1:
            lines[i + 1:end] = [" " * (column + 2) + mask]
        i += 1
    return "\n".join(lines)


_EXPLICIT_KEY = _later(r"(?P<indent>[ \t]*)\?[ \t]+[\"']?(?P<key>[^\"'#\s][^\"'#]*?)[\"']?[ \t]*(?:#.*)?")
_EXPLICIT_VALUE = _later(r"(?P<indent>[ \t]*):(?:[ \t]+(?P<value>.*?))?[ \t]*")


def _explicit_keys(text: str, mask: str) -> str:
    """YAML's explicit keys: ``? password`` and, on the next line at the same indent, ``: value``; the value and the
    lines indented deeper below it (a block scalar, a nested map) are hidden."""
    if "?" not in text or "\n" not in text:
        return text
    lines = text.split("\n")
    i = 0
    while i < len(lines) - 1:
        key = _EXPLICIT_KEY.fullmatch(lines[i].rstrip("\r"))
        value = _EXPLICIT_VALUE.fullmatch(lines[i + 1].rstrip("\r"))
        if key is None or value is None or value.group("indent") != key.group("indent") \
                or not is_secret_name(key.group("key")):
            i += 1
            continue
        column = len(key.group("indent"))
        shown = value.group("value") or ""
        if shown.strip("\"' ").lower() not in _LITERALS and not _BLOCK_INDICATOR.fullmatch(shown):
            lines[i + 1] = f"{value.group('indent')}: {mask}"
        end = i + 2
        while end < len(lines) and (not lines[end].strip() or _indent(lines[end]) > column):
            end += 1
        while end > i + 2 and not lines[end - 1].strip():
            end -= 1
        if end > i + 2:
            lines[i + 2:end] = [" " * (column + 2) + mask]
        i += 2
    return "\n".join(lines)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" \t"))


def _continued_lines(text: str, mask: str) -> str:
    """.properties: a secret setting whose line ends in an odd number of ``\\`` goes on over the next lines."""
    if "\\\n" not in text and "\\\r\n" not in text:
        return text
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        m = _LINE_SETTING.fullmatch(lines[i]) or _SPACE_SETTING.fullmatch(lines[i])
        if m is None or not is_secret_name(m.group("key")) or not _continues(lines[i]):
            i += 1
            continue
        end = i + 1
        while end < len(lines) and _continues(lines[end - 1]):
            end += 1
        lines[i] = f"{m.group('head')}{mask}"
        del lines[i + 1:end]
        i += 1
    return "\n".join(lines)


def _continues(line: str) -> bool:
    body = line.rstrip("\r")
    return (len(body) - len(body.rstrip("\\"))) % 2 == 1


def _authority(authority: str, mask: str) -> str:
    """``user:password@host``: the user info runs to the last ``@``; its password (after the first ``:``) is hidden."""
    at = authority.rfind("@")
    userinfo, host = authority[:at], authority[at:]
    user, colon, _password = userinfo.partition(":")
    return f"{user}:{mask}{host}" if colon else authority


# a URL that runs to the end of a text that was cut ("…"): its '@' may be cut off, so all after "scheme://user:" may
# be a password
_CUT_AUTHORITY = _later(r"(?i)(?P<head>\b[a-z][a-z0-9+.:-]*://[^\s/?#\"<>@:]*:)(?P<rest>\S*…)$")


def shorten(text: str, limit: int, mask: str = MASK) -> str:
    """The start of one line of text, at most ``limit`` characters and "…", redacted before it is cut (a cut can
    separate a password from what marks it); a URL that runs into the cut hides all after ``user:``. A text that
    ends in "…" was cut before (by the host agent)."""
    text = redact(text, mask)
    if len(text) > limit:
        text = text[:limit] + "…"
    if not text.endswith("…"):
        return text
    return _CUT_AUTHORITY.sub(lambda m: m.group("head") + mask + "…", text)


def tail(text: str, limit: int, mask: str = MASK) -> str:
    """The end of a command's output, at most ``limit`` characters, redacted before it is cut and starting at a
    line boundary (a line cut in half loses the name that marks its value as a secret); cut as the host agent cuts
    its own tail, with a first line that says how many bytes are left out (hostagent.processes.cut_tail)."""
    from ..hostagent.processes import cut_tail

    return str(cut_tail(redact(text, mask), limit))
