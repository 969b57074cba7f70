#!/usr/bin/env python3
"""Downtime of a real Apache Tomcat upgrade with the shipped ``tomcat`` playbook, split into Tomcat's own stop +
start and the tool's share.

It uses the test suite's real Tomcat (tests/tomcat_debian.py, tests/tomcat.py): Debian's tomcat10 packages of the
oldest and the newest version the package mirror offers, assembled as Apache ``CATALINA_HOME``s (cached in
``.cache/tomcat``), each packed with ``upgrader package build`` into a catalog signed by a fresh vendor key. Each
repetition installs the old version with a site's customisations (its own loopback ports, a user, a WAR and an
exploded application with JSPs, ``JAVA_OPTS`` in ``bin/setenv.sh``, no pid file), starts it, and runs, each as its
own process, what a user runs:

    upgrader --home H plan --inventory INV --to NEW --catalog CAT --key REQUESTER -o PLAN
    upgrader --home H approve PLAN --key ENGINEER -o APPROVAL
    upgrader --home H run PLAN --approval APPROVAL

with the shipped ``tomcat`` playbook, its observation window cut to 3 s and its probe interval to 0.5 s (the window
runs after the service is back, so it is not part of the downtime; the interval bounds how soon health is seen).
From ``result.json`` (``hosts[0]``): ``downtime`` (stop requested -> new version healthy), ``service_time``
(``shutdown.sh`` and the wait for the JVM to exit, ``startup.sh``, and start -> every probe passing: Tomcat's own
stop + start) and the phases. The tool's share is ``downtime - service_time``. Every JVM it started is stopped and
its temporary directory removed.

    .venv/bin/python benchmarks/tomcat_downtime.py              # 5 repetitions
    .venv/bin/python benchmarks/tomcat_downtime.py --repeat 3

Writes ``benchmarks/results/tomcat_downtime.md`` and ``.json`` and prints the report.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from machine import machine_info  # noqa: E402  benchmarks/machine.py

GOAL_TOOL_SECONDS = 0.5


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _catalog(root: Path, homes: tuple[Any, Any]) -> tuple[Path, Path]:
    from upgrader.cli import main

    root.mkdir(parents=True)
    key = root / "vendor"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "tomcat-vendor", "-f", str(key)], check=True)
    signers = root / "vendor_signers"
    pub = " ".join(key.with_suffix(".pub").read_text().split()[:2])
    signers.write_text(f'tomcat-vendor namespaces="upgrader-catalog" {pub}\n')
    directory = root / "catalog"
    for home in homes:
        assert main(["--home", str(root / "h"), "package", "build", str(home.path), "--product", "tomcat",
                     "--version", home.server_number, "-o", str(directory / f"tomcat-{home.server_number}.tar.gz"),
                     "--json"]) == 0
    assert main(["--home", str(root / "h"), "catalog", "build", str(directory), "--serial", "1", "--key", str(key),
                 "--json"]) == 0
    return directory, signers


def one_run(work: Path, homes: tuple[Any, Any], catalog: Path, signers: Path) -> dict[str, Any]:
    from tomcat import Site, install
    from tomcat_lab import make_lab, quick_playbook

    old, new = homes
    tc = install(old, work / "tomcat", Site.on_free_ports(setenv=True))
    try:
        tc.start()
        lab = make_lab(work / "home", tc, catalog, signers)
        quick_playbook(lab)
        plan, approval = work / "plan.json", work / "plan.approval"
        for argv in (["plan", "--inventory", str(lab.inventory), "--to", new.server_number, "--catalog",
                      str(catalog), "--key", str(lab.requester_key), "-o", str(plan)],
                     ["approve", str(plan), "--key", str(lab.engineer_key), "-o", str(approval)]):
            res = lab.child(*argv)
            if res.rc != 0:
                raise RuntimeError(f"upgrader {argv[0]} exited {res.rc}: {res.out[-2000:]}")
        t0 = time.monotonic()
        run = lab.child("run", str(plan), "--approval", str(approval))
        wall = time.monotonic() - t0
        host = run.host()
        if run.rc != 0 or host["outcome"] != "committed":
            raise RuntimeError(f"run exited {run.rc}, outcome {host.get('outcome')}: {run.out[-2000:]}")
        if tc.get("/shop/")[0] != 200:
            raise RuntimeError("the application does not answer after the upgrade")
        phases = {p["phase"]: p["seconds"] for p in host["phases"]}
        return {"downtime": host["downtime"], "service_time": host["service_time"],
                "tool_part": round(host["downtime"] - host["service_time"], 4),
                "stop": phases.get("stop"), "install": phases.get("install"), "start": phases.get("start"),
                "run_wall": round(wall, 3)}
    finally:
        tc.ensure_stopped()


def report(samples: list[dict[str, Any]], homes: tuple[Any, Any], started: str, load: tuple[Any, Any],
           command: str) -> str:
    def med(key: str) -> float:
        return statistics.median(s[key] for s in samples)

    def rng(key: str) -> str:
        return f"{min(s[key] for s in samples):.3f}–{max(s[key] for s in samples):.3f}"

    old, new = homes
    m = machine_info()
    tool = med("tool_part")
    return "\n".join([
        "# Real Tomcat upgrade: downtime",
        "",
        f"- date: {started}",
        f"- machine: {m.get('nproc')} CPU(s) (`nproc`), {m.get('cpu')}; {m.get('platform')}",
        f"- Python {m.get('python')}; upgrader commit {m.get('commit')}",
        f"- load average at start: {load[0]}; at end: {load[1]}",
        f"- command: `{command}`; {len(samples)} repetition(s); medians, min–max in brackets",
        f"- upgrade: Apache Tomcat {old.server_number} → {new.server_number} (Debian {old.debian_version} → "
        f"{new.debian_version}), shipped `tomcat` playbook (window 3 s, interval 0.5 s), local host, "
        "JAVA_OPTS in bin/setenv.sh, no pid file, a WAR and an exploded application",
        "",
        "| figure | seconds |",
        "|---|---|",
        f"| downtime (stop requested → new Tomcat healthy) | {med('downtime'):.3f} ({rng('downtime')}) |",
        f"| Tomcat's own stop + start (shutdown.sh, JVM exit, startup.sh, start → probes pass) | "
        f"{med('service_time'):.3f} ({rng('service_time')}) |",
        f"| **tool's share** (downtime − Tomcat's own) | **{tool:.3f}** ({rng('tool_part')}) |",
        f"| stop phase | {med('stop'):.3f} ({rng('stop')}) |",
        f"| install phase (swap of CATALINA_HOME, conf/ webapps/ kept) | {med('install'):.3f} ({rng('install')}) |",
        f"| whole `upgrader run` wall time (backup, observation window included) | {med('run_wall'):.2f} |",
        "",
        f"Goal: tool's share under {GOAL_TOOL_SECONDS} s: **{'met' if tool < GOAL_TOOL_SECONDS else 'MISSED'}** "
        f"({tool:.3f} s).",
        "",
    ])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-r", "--repeat", type=int, default=5)
    ap.add_argument("--results", type=Path, default=Path(__file__).resolve().parent / "results")
    args = ap.parse_args()
    from tomcat import cached_home, oldest_and_newest

    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    load0 = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    _log("building (or reading the cache of) the two Tomcat homes ...")
    old, new = oldest_and_newest()
    homes = (cached_home(old), cached_home(new))
    samples = []
    with tempfile.TemporaryDirectory(prefix="upgrader-bench-tomcat-") as tmp:
        with contextlib.redirect_stdout(sys.stderr):     # the CLI's own output is progress here
            catalog, signers = _catalog(Path(tmp) / "vendor", homes)
        for i in range(args.repeat):
            s = one_run(Path(tmp) / f"r{i}", homes, catalog, signers)
            _log(f"run {i + 1}/{args.repeat}: downtime {s['downtime']:.3f}s, Tomcat {s['service_time']:.3f}s, "
                 f"tool {s['tool_part']:.3f}s")
            samples.append(s)
    load1 = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    command = ".venv/bin/python benchmarks/tomcat_downtime.py" + (f" --repeat {args.repeat}" if args.repeat != 5
                                                                  else "")
    text = report(samples, homes, started, (load0, load1), command)
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "tomcat_downtime.md").write_text(text)
    (args.results / "tomcat_downtime.json").write_text(json.dumps(
        {"date": started, "from": homes[0].server_number, "to": homes[1].server_number, "samples": samples},
        indent=2) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
