"""Playbooks: the shipped ones load; every invalid one is refused naming its file and key path."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml  # type: ignore[import-untyped]

from upgrader.core.errors import InputError
from upgrader.core.playbook import find_playbook, load_playbook, shipped_playbooks_dir

SHIPPED = {"sample-middleware.yaml": "sample-middleware", "tomcat.yaml": "tomcat", "tongweb.yaml": "tongweb"}


def base() -> dict[str, Any]:
    """A valid playbook, the shipped sample one, as data."""
    return yaml.safe_load((shipped_playbooks_dir() / "sample-middleware.yaml").read_text())


def write(tmp_path: Path, data: dict[str, Any], name: str = "broken.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.mark.parametrize("name, product", sorted(SHIPPED.items()))
def test_shipped_playbook_loads(name, product):
    """Each shipped playbook loads, names its product and has probes, a stop and a start command."""
    pb = load_playbook(shipped_playbooks_dir() / name)
    assert pb.product == product
    assert pb.spec["observe"]["probes"]
    assert pb.spec["stop"]["command"] and pb.spec["start"]["command"]
    assert len(pb.digest) == 64


def test_shipped_playbooks_are_exactly_the_three_products():
    """The shipped directory holds sample-middleware, tomcat and tongweb, and find_playbook finds each by name."""
    assert sorted(p.name for p in shipped_playbooks_dir().glob("*.yaml")) == sorted(SHIPPED)
    for name in SHIPPED.values():
        assert find_playbook(name) == shipped_playbooks_dir() / f"{name}.yaml"


def test_sample_playbook_renders_port_and_target_version():
    """Rendering substitutes ${port} and ${target_version} everywhere, in probes and stop ports alike."""
    pb = load_playbook(shipped_playbooks_dir() / "sample-middleware.yaml")
    spec = pb.render({"port": "23456", "target_version": "7.0.4.2", "current_version": "7.0.4.1"})
    assert spec["stop"]["ports"] == ["23456"]
    urls = [p["url"] for p in spec["observe"]["probes"] if p["type"] == "http"]
    assert urls == ["http://127.0.0.1:23456/health", "http://127.0.0.1:23456/version"]
    assert [p.get("body") for p in spec["observe"]["probes"] if p["type"] == "http"] == [None, "7.0.4.2"]
    assert "${" not in yaml.safe_dump(spec)


def test_durations_are_seconds_and_keep_defaults_when_absent(tmp_path):
    """'15s' and '0.25s' read as seconds; backup.keep defaults to 3 when the section is missing."""
    data = base()
    del data["backup"]
    pb = load_playbook(write(tmp_path, data))
    assert pb.spec["stop"]["timeout"] == 15.0
    assert pb.spec["observe"]["interval"] == 0.25
    assert pb.spec["backup"]["keep"] == 3


def _probe(index: int, **fields: Any) -> Callable[[dict[str, Any]], None]:
    def change(d: dict[str, Any]) -> None:
        d["observe"]["probes"][index] = fields
    return change


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(d: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = d
        for p in parents:
            node = node[p]
        node[last] = value
    return change


def _delete(key: str) -> Callable[[dict[str, Any]], None]:
    def change(d: dict[str, Any]) -> None:
        del d[key]
    return change


# id, change to the valid playbook, key path named by the error, words of the message
INVALID = [
    ("missing stop", _delete("stop"), "stop", "required"),
    ("missing start", _delete("start"), "start", "required"),
    ("bad duration", _set("stop.timeout", "sixty"), "stop.timeout", "duration"),
    ("negative duration", _set("observe.window", -1), "observe.window", "negative"),
    ("unknown top-level key", _set("colour", "blue"), "colour", "unknown key"),
    ("unknown key in stop", _set("stop.signal", "TERM"), "stop.signal", "unknown key"),
    ("probe with unknown type", _probe(0, type="smoke-signal"), "observe.probes[0].type", "one of"),
    ("log probe with invalid regex", _probe(4, type="log", file="logs/server.log", absent="ERROR("),
     "observe.probes[4].absent", "regular expression"),
    ("log probe with no pattern", _probe(4, type="log", file="logs/server.log"), "observe.probes[4]", "absent"),
    ("http probe without url", _probe(2, type="http"), "observe.probes[2].url", "required"),
    ("no probes at all", _set("observe.probes", []), "observe.probes", "at least one probe"),
    ("preserve path with ..", _set("preserve", [{"path": "../etc/passwd", "kind": "config"}]),
     "preserve[0].path", "relative"),
    ("preserve path absolute", _set("preserve", [{"path": "/etc/passwd", "kind": "config"}]),
     "preserve[0].path", "relative"),
    ("nested preserve paths", _set("preserve", [{"path": "conf", "kind": "config"},
                                                {"path": "conf/server.conf", "kind": "config"}]),
     "preserve", "inside"),
    ("preserve kind unknown", _set("preserve", [{"path": "data", "kind": "precious"}]),
     "preserve[0].kind", "one of"),
    ("version with both file and command", _set("version", {"file": "lib/VERSION", "command": "cat x"}),
     "version", "exactly one"),
    ("version pattern with two groups", _set("version", {"file": "lib/VERSION", "pattern": "(a)(b)"}),
     "version.pattern", "capture group"),
    ("stop timeout of wrong type", _set("stop.timeout", [15]), "stop.timeout", "duration"),
    ("backup keep of wrong type", _set("backup.keep", "three"), "backup.keep", "integer"),
    ("backup keep zero", _set("backup.keep", 0), "backup.keep", "at least 1"),
    ("format 2", _set("format", 2), "format", "at most 1"),
]


@pytest.mark.parametrize("change, key, words", [x[1:] for x in INVALID], ids=[x[0] for x in INVALID])
def test_invalid_playbook_is_refused_naming_file_and_key(tmp_path, change, key, words):
    """An invalid playbook raises InputError whose path is the file and whose key is the offending key path."""
    data = copy.deepcopy(base())
    change(data)
    path = write(tmp_path, data)
    with pytest.raises(InputError) as e:
        load_playbook(path)
    assert e.value.path == str(path)
    assert e.value.key == key
    assert f"{path}: {key}: " in str(e.value)
    assert words in str(e.value)


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    """A playbook that is not valid YAML is an InputError naming the file and the line."""
    path = tmp_path / "bad.yaml"
    path.write_text("format: 1\nname: x\nstop: {command: bin/stop.sh\n")
    with pytest.raises(InputError) as e:
        load_playbook(path)
    assert e.value.path == str(path)
    assert "line " in str(e.value) and "invalid YAML" in str(e.value)


def test_missing_playbook_file_is_input_error(tmp_path):
    """Loading a playbook that does not exist is an InputError naming the path."""
    with pytest.raises(InputError) as e:
        load_playbook(tmp_path / "nope.yaml")
    assert str(tmp_path / "nope.yaml") in str(e.value)


def test_unknown_playbook_name_lists_the_known_ones():
    """find_playbook of an unknown name fails and lists the shipped playbooks."""
    with pytest.raises(InputError) as e:
        find_playbook("websphere")
    assert "websphere" in str(e.value)
    assert "tongweb" in str(e.value) and "tomcat" in str(e.value)


def test_undefined_variable_at_render_names_file_and_key(tmp_path):
    """A ${var} nobody defines fails at render with the file and the key path where it is used."""
    data = base()
    data["start"]["command"] = "bin/start.sh --profile ${profile}"
    path = write(tmp_path, data)
    pb = load_playbook(path)
    with pytest.raises(InputError) as e:
        pb.render({"port": "1", "target_version": "7.0.4.2", "current_version": "7.0.4.1"})
    assert e.value.path == str(path)
    assert e.value.key == "start.command"
    assert "${profile}" in str(e.value)


def test_undefined_variable_inside_a_probe_names_the_probe_index(tmp_path):
    """An undefined ${var} in a probe names its list index in the key path."""
    data = base()
    data["observe"]["probes"][2]["url"] = "http://${bind}:${port}/health"
    path = write(tmp_path, data)
    with pytest.raises(InputError) as e:
        load_playbook(path).render({"port": "1", "target_version": "v", "current_version": "v"})
    assert e.value.key == "observe.probes[2].url"


def test_host_vars_override_playbook_vars():
    """A variable given at render time beats the playbook's vars default."""
    pb = load_playbook(shipped_playbooks_dir() / "sample-middleware.yaml")
    assert pb.defaults["port"] == "18080"
    spec = pb.render({"port": "9999", "target_version": "v", "current_version": "v"})
    assert spec["stop"]["ports"] == ["9999"]
    default = pb.render({"target_version": "v", "current_version": "v"})
    assert default["stop"]["ports"] == ["18080"]
