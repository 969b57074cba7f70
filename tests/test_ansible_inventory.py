"""Ansible inventories (INI and YAML) read as they are: groups, children, ranges, vars precedence, refusals."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from conftest import approve, upgrader
from upgrader.core.errors import InputError
from upgrader.fleet.inventory import load_inventory

COMMON = ("install_dir=/opt/sample product=sample-middleware playbook=sample-middleware "
          "maintenance_until=2099-12-31")


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text).lstrip(), encoding="utf-8")
    return path


INI = """
    # web servers, a range
    [web]
    web[01:03] ansible_port=2201

    [db]
    db1 ansible_host=10.0.0.5 ansible_user=dbadmin ansible_ssh_private_key_file=keys/db_ed25519 greeting="host's own"

    [prod:children]
    web
    db

    [prod:vars]
    install_dir=/opt/sample
    product=sample-middleware
    playbook=sample-middleware
    maintenance_until=2099-12-31
    greeting=from prod
    tier=prod

    [web:vars]
    greeting=from web

    [all:vars]
    tier=all
    region=eu-1
    """


def test_ini_groups_children_and_ranges_become_hosts_and_groups(tmp_path):
    """[web] with web[01:03], [db] and [prod:children]: four hosts, prod holds web and db members."""
    inv = load_inventory(write(tmp_path / "hosts.ini", INI))
    assert sorted(inv.hosts) == ["db1", "web01", "web02", "web03"]
    assert inv.groups["web"] == ("web01", "web02", "web03")
    assert inv.groups["db"] == ("db1",)
    assert sorted(inv.groups["prod"]) == ["db1", "web01", "web02", "web03"]
    assert inv.hosts["web02"].groups and set(inv.hosts["web02"].groups) == {"web", "prod"}


def test_ini_connection_variables_map_to_address_port_user_and_key(tmp_path):
    """ansible_host/port/user/ssh_private_key_file become address, port, user and a key path beside the file."""
    inv = load_inventory(write(tmp_path / "hosts.ini", INI))
    db, web = inv.hosts["db1"], inv.hosts["web01"]
    assert (db.address, db.port, db.user, db.key) == ("10.0.0.5", 22, "dbadmin", str(tmp_path / "keys/db_ed25519"))
    assert (web.address, web.port, web.user, web.key) == ("web01", 2201, None, None)
    assert (db.install_dir, db.product, db.playbook, str(db.maintenance_until)) == (
        "/opt/sample", "sample-middleware", "sample-middleware", "2099-12-31")


def test_ini_group_vars_child_group_beats_parent_and_host_beats_all(tmp_path):
    """greeting: web01 gets [web:vars] over [prod:vars]; db1's own value wins; tier from prod beats [all:vars]."""
    inv = load_inventory(write(tmp_path / "hosts.ini", INI))
    assert inv.hosts["web01"].vars == {"greeting": "from web", "tier": "prod", "region": "eu-1"}
    assert inv.hosts["db1"].vars == {"greeting": "host's own", "tier": "prod", "region": "eu-1"}


def test_ansible_host_patterns_select_by_group_glob_and_exclusion(tmp_path):
    """The usual patterns work on an Ansible inventory: group minus a host, globs, a child group."""
    inv = load_inventory(write(tmp_path / "hosts.ini", INI))
    assert [h.name for h in inv.select("prod:!db1")] == ["web01", "web02", "web03"]
    assert [h.name for h in inv.select("web0[12]")] == ["web01", "web02"]
    assert [h.name for h in inv.select("db")] == ["db1"]


YAML = """
    all:
      vars:
        install_dir: /opt/sample
        product: sample-middleware
        playbook: sample-middleware
        maintenance_until: 2099-12-31
        level: all
        tier: all
        region: eu-1
      children:
        prod:
          vars:
            level: prod
            tier: prod
          children:
            web:
              vars:
                level: web
              hosts:
                web[01:02]:
                  ansible_user: deploy
                web03:
                  ansible_host: 10.0.1.13
                  ansible_port: "2222"
                  level: host
        staging:
          hosts:
            stage-[a:b]:
    """


def test_yaml_vars_precedence_is_host_then_child_group_then_parent_group_then_all(tmp_path):
    """level: web03's own value, web01 the child group's, tier the parent group's, region from all."""
    inv = load_inventory(write(tmp_path / "inventory.yml", YAML))
    assert inv.hosts["web03"].vars == {"level": "host", "tier": "prod", "region": "eu-1"}
    assert inv.hosts["web01"].vars == {"level": "web", "tier": "prod", "region": "eu-1"}
    assert inv.hosts["stage-a"].vars == {"level": "all", "tier": "all", "region": "eu-1"}


