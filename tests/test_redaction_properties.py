"""Generated secrets inside each configuration format (YAML, XML, .properties, URLs, JSON) never survive
redaction: not whole, and not as any four characters of them, in what the diagnostics bundle writes
(``redaction.redact``) or in what the audit log stores (``audit.redact``).

Secrets always hold digits or one of ``QWXYZ`` and the documents around them hold neither, so any
fragment of a secret that carries one of those characters and is found in the output leaked from it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Callable
from xml.sax.saxutils import escape, quoteattr

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from upgrader.audit.log import redact as audit_redact
from upgrader.audit.redaction import redact

MARKERS = "0123456789QWXYZ"
FRAGMENT = 4


@dataclass(frozen=True)
class Doc:
    text: str          # the document as it is written on disk
    secret: "str | tuple[str, ...]"  # the secret as it appears in that text (escaped as the format escapes it)
    name: str = ""     # the file name the bundle would collect it under


def fragments(secret: str) -> set[str]:
    """Every run of FRAGMENT characters of the secret that holds a marker (or the whole secret, if shorter)."""
    if len(secret) <= FRAGMENT:
        return {secret}
    return {secret[i:i + FRAGMENT] for i in range(len(secret) - FRAGMENT + 1)
            if any(c in MARKERS for c in secret[i:i + FRAGMENT])}


def leaks(doc: Doc, out: str) -> list[str]:
    parts = doc.secret if isinstance(doc.secret, tuple) else (doc.secret,)
    return sorted(f for part in parts for f in fragments(part) if f in out)


def secrets(alphabet: str, min_size: int = 8) -> st.SearchStrategy[str]:
    """Secrets over ``alphabet`` (plus the markers) holding at least two markers."""
    chars = st.sampled_from(sorted(set(alphabet + MARKERS)))
    return st.tuples(st.text(chars, min_size=min_size, max_size=24), st.text(st.sampled_from(MARKERS), min_size=2,
                                                                              max_size=3)) \
        .map(lambda t: t[0][: len(t[0]) // 2] + t[1] + t[0][len(t[0]) // 2:])


LETTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPRSTUV"
PRINTABLE = LETTERS + " !\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"
SECRET_KEYS = st.sampled_from(["password", "db_password", "jdbc.password", "keystorePass", "client_secret",
                               "api_key", "auth_token", "passwd"])


# -- YAML ------------------------------------------------------------------------------------------------


@st.composite
def yaml_block_scalar(draw: st.DrawFn) -> Doc:
    """``password: |`` / ``>-`` / ``|+`` followed by indented lines holding the secret (any characters)."""
    indicator = draw(st.sampled_from(["|", ">-", "|+", ">", "|2"]))
    lines = draw(st.lists(secrets(PRINTABLE), min_size=1, max_size=3))
    key = draw(SECRET_KEYS)
    body = "".join(f"    {line}\n" for line in lines)
    text = f"datasource:\n  user: app\n  {key}: {indicator}\n{body}  pool: small\nlogging: info\n"
    return Doc(text, tuple(lines), "conf/app.yaml")


@st.composite
def yaml_scalar(draw: st.DrawFn) -> Doc:
    """``key: value`` with the value plain, double-quoted or single-quoted, in a block map or a list item."""
    style = draw(st.sampled_from(["plain", "double", "single"]))
    key = draw(SECRET_KEYS)
    if style == "plain":
        raw = draw(secrets(LETTERS + "!$%&()*+-./;<=>?@^_~"))
        value = raw
    elif style == "double":
        raw = draw(secrets(PRINTABLE))
        value = json.dumps(raw)
    else:
        raw = draw(secrets(PRINTABLE))
        value = "'" + raw.replace("'", "''") + "'"
    lead = draw(st.sampled_from(["  ", "  - "]))
    text = f"servers:\n{lead}name: app\n  {key}: {value}\n  port: web\n"
    return Doc(text, value.strip("\"'") if style != "plain" else raw, "conf/servers.yml")


@st.composite
def yaml_flow_map(draw: st.DrawFn) -> Doc:
    """``datasource: {user: app, password: ..., pool: small}`` with a plain or quoted value."""
    key = draw(SECRET_KEYS)
    if draw(st.booleans()):
        raw = draw(secrets(LETTERS + "!$%&()*+-./;<=>?@^_~"))
        value = raw
    else:
        raw = draw(secrets(PRINTABLE))
        value = json.dumps(raw)
    text = f"datasource: {{user: app, {key}: {value}, pool: small}}\n"
    return Doc(text, value.strip('"'), "conf/app.yaml")


@st.composite
def yaml_number(draw: st.DrawFn) -> Doc:
    number = draw(st.integers(min_value=100000, max_value=10 ** 12))
    return Doc(f"db:\n  {draw(SECRET_KEYS)}: {number}\n  user: app\n", str(number), "conf/db.yaml")


# -- XML -------------------------------------------------------------------------------------------------

XML_KEYS = st.sampled_from(["password", "keystorePass", "db.password", "clientSecret"])


@st.composite
def xml_document(draw: st.DrawFn) -> Doc:
    """The secret as an element's text (escaped, or CDATA), an attribute, a property's value or an entry."""
    raw = draw(secrets(PRINTABLE))
    key = draw(XML_KEYS)
    form = draw(st.sampled_from(["element", "cdata", "attribute", "property", "entry", "param"]))
    if form == "element":
        secret = escape(raw)
        inner = f"<{key}>{secret}</{key}>"
    elif form == "cdata":
        secret = raw.replace("]]>", "")
        inner = f"<{key}><![CDATA[{secret}]]></{key}>"
    elif form == "attribute":
        attr = quoteattr(raw)
        secret = attr[1:-1]
        inner = f'<datasource user="app" {key}={attr} pool="small"/>'
    elif form == "property":
        attr = quoteattr(raw)
        secret = attr[1:-1]
        inner = f'<property name="{key}" value={attr}/>'
    elif form == "entry":
        secret = escape(raw)
        inner = f'<entry key="{key}">{secret}</entry>'
    else:
        secret = escape(raw)
        inner = f"<context-param><param-name>{key}</param-name>\n  <param-value>{secret}</param-value></context-param>"
    return Doc(f'<server>\n  {inner}\n  <port>web</port>\n</server>\n', secret,
               "conf/server.xml")


# -- .properties -----------------------------------------------------------------------------------------


def properties_escape(raw: str) -> str:
    out = raw.replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=").replace("#", "\\#").replace("!", "\\!")
    return ("\\" + out) if out.startswith(" ") else out


@st.composite
def properties_file(draw: st.DrawFn) -> Doc:
    """``key=value``, ``key = value``, ``key:value``, a value continued over lines, or (by name) ``key value``."""
    raw = draw(secrets(PRINTABLE.replace("\\", "")))
    value = properties_escape(raw)
    key = draw(SECRET_KEYS)
    form = draw(st.sampled_from(["=", " = ", ":", "continued", "space"]))
    if form == "continued":
        half = len(value) // 2
        if value[half - 1:half] == "\\":
            half += 1
        line = f"{key}={value[:half]}\\\n    {value[half:]}"
        secret = (value[:half], value[half:])
    elif form == "space":
        line = f"{key} {value}"
        secret = value
    else:
        line = f"{key}{form}{value}"
        secret = value
    text = f"# datasource\ndb.user=app\n{line}\ndb.pool=small\n"
    return Doc(text, secret, "conf/jdbc.properties")


# -- URLs ------------------------------------------------------------------------------------------------

URL_SAFE = LETTERS + "!$&'()*+,;=-._~:@%"


@st.composite
def url_with_credentials(draw: st.DrawFn) -> Doc:
    """A JDBC or HTTP URL whose password holds ``@`` and ``:`` (user info runs to the last ``@``), in a config line,
    or Oracle's thin form ``user/password@host``."""
    form = draw(st.sampled_from(["mysql", "postgresql", "https", "oracle"]))
    raw = draw(secrets(URL_SAFE))
    if form == "oracle":
        raw = draw(secrets(LETTERS + "!$%&*+-._~@/:"))
        url = f"jdbc:oracle:thin:app/{raw}@db.internal:orcl"
    elif form == "https":
        url = f"https://deploy:{raw}@repo.example.com/releases/app.tar.gz"
    else:
        url = f"jdbc:{form}://app:{raw}@db.internal/orders?ssl=true"
    context = draw(st.sampled_from(["url={}\n", "datasource:\n  url: {}\n", "INFO connecting to {} now\n",
                                    '<resource url="{}"/>\n']))
    return Doc(context.format(url), raw, "logs/server.log")


