"""Inventories: hosts, defaults, groups, host patterns, and the inventories that must be refused."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml  # type: ignore[import-untyped]

from upgrader.core.errors import InputError
from upgrader.fleet.inventory import load_inventory

FLEET = """\
format: 1
defaults:
  product: tongweb
  playbook: tongweb
  user: deploy
  port: 2222
  maintenance_until: 2027-06-30
hosts:
  app-01: {address: 10.0.0.11, install_dir: /srv/tongweb}
  app-02: {address: 10.0.0.12, install_dir: /srv/tongweb}
  web-01: {address: web01.example.com, install_dir: /srv/tongweb, port: 22}
  web-02: {address: 10.0.0.22, install_dir: /srv/tongweb, user: ops}
  web-03: {address: 10.0.0.23, install_dir: /srv/tongweb, maintenance_until: 2025-01-31}
  demo: {address: local, install_dir: sandbox/app, product: sample-middleware, playbook: sample-middleware,
         vars: {port: "18080"}}
groups:
  prod: [app-01, app-02, web-01, web-02, web-03]
  web: [web-01, web-02, web-03]
"""


def write(tmp_path: Path, text: str, name: str = "inventory.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.fixture
def inv(tmp_path: Path):
    return load_inventory(write(tmp_path, FLEET))


def names(hosts) -> list[str]:
    return [h.name for h in hosts]


def test_hosts_load_with_their_settings(inv, tmp_path):
    """Every host is read with address, install_dir, product and playbook; relative install dirs are made absolute."""
    assert list(inv.hosts) == ["app-01", "app-02", "web-01", "web-02", "web-03", "demo"]
    app = inv.hosts["app-01"]
    assert (app.address, app.install_dir, app.product, app.playbook) == ("10.0.0.11", "/srv/tongweb", "tongweb",
                                                                         "tongweb")
    demo = inv.hosts["demo"]
    assert demo.is_local and not app.is_local
    assert demo.install_dir == str((tmp_path / "sandbox" / "app").resolve())
    assert demo.vars == {"port": "18080"}


def test_defaults_apply_and_hosts_override_them(inv):
    """Defaults fill in what a host leaves out; a host's own value wins."""
    assert inv.hosts["app-01"].port == 2222
    assert inv.hosts["web-01"].port == 22
    assert inv.hosts["app-01"].user == "deploy"
    assert inv.hosts["web-02"].user == "ops"
    assert inv.hosts["app-01"].maintenance_until == dt.date(2027, 6, 30)
    assert inv.hosts["web-03"].maintenance_until == dt.date(2025, 1, 31)
    assert inv.hosts["demo"].product == "sample-middleware"


def test_built_in_defaults_when_inventory_gives_none(tmp_path):
    """Without defaults a host gets port 22, no user, no contract date and strict host keys."""
    inv = load_inventory(write(tmp_path, "format: 1\nhosts:\n  h1: {address: h1.example.com, install_dir: /srv/x, "
                                         "product: tomcat, playbook: tomcat}\n"))
    h = inv.hosts["h1"]
    assert (h.port, h.user, h.maintenance_until, h.host_key, h.groups) == (22, None, None, "strict", ())


def test_groups_are_recorded_on_their_hosts(inv):
    """A host knows the groups it belongs to."""
    assert inv.hosts["web-02"].groups == ("prod", "web")
    assert inv.hosts["app-01"].groups == ("prod",)
    assert inv.hosts["demo"].groups == ()
    assert inv.groups["web"] == ("web-01", "web-02", "web-03")


@pytest.mark.parametrize("pattern, expected", [
    (None, ["app-01", "app-02", "web-01", "web-02", "web-03", "demo"]),
    ("demo", ["demo"]),
    ("app-*", ["app-01", "app-02"]),
    ("web", ["web-01", "web-02", "web-03"]),
    ("prod:!web-03", ["app-01", "app-02", "web-01", "web-02"]),
    ("prod:!web", ["app-01", "app-02"]),
    ("app-01,web-02", ["app-01", "web-02"]),
    ("!prod", ["demo"]),
    ("web-0[12]", ["web-01", "web-02"]),
])
def test_host_patterns_select_hosts(inv, pattern, expected):
    """Names, groups, globs, ':' or ',' unions and '!' exclusions select the expected hosts, in inventory order."""
    assert names(inv.select(pattern)) == expected


@pytest.mark.parametrize("pattern", ["db-*", "prod:!nosuch", "nosuch"])
def test_unknown_host_pattern_is_an_error_listing_known_hosts(inv, pattern):
    """A pattern part that matches nothing is refused, naming it and the known hosts."""
    with pytest.raises(InputError) as e:
        inv.select(pattern)
    assert "matches no host" in str(e.value)
    assert "app-01" in str(e.value)


