"""Configuration-read variables: values read from the install's files (read-only)."""

import re

from .beneath import read_beneath
from .common import AgentError
from .state import Paths


CONFIG_VAR_MAX = 1 << 20


def config_value(text, spec):
    """(value, line number) that ``spec`` selects in a config file's text, or (None, why)."""
    if spec.get("pattern"):
        m = re.search(spec["pattern"], text, re.MULTILINE)
        if not m:
            return None, "no line matches %r" % spec["pattern"]
        return (m.group(1) if m.groups() else m.group(0)).strip(), text.count("\n", 0, m.start()) + 1
    if "<!ENTITY" in text:
        return None, "the file declares XML entities; not read"
    import xml.etree.ElementTree as ET

    try:
        root = ET.fromstring(text)
    except ET.ParseError as e:
        return None, "not well-formed XML: %s" % e
    for path in spec["xml"]:
        try:
            found = root.findall(path)
        except (SyntaxError, KeyError, TypeError, ValueError) as e:
            return None, "bad element path %r: %s" % (path, e)
        for el in found:
            value = el.get(spec.get("attribute", "")) if spec.get("attribute") else (el.text or "")
            if value is not None and value.strip():
                return value.strip(), None
    return None, "no element %s with %s" % (" or ".join(spec["xml"]), spec.get("attribute") or "text")


def op_read_vars(req):
    """Playbook variables read from the install's own configuration (``vars_from``): per name, the value and
    where it was found, or why it was not."""
    paths = Paths(req)
    out = {}
    for name, spec in sorted(req.get("vars_from", {}).items()):
        entry = {"file": spec["file"]}
        try:
            # resolved beneath the install dir and opened from descriptors: a link swapped in after the check
            # cannot lead the read outside
            data = read_beneath(paths.install, spec["file"], "vars_from file", CONFIG_VAR_MAX)
            value, where = config_value(data.decode("utf-8", "replace"), spec)
        except AgentError as e:
            value, where = None, str(e)
        except OSError as e:
            value, where = None, "%s: %s" % (e.strerror, spec["file"])
        if value is None:
            entry["error"] = where
        else:
            entry["value"] = value
            if isinstance(where, int):
                entry["line"] = where
        out[name] = entry
    return {"vars": out}