# -- JSON ------------------------------------------------------------------------------------------------


@st.composite
def json_document(draw: st.DrawFn) -> Doc:
    """A secret key's value as a number, a string, or inside a nested object or list; pretty or on one line."""
    key = draw(SECRET_KEYS)
    form = draw(st.sampled_from(["number", "string", "nested", "list"]))
    if form == "number":
        value: object = draw(st.integers(min_value=100000, max_value=10 ** 12))
        secret = str(value)
    elif form == "string":
        value = draw(secrets(PRINTABLE))
        secret = json.dumps(value)[1:-1]
    elif form == "nested":
        inner = draw(secrets(PRINTABLE))
        value = {"value": inner, "kind": "plain"}
        secret = json.dumps(inner)[1:-1]
    else:
        inner = draw(secrets(PRINTABLE))
        value = ["first", inner]
        secret = json.dumps(inner)[1:-1]
    doc = {"datasource": {"user": "app", key: value, "pool": "small"}}
    text = json.dumps(doc, indent=draw(st.sampled_from([None, 2])))
    return Doc(text + "\n", secret, "conf/app.json")


# -- more shapes: names in Chinese and short forms, lists, Spring, HTML, command lines, .pgpass, signed URLs -------------


WORD = LETTERS + "-_."


@st.composite
def more_shapes(draw: st.DrawFn) -> Doc:
    """The shapes the second review found: each holds a secret over characters its format allows unquoted."""
    raw = draw(secrets(WORD))
    shapes = {
        "chinese yaml": f"datasource:\n  {draw(st.sampled_from(['数据库密码', '密码', '口令', '密钥', '私钥', '令牌']))}: {raw}\n",
        "chinese log": f"2026-11-26 ERROR login failed 密码={raw} for app\n",
        "short names": f"{draw(st.sampled_from(['db_pw', 'pw', 'passcode', 'app.pw']))}={raw}\n",
        "full-width colon": f"password：{raw}\n",
        "k8s env": f"env:\n  - name: DB_PASSWORD\n    value: {raw}\n  - name: LOG_LEVEL\n    value: info\n",
        "spring value": f'<property name="password">{draw(st.sampled_from(["", chr(10) + "  "]))}<value>{raw}</value>'
                        "</property>\n",
        "compact sequence": f"tokens:\n- {raw}\n- other{raw[::-1]}\nnext: plain\n",
        "url slash": f"mongodb://root:{raw[:3]}/{raw[3:]}#x@db.internal:27017/orders\n",
        "curl": f"curl {draw(st.sampled_from(['-u ', '--user ', '--user=']))}admin:{raw} http://h/backup\n",
        "escaped key": f"db.pass\\u0077ord={raw}\n",
        "html input": f'<input type="password" name="pw" value="{raw}">\n',
        "pgpass": f"db.internal:5432:orders:app:{raw}\n",
        "sas": f"https://a.blob.core.windows.net/c/x?sv=2020-08-04&sig={raw}&se=2026\n",
        "oracle quoted": f'url=jdbc:oracle:thin:scott/"{raw[:4]} {raw[4:]}"@//db.internal:1521/ORCL\n',
        # the third review: YAML explicit keys, XML attributes ending in a backslash or split over lines, DTD entities,
        # -P=
        "yaml explicit key": f"? {draw(SECRET_KEYS)}\n: {raw}\nport: web\n",
        "yaml explicit key block": f"db:\n  ? password\n  : |\n    {raw}\n    {raw[::-1]}\n  user: app\n",
        "xml backslash": f'<user username="tomcat" password="{raw}\\"/>\n',
        "xml split attribute": f'<user username="t"\n      {draw(XML_KEYS)}\n      =\n   "{raw}"/>\n',
        "dtd entity": f'<!DOCTYPE c [<!ENTITY {draw(st.sampled_from(["pw", "% pe", "x"]))} "{raw}">]>'
                      "<c><password>&pw;</password></c>\n",
        "-P=": f"tool {draw(st.sampled_from(['-P=', '-p=']))}{raw} --verbose\n",
    }
    shape = draw(st.sampled_from(sorted(shapes)))
    secret: "str | tuple[str, ...]" = raw
    if shape == "compact sequence":
        secret = (raw, raw[::-1])
    elif shape == "oracle quoted":
        secret = (raw[:4], raw[4:])
    elif shape == "yaml explicit key block":
        secret = (raw, raw[::-1])
    elif shape == "url slash":
        secret = (raw[:3] + "/" + raw[3:],)
    return Doc(shapes[shape], secret, "conf/more.txt")