def test_pattern_that_excludes_everything_is_an_error(inv):
    """A pattern that leaves no host to work on is refused."""
    with pytest.raises(InputError) as e:
        inv.select("web:!web")
    assert "leaves no host" in str(e.value)


def test_two_hosts_on_the_same_install_dir_are_refused(tmp_path):
    """Two host entries naming the same address and install dir are refused: one install, one entry."""
    path = write(tmp_path, "format: 1\nhosts:\n"
                           "  a: {address: 10.0.0.1, install_dir: /srv/tw, product: tongweb, playbook: tongweb}\n"
                           "  b: {address: 10.0.0.1, install_dir: /srv/tw/, product: tongweb, playbook: tongweb}\n")
    with pytest.raises(InputError) as e:
        load_inventory(path)
    assert str(path) in str(e.value)
    assert "'a'" in str(e.value) and "'b'" in str(e.value) and "/srv/tw" in str(e.value)


def test_two_local_hosts_reaching_the_same_dir_by_relative_and_absolute_path_are_refused(tmp_path):
    """A relative and an absolute install_dir that resolve to the same local directory are the same install."""
    path = write(tmp_path, "format: 1\nhosts:\n"
                           "  a: {address: local, install_dir: app, product: tongweb, playbook: tongweb}\n"
                           f"  b: {{address: local, install_dir: {tmp_path}/app, product: tongweb, playbook: tongweb}}\n")
    with pytest.raises(InputError) as e:
        load_inventory(path)
    assert "same install dir" in str(e.value)


def test_same_install_dir_on_different_hosts_is_fine(inv):
    """The same path on different machines is a different install."""
    assert {h.install_dir for h in inv.hosts.values() if not h.is_local} == {"/srv/tongweb"}


@pytest.mark.parametrize("address", ["web01; rm -rf /", "$(id)", "`reboot`", "a|b", "a&&b", "host name",
                                     "x'y", 'x"y', "a>b"])
def test_address_with_shell_metacharacters_is_refused(tmp_path, address):
    """An address with shell metacharacters or spaces is refused naming the host's address key."""
    path = tmp_path / "inventory.yaml"
    path.write_text(yaml.safe_dump({"format": 1, "hosts": {"h1": {
        "address": address, "install_dir": "/srv/x", "product": "tomcat", "playbook": "tomcat"}}}))
    with pytest.raises(InputError) as e:
        load_inventory(path)
    assert e.value.key == "hosts.h1.address"
    assert e.value.path == str(path)


@pytest.mark.parametrize("text, key, words", [
    ("format: 1\nhosts:\n  h1: {address: a, install_dir: /srv/x, product: p, playbook: p, colour: blue}\n",
     "hosts.h1.colour", "unknown key"),
    ("format: 1\ndefaults: {colour: blue}\nhosts:\n  h1: {address: a, install_dir: /srv/x, product: p, playbook: p}\n",
     "defaults.colour", "unknown key"),
    ("format: 1\nhosts:\n  h1: {address: a, install_dir: /srv/x, product: p, playbook: p, port: ssh}\n",
     "hosts.h1.port", "integer"),
    ("format: 1\nhosts:\n  h1: {address: a, install_dir: /srv/x, product: p, playbook: p, port: 70000}\n",
     "hosts.h1.port", "at most 65535"),
    ("format: 1\nhosts:\n  h1: {address: a, install_dir: /srv/x, product: p}\n",
     "hosts.h1.playbook", "required"),
    ("format: 1\nhosts:\n  h1: {address: a, install_dir: /srv/x, product: p, playbook: p, "
     "maintenance_until: next year}\n", "hosts.h1.maintenance_until", "date"),
    ("format: 1\nhosts:\n  h1: {address: a, install_dir: /, product: p, playbook: p}\n",
     "hosts.h1.install_dir", "system directory"),
    ("format: 1\nhosts: {}\n", "hosts", "no host"),
    ("format: 1\nhosts:\n  h1: {address: a, install_dir: /srv/x, product: p, playbook: p}\ngroups:\n  g: [h2]\n",
     "groups.g", "not a host"),
    ("format: 1\nhosts:\n  'bad name!': {address: a, install_dir: /srv/x, product: p, playbook: p}\n",
     "hosts.bad name!", "host names"),
])
def test_invalid_inventory_names_file_and_key(tmp_path, text, key, words):
    """Each invalid inventory raises InputError naming the file and the key path."""
    path = write(tmp_path, text)
    with pytest.raises(InputError) as e:
        load_inventory(path)
    assert e.value.path == str(path)
    assert e.value.key == key
    assert words in str(e.value)


def test_missing_inventory_file_is_input_error(tmp_path):
    """An inventory path that does not exist is an InputError naming it."""
    with pytest.raises(InputError) as e:
        load_inventory(tmp_path / "nope.yaml")
    assert str(tmp_path / "nope.yaml") in str(e.value) and "not found" in str(e.value)