def test_yaml_children_ranges_and_connection_variables(tmp_path):
    """Ranges in YAML host keys expand (digits and letters); nested children make groups; ports become numbers."""
    inv = load_inventory(write(tmp_path / "inventory.yml", YAML))
    assert sorted(inv.hosts) == ["stage-a", "stage-b", "web01", "web02", "web03"]
    assert sorted(inv.groups["prod"]) == ["web01", "web02", "web03"]
    assert inv.groups["staging"] == ("stage-a", "stage-b")
    assert (inv.hosts["web03"].address, inv.hosts["web03"].port) == ("10.0.1.13", 2222)
    assert (inv.hosts["web02"].address, inv.hosts["web02"].user) == ("web02", "deploy")


def test_sibling_groups_merge_in_name_order_the_same_in_every_process(tmp_path):
    """Eight sibling groups set the same var: as in Ansible the last by name wins (not whichever set order gives)."""
    groups = "".join(f"    [g{i}]\n    app\n    [g{i}:vars]\n    colour=from-g{i}\n" for i in (3, 7, 1, 8, 5, 2, 6, 4))
    inv = load_inventory(write(tmp_path / "hosts.ini", f"[all:vars]\n{COMMON.replace(' ', chr(10))}\n" + groups))
    assert inv.hosts["app"].vars["colour"] == "from-g8"


def test_ansible_group_priority_beats_name_order_among_siblings(tmp_path):
    """ansible_group_priority: 10 on group 'a-first' makes its value win over 'z-last' (priority, then name)."""
    text = (f"[all:vars]\n{COMMON.replace(' ', chr(10))}\n"
            "[a-first]\napp\n[a-first:vars]\ncolour=a\nansible_group_priority=10\n"
            "[z-last]\napp\n[z-last:vars]\ncolour=z\n")
    inv = load_inventory(write(tmp_path / "hosts.ini", text))
    assert inv.hosts["app"].vars == {"colour": "a"}


@pytest.mark.parametrize("value", ["{{ lookup('env', 'DB_HOST') }}", "{% if prod %}10.0.0.1{% endif %}"])
def test_jinja_in_an_ini_value_is_refused_naming_file_host_and_key(tmp_path, value):
    """A templated ansible_host is not used as text: InputError naming the file, the host, the key and Jinja."""
    path = write(tmp_path / "hosts.ini", f"[db]\ndb1 ansible_host=\"{value}\" {COMMON}\n")
    with pytest.raises(InputError) as e:
        load_inventory(path)
    message = str(e.value)
    assert str(path) in message
    assert "host db1: ansible_host uses a Jinja expression" in message
    assert "upgrader does not evaluate" in message


def test_jinja_in_yaml_group_vars_makes_plan_exit_2_with_the_reason(sandbox, capsys):
    """`upgrader plan` on a YAML inventory whose group var is templated: exit 2, the message says why, no plan."""
    inv = write(sandbox.root / "inventory.yml", """
        all:
          vars:
            install_dir: /opt/sample
            product: sample-middleware
            playbook: sample-middleware
            port: "{{ 8000 + 80 }}"
          hosts:
            app-01:
        """)
    out = sandbox.plans / "p.json"
    rc = upgrader(sandbox, "plan", "--inventory", str(inv), "--to", "7.0.4.2", "--catalog", str(sandbox.catalog),
                  "-o", str(out))
    err = capsys.readouterr().err
    assert rc == 2
    assert "host app-01: port uses a Jinja expression" in err
    assert "Traceback" not in err
    assert not out.exists()


def test_ansible_ini_inventory_over_the_real_sshd_plans_and_runs_an_upgrade(fleet):
    """An INI inventory whose ansible_host/port/user/ssh_private_key_file reach the test sshd: plan and run succeed."""
    f = fleet(1)
    h, sshd = f["app-01"], f.sshd
    inv = write(f.box.root / "hosts.ini", f"""
        [prod]
        app-01 ansible_host=127.0.0.1 ansible_port={sshd.port} ansible_user=root ansible_ssh_private_key_file={sshd.client_key} port={h.port}

        [prod:vars]
        install_dir={h.install_dir}
        product=sample-middleware
        playbook=sample-middleware
        maintenance_until=2099-12-31
        known_hosts={sshd.known_hosts}
        """)
    plan = f.box.plans / "ansible.json"
    rc = upgrader(f.box, "plan", "--inventory", str(inv), "--to", "7.0.4.2", "--catalog", str(f.box.catalog),
                  "-o", str(plan))
    assert rc == 0
    (entry,) = json.loads(plan.read_text())["hosts"]
    assert (entry["address"], entry["port"], entry["user"], entry["current"]) == ("127.0.0.1", sshd.port, "root",
                                                                                   "7.0.4.1")
    assert entry["groups"] == ["prod"]
    rc = upgrader(f.box, "run", str(plan), "--approval", str(approve(f.box, plan)))
    assert rc == 0
    assert h.answers() == "7.0.4.2"