FORMATS: dict[str, Callable[[], st.SearchStrategy[Doc]]] = {
    "yaml block scalar": yaml_block_scalar, "yaml scalar": yaml_scalar, "yaml flow map": yaml_flow_map,
    "yaml number": yaml_number, "xml": xml_document, "properties": properties_file, "url": url_with_credentials,
    "json": json_document, "more shapes": more_shapes,
}
documents = st.one_of(*(make() for make in FORMATS.values()))


@settings(max_examples=600, deadline=None)
@given(documents)
def test_no_fragment_of_a_secret_survives_the_bundles_redaction(doc: Doc) -> None:
    """What the diagnostics bundle writes for a member of this name holds no piece of the secret."""
    out = redact(doc.text)
    assert not leaks(doc, out), f"{doc.name}: {leaks(doc, out)} of {doc.secret!r} survive in {out!r}"


@settings(max_examples=400, deadline=None)
@given(documents)
def test_no_fragment_of_a_secret_survives_in_what_the_audit_log_stores(doc: Doc) -> None:
    """An event's text (a command's output, a config excerpt) as the audit log stores it holds no piece of it."""
    stored = json.dumps(audit_redact({"stdout": doc.text, "detail": {"config": doc.text}}), ensure_ascii=False)
    decoded = json.loads(stored)
    for text in (decoded["stdout"], decoded["detail"]["config"]):
        assert not leaks(doc, text), f"{leaks(doc, text)} of {doc.secret!r} survive in {text!r}"


