"""A plan's read of a host without a trust root does not compile the host trust module (issue 16: ~1,100 lines,
about 25 ms of CPU at every agent boot, times every host). The agent's facts and probe proof of a plan, in a fresh
Python as on the host, leave ``hosttrust`` unimported; a command probe still brings it (it binds command probes),
and a host with a trust root still decides with it (test_host_trust, test_trust_roots_*)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from upgrader import sample
from upgrader.core.playbook import load_playbook, shipped_playbooks_dir

REPO = Path(__file__).resolve().parent.parent
SCRIPT = """
import json, sys
from upgrader.hostagent.main import handle
replies = [handle(r) for r in json.loads(sys.argv[1])]
print(json.dumps({"ok": [r["ok"] for r in replies], "hosttrust": "upgrader.hostagent.hosttrust" in sys.modules}))
"""


def agent(requests: list[dict[str, object]]) -> dict[str, object]:
    done = subprocess.run([sys.executable, "-I", "-B", "-c", f"import sys; sys.path.insert(0, {str(REPO)!r})\n" + SCRIPT,
                           json.dumps(requests)], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def test_plan_reads_without_compiling_host_trust(tmp_path: Path) -> None:
    install = tmp_path / "app"
    sample.install(install, port=18093)
    spec = load_playbook(shipped_playbooks_dir() / "sample-middleware.yaml").spec
    base = {"install_dir": str(install), "state_dir": None}
    facts = {"op": "facts", **base, "version_source": spec["version"], "check_drift": True, "packages": [],
             "preserve": [p["path"] for p in spec["preserve"]]}
    tcp = {"op": "prove", **base, "probes": [{"type": "tcp", "host": "127.0.0.1", "port": 1, "name": "port"}]}
    assert agent([facts, tcp]) == {"ok": [True, True], "hosttrust": False}
    command = {"op": "prove", **base, "probes": [{"type": "command", "command": "true", "name": "cmd"}]}
    assert agent([facts, command]) == {"ok": [True, True], "hosttrust": True}