@given(st.sampled_from(["db_password", "token", "jdbc.password"]),
       st.one_of(st.integers(min_value=100000), st.floats(min_value=100000, allow_nan=False, allow_infinity=False),
                 st.dictionaries(st.sampled_from(["value", "plain"]), st.integers(min_value=100000), min_size=1),
                 st.lists(st.integers(min_value=100000), min_size=1)))
def test_values_of_secret_keys_are_hidden_in_the_audit_log_whatever_their_type(key: str, value: object) -> None:
    """``{"db_password": 123456}`` and nested values under a secret name are stored as [REDACTED]."""
    assert audit_redact({key: value, "user": "app"}) == {key: "[REDACTED]", "user": "app"}


@settings(max_examples=300, deadline=None)
@given(secrets(URL_SAFE), st.integers(min_value=20, max_value=120))
def test_a_url_line_cut_anywhere_keeps_no_piece_of_its_password(raw: str, limit: int) -> None:
    """A log line with a URL password, cut to any length (before or after its '@'): redacted first, then cut."""
    from upgrader.audit.redaction import shorten

    line = f"ERROR pool: url jdbc:postgresql://app:{raw}@db.internal:5432/orders"
    out = shorten(line, limit)
    assert len(out) <= limit + 4 and not [f for f in fragments(raw) if f in out], out  # the mask may replace less
    # a line the host agent already cut (it marks the cut with "…") inside the password
    cut = shorten(line[:line.index("app:") + 4 + len(raw) // 2] + "…", 200)
    assert not [f for f in fragments(raw[:len(raw) // 2]) if f in cut], cut


@settings(max_examples=300, deadline=None)
@given(secrets(WORD), st.integers(min_value=0, max_value=40), st.integers(min_value=20, max_value=200))
def test_command_output_cut_anywhere_keeps_no_piece_of_a_secret_setting(raw: str, before: int, limit: int) -> None:
    """The last ``limit`` characters of a command's output, wherever the cut falls in a secret setting (after the
    first line that says how many bytes were cut, when it cut: "[… N bytes left out …]")."""
    import re

    from upgrader.audit.redaction import tail

    text = "".join(f"line {i}\n" for i in range(before)) + f"db.password={raw}\n" + "-" * (limit - 5) + "\n"
    out = tail(text, limit)
    kept = re.sub(r"\A\[… \d+ bytes left out …\]\n?", "", out)
    assert len(kept) <= limit + 4 and not [f for f in fragments(raw) if f in out], out


ATTACKS = [  # the shapes the third review showed leaking, as it wrote them
    ("yaml explicit key", "? password\n: S3cA3\n", "S3cA3"),
    ("xml attribute ending in a backslash", '<user username="tomcat" password="S3cB3\\"/>\n', "S3cB3"),
    ("xml attribute split over lines", '<user username="t"\n password\n = "S3cB4"/>\n', "S3cB4"),
    ("dtd entity", '<!DOCTYPE c [<!ENTITY pw "S3cB5">]><c><password>&pw;</password></c>\n', "S3cB5"),
    ("-P=", "tool -P=S3cC4\n", "S3cC4"),
]


@pytest.mark.parametrize(("shape", "text", "secret"), ATTACKS, ids=[a[0] for a in ATTACKS])
def test_the_third_reviews_shapes_are_hidden_in_the_bundle_and_the_audit_log(shape: str, text: str,
                                                                                secret: str) -> None:
    bundle = redact(text)
    audit = audit_redact({"detail": text})["detail"]
    assert secret not in bundle and "***" in bundle, bundle
    assert secret not in audit and "[REDACTED]" in audit, audit


@pytest.mark.parametrize("text", [
    "? description\n: the tomcat users file\n",
    '<user username="tomcat"\n roles="manager-gui"/>\n',
    '<!DOCTYPE web-app PUBLIC "-//Sun//DTD Web Application 2.3//EN" "http://java.sun.com/dtd/web-app_2_3.dtd">\n',
    "mkdir -p /opt/app && tar -xpf app.tar\n",
    "pass same_product: the package is for the product installed\n",
])
def test_ordinary_text_near_the_new_shapes_stays_readable(text: str) -> None:
    assert redact(text) == text
    assert audit_redact({"detail": text})["detail"] == text


# ---------------------------------------------------------------- remembered results, patterns compiled on first use

PEM_BLOCK = "-----BEGIN RSA PRIVATE KEY-----\nMIIS3cD4\nAAAA\n-----END RSA PRIVATE KEY-----\n"
FIRST_USE = r'''
import json, sys, threading
texts = json.loads(sys.stdin.read())
from upgrader.audit import redaction
threads = int(sys.argv[1])
out = [None] * len(texts)
def work(k):
    for i in range(k, len(texts), threads):
        out[i] = [redaction.redact(texts[i]), redaction.redact(texts[i], "[X]", "[KEY]"), redaction.redact(texts[i])]
if threads == 1:
    work(0)
else:  # every thread meets the not yet compiled patterns at once
    start = threading.Barrier(threads)
    def run(k):
        start.wait()
        work(k)
    ts = [threading.Thread(target=run, args=(k,)) for k in range(threads)]
    [t.start() for t in ts]
    [t.join() for t in ts]
left = sorted(n for n, v in vars(redaction).items() if type(v).__name__ == "_Later")
print(json.dumps({"out": out, "names": [n for n in sorted(vars(redaction)) if not n.startswith("__")], "left": left}))
'''


def test_patterns_compiled_on_first_use_by_many_threads_at_once_redact_as_one_thread_does() -> None:
    """In fresh processes: 8 threads that all meet the rules' patterns before any is compiled give, for every
    text, what one thread gives (asked twice, the second answer remembered), and what this process gives; every
    pattern they used is then the compiled one in the module."""
    import subprocess
    import sys

    texts = [a[1] for a in ATTACKS] + [
        "password=S3cD1 and url jdbc:mysql://app:S3cD2@db/x\n", "<password>S3cD3</password>",
        PEM_BLOCK,
        '{"db": {"token": "S3cD5", "host": "h"}}', "Authorization: Bearer S3cD6\n", "nothing secret here",
        "db.pass\\u0077ord=S3cD7\n", "GET http://127.0.0.1:8080/VERSION answered 2.0"]
    texts = texts * 5

    def fresh(threads: int) -> dict[str, object]:
        done = subprocess.run([sys.executable, "-c", FIRST_USE, str(threads)], input=json.dumps(texts),
                              capture_output=True, text=True, check=True)
        return json.loads(done.stdout)

    one, many = fresh(1), fresh(8)
    assert many["out"] == one["out"]
    assert one["out"] == [[redact(t), redact(t, "[X]", "[KEY]"), redact(t)] for t in texts]
    assert "S3c" not in json.dumps(many["out"])  # every secret of every text hidden
    assert many["out"][texts.index(PEM_BLOCK)][1] == "[KEY]\n"  # the whole block, BEGIN line to END line (re.S)
    assert many["names"] == one["names"]
    for name in ("_SETTING", "_LINE_SETTING", "_ELEMENT", "_PEM", "_HEADER", "_URL_AUTHORITY"):
        assert name not in many["left"], many["left"]  # used, so compiled and in the module's place
