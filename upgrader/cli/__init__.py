"""Command line: argv -> command -> exit code.

The only place that catches ``UpgraderError`` and turns it into a message and an exit code
(PRODUCT.md's table). Heavy modules (rich, yaml, fabric) are imported by the commands
themselves, so ``upgrader --help`` stays fast.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import tempfile
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from ..core.errors import InputError, UpgraderError
from ..core.exit_codes import ExitCode

if TYPE_CHECKING:
    from ..core.clock import Clock

__all__ = ["main", "build_parser"]

_EPILOG = """exit codes: 0 done, 1 failed and rolled back, 2 bad input, 3 refused by the version policy,
4 approval missing or invalid, 5 a host needs a person, 6 audit log altered"""


_OBFUSCATE_HELP = ("in the diagnostics bundle written when a host fails, also replace host names and IP addresses "
                   "(the key stays beside the bundle)")



def _witness_options(p: argparse.ArgumentParser) -> None:
    """The options that go with --witness, the same for audit verify, show, case and export."""
    p.add_argument("--earlier-policy", metavar="FILE", action="append",
                   help="with --witness: a policy file in force at another time (repeatable); a run, resume or "
                        "rollback recorded under it (its sha256) has its service window judged by it rather than "
                        "left not proven")
    p.add_argument("--syslog", metavar="EXPORT", action="append",
                   help="with --witness: a syslog export (repeatable) holding the hosts' witnesses (policy "
                        "audit.syslog: true, forwarded off the hosts): each copy signed by a trusted audit key is "
                        "checked against the log and against its host's own records, which a controller can "
                        "rewrite; a line not so signed is named and ignored")
    p.add_argument("--other-log", metavar="LOG[:SIGNERS]", action="append",
                   help="with --witness: another audit log of the same hosts (repeatable; the customer's guide on a "
                        "host, another controller): each host's records name the log of their run, and each log is "
                        "checked against its own runs' records; SIGNERS: that log's own allowed_signers file "
                        "(default: those of the log verified)")

def _default_home() -> str:
    """$UPGRADER_HOME, else ~/.local/state/upgrader; as root, only in a login directory that is root's own."""
    given = os.environ.get("UPGRADER_HOME")
    if given:
        return given
    home = Path.home() / ".local" / "state" / "upgrader"
    if os.geteuid() == 0:
        _refuse_anothers_home(home)
    return str(home)


def _refuse_anothers_home(home: Path) -> None:
    """Root's default home taken from a $HOME that is another account's (``sudo`` keeps the caller's HOME): its
    runs, audit log and keys would be kept in a directory that account can change, or swap for a link. Refused,
    naming the directory and its owner, before anything is read or written there."""
    import pwd

    for d in (home.parents[2], home.parents[1], home.parent, home):  # the login directory, then down to the home
        try:
            uid = os.stat(d).st_uid
        except OSError:
            return  # the first one missing: upgrader makes the rest, root's own
        if uid != 0:
            try:
                owner = pwd.getpwuid(uid).pw_name
            except KeyError:
                owner = "uid %d" % uid
            raise InputError(f"the default home {home} is in {d}, which belongs to {owner}, and upgrader runs as "
                             "root: its runs, audit log and keys are never kept in another account's directory",
                             hint="give --home DIR (a directory of root's), or run it with sudo -H (root's own "
                                  "login directory)")


_BREAK_LOCK_HELP = ("take over host locks left by another run (only when you know that run is dead: the lock names its "
                    "run, user, machine and time; `upgrader status` shows them); recorded in the audit log with the "
                    "lock's holder")


_EVENTS_HELP = ("write every engine event as one JSON line (format 1: format, event, time, run, host, phase, status, "
                "seconds, detail, from_version, to_version, version, exit_code) to FILE, or to stdout with '-' (the "
                "human output then goes to stderr; not with --json)")


@functools.lru_cache(maxsize=1)
def build_parser() -> argparse.ArgumentParser:
    """The command line's parser, built once per process (tests and scripts call ``main`` many times)."""
    p = argparse.ArgumentParser(
        prog="upgrader", epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Safe upgrades and patches of middleware: back up, stop, install, start, observe, "
                    "and roll back automatically when anything is wrong.")
    p.add_argument("--home", default=None, metavar="DIR",
                   help="where runs and the audit log are kept (env UPGRADER_HOME; "
                        "default ~/.local/state/upgrader)")
    p.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    p.add_argument("--version", action="version", version="upgrader 0.1.0")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    demo = sub.add_parser("demo", help="the whole story in a sandbox on this machine (about a minute)",
                          description="Build a sandbox (sample middleware 7.0.4.1, catalog, keys), then show a "
                                      "refused upgrade, a successful upgrade, a patch and a failing upgrade that "
                                      "is rolled back automatically. Asks no questions.")
    demo.add_argument("--dir", help="sandbox directory, kept afterwards (default: a new temporary directory)")
    demo.add_argument("--keep-running", action="store_true", help="leave the sample service running at the end")
    demo.set_defaults(func="demo:cmd_demo")

    versions = sub.add_parser("versions", help="version policy decisions").add_subparsers(dest="sub", metavar="SUB")
    check = versions.add_parser("check", help="would CURRENT -> TARGET be a free upgrade?",
                                description="Print the policy decision for an upgrade, every rule with its reason. "
                                            "Exit 0 allowed, 3 refused, 2 malformed version.")
    check.add_argument("current")
    check.add_argument("target")
    check.add_argument("--policy", help="policy YAML file (default: the shipped default policy)")
    check.add_argument("--kind", choices=("full", "patch"), default="full")
    check.add_argument("--requires", help="the patch's requires range, e.g. '>=7.0.4.1, <7.0.4.3'")
    check.add_argument("--changes", action="append", default=[], metavar="KIND",
                       help="a change the package declares: external_interface, config_format, monitoring")
    check.add_argument("--product", default="product")
    check.add_argument("--json", action="store_true")
    check.set_defaults(func="versions:cmd_check")

    package = sub.add_parser("package", help="build and verify packages").add_subparsers(dest="sub", metavar="SUB")
    build = package.add_parser("build", help="pack a directory into a package",
                               description="Pack the product files of DIR into a .tar.gz with package.yaml.")
    build.add_argument("dir")
    build.add_argument("--product", required=True)
    build.add_argument("--version", required=True, dest="pkg_version")
    build.add_argument("--kind", choices=("full", "patch"), default="full")
    build.add_argument("--requires", help="patch only: versions it applies to, e.g. '>=7.0.4.1, <7.0.4.3'")
    build.add_argument("--remove", action="append", default=[], metavar="PATH",
                       help="patch only: a product file the patch deletes (repeatable)")
    build.add_argument("--changes", action="append", default=[], metavar="KIND",
                       help="declare a change: external_interface, config_format, monitoring (repeatable)")
    build.add_argument("--description", default="")
    build.add_argument("-o", "--output", required=True, metavar="PKG")
    build.add_argument("--json", action="store_true")
    build.set_defaults(func="packages:cmd_build")
    verify = package.add_parser("verify", help="check a package (and against a catalog)",
                                description="Check that PKG is a well-formed package with safe members; with "
                                            "--catalog, also that its size and sha256 match the catalog entry.")
    verify.add_argument("pkg")
    verify.add_argument("--catalog", help="catalog.yaml (or its directory)")
    verify.add_argument("--json", action="store_true")
    verify.set_defaults(func="packages:cmd_verify")

    available = sub.add_parser(
        "available", help="what each host can upgrade to, what the policy refuses and why, and advisories",
        description="Read each host's installed version (read-only, as plan does) and, for every newer version of its "
                    "product in the signed catalog, the version policy's decision: the newest free upgrade, the "
                    "other allowed versions, and each refused version with its reasons. Hosts running a version "
                    "named in one of the catalog's advisories are flagged, with the free fix. Changes nothing. "
                    "Exit 0; 2 bad input (e.g. a malformed advisory); 4 untrusted catalog; 5 a host could not be "
                    "read (the others are still listed).")
    available.add_argument("--inventory", required=True, metavar="INV")
    available.add_argument("--catalog", required=True, metavar="CAT")
    available.add_argument("--hosts", metavar="PATTERN", help="e.g. 'prod:!web-03' or 'app-*'")
    available.add_argument("--lang", choices=("zh", "en"), help="language of the table and the reasons (default: "
                           "from the locale)")
    available.add_argument("--policy", help="policy YAML (default: HOME/policy.yaml if present, else the shipped one)")
    available.add_argument("--json", action="store_true")
    available.set_defaults(func="available:cmd_available")

    inspect = sub.add_parser(
        "inspect", help="health inspection: OS, kernel parameters, limits, disk, memory, product, ports, logs",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Inspect one install on this machine (--install-dir) or every host of an inventory (locally or "
                    "over SSH): OS and kernel, the kernel parameters that matter to middleware (fs.file-max, "
                    "somaxconn, vm.*), ulimits of the agent and of the product's process, disk use of the install "
                    "dir's file system, CPU count and load, memory, the product's version, process, ports, sha256 "
                    "of its configuration files and error lines in the last lines of its logs, each judged against "
                    "thresholds (defaults, or the playbook's inspect.thresholds). With --catalog, hosts running a "
                    "version named in an advisory are flagged. Changes nothing.",
        epilog="thresholds (warn when): disk_used_pct > 85, memory_available_pct < 10, load_per_cpu > 2, "
               "file_max < 65536,\nopen_files < 65536, processes < 4096, somaxconn < 1024, tcp_max_syn_backlog < 1024, "
               "max_map_count < 65530,\nlog_errors > 0; also: product not running, a playbook port closed, version "
               "unreadable, an advisory.\n\nexit codes: 0 every host inspected (warnings do not change it), "
               "2 bad input, 4 untrusted catalog,\n5 a host could not be inspected (the others are still reported)")
    inspect.add_argument("--inventory", metavar="INV", help="inspect the hosts of this inventory")
    inspect.add_argument("--hosts", metavar="PATTERN", help="with --inventory: e.g. 'prod:!web-03' or 'app-*'")
    inspect.add_argument("--install-dir", metavar="DIR", help="inspect the install in DIR on this machine")
    inspect.add_argument("--playbook", metavar="P", help="with --install-dir: the product's playbook (name or file; "
                         "default: the shipped playbook whose version file is in DIR)")
    inspect.add_argument("--var", action="append", default=[], metavar="NAME=VALUE",
                         help="with --install-dir: a playbook variable, e.g. --var port=8088 (repeatable)")
    inspect.add_argument("--catalog", metavar="CAT", help="flag hosts that run a version named in its advisories")
    inspect.add_argument("--policy", help="policy YAML for --catalog (default: HOME/policy.yaml, else the shipped one)")
    inspect.add_argument("-o", "--output", metavar="REPORT", help="write REPORT.html (self-contained, to send to "
                         "support) or REPORT.json")
    inspect.add_argument("--lang", choices=("en", "zh"), help="the table and the report in English or Simplified Chinese "
                         "(default: from the locale)")
    inspect.add_argument("--json", action="store_true", help="print the inspection as JSON")
    inspect.add_argument("--customer", metavar="NAME", help="the report form's customer name (else a blank to fill in)")
    inspect.add_argument("--system", metavar="NAME", help="the report form's system name, e.g. '核心业务系统' (else a "
                         "blank)")
    inspect.add_argument("--inspector", metavar="NAME", help="who inspects (default: your login name@this machine)")
    inspect.add_argument("--period", metavar="TEXT", help="the inspection period as the form shows it (default: when "
                         "the collection started and ended, in the policy's time zone)")
    inspect.add_argument("--compare", metavar="PREVIOUS.json",
                         help="compare with this inspection (a kept HOME/inspections/HOST/TIME.json or a -o "
                              "report.json) instead of the newest one kept for the host")
    inspect.add_argument("--bundle", metavar="FILE.tar.gz",
                         help="also write the one file to send to support: the report (--lang) and the inspection "
                              "as JSON, redacted")
    inspect.add_argument("--review", metavar="BUNDLE",
                         help="support's side: open a customer's --bundle, compare it with the last one received from "
                              "that host (HOME/inspections/received/HOST/), and write the advice report for the "
                              "customer (-o, default BUNDLE-advice.html)")
    inspect.add_argument("--remarks", metavar="TEXT", help="a remark printed above the signatures")
    inspect.set_defaults(func="inspect:cmd_inspect")

    plan = sub.add_parser("plan", help="decide what a run would do, per host, and write the plan",
                          formatter_class=argparse.RawDescriptionHelpFormatter,
                          description="Read each host's installed version (read-only), decide by the version policy, "
                                      "verify the package against the catalog and write the plan (JSON). "
                                      "Exit 0 when every host is allowed, 3 when the policy refuses one.",
                          epilog="""reviewing a plan:
  upgrader plan show PLAN [--json]     everything the plan will do, in full: what an approver reviews (versions,
                                       package sha256, catalog signer and serial, policy source and digest, every
                                       rule's decision, every command and hook the run executes, the service window)
  upgrader plan digest PLAN            the digest an approval signs""")
    plan.add_argument("--inventory", required=True, metavar="INV")
    plan.add_argument("--to", required=True, metavar="VERSION")
    plan.add_argument("--catalog", required=True, metavar="CAT")
    plan.add_argument("--hosts", metavar="PATTERN", help="e.g. 'prod:!web-03' or 'app-*'")
    plan.add_argument("--policy", help="policy YAML (default: HOME/policy.yaml if present, else the shipped one)")
    plan.add_argument("--requester", help="a label for who asks (default: env UPGRADER_USER, else your login); "
                      "it decides nothing: the requester is the key that signs the plan (--key) or runs it")
    plan.add_argument("--key", metavar="SSH_KEY", help="your private key: sign the plan (namespace upgrader-plan) "
                      "so that it names you by key; an approval by this key is a self-approval")
    plan.add_argument("-o", "--output", required=True, metavar="PLAN")
    plan.add_argument("--json", action="store_true")
    plan.set_defaults(func="upgrade:cmd_plan")

    approve = sub.add_parser("approve", help="approve a plan: sign its digest with your SSH key",
                             description="Show the plan, then sign an approval of exactly this plan (its digest) with "
                                         "your SSH key (SSHSIG, namespace upgrader-approval). A refused plan cannot "
                                         "be approved (exit 3).")
    approve.add_argument("plan")
    approve.add_argument("--key", required=True, metavar="SSH_KEY", help="your private key (OpenSSH format)")
    approve.add_argument("--as", dest="principal", metavar="PRINCIPAL",
                         help="your name in allowed_signers (default: looked up by your key)")
    approve.add_argument("--expires", default="24h", metavar="DURATION", help="validity, e.g. 2h, 24h, 7d (default 24h)")
    approve.add_argument("--comment", help="why it is approved (one line; part of the signed statement)")
    approve.add_argument("--after-hours", action="store_true",
                         help="pre-booked for a run outside the service window")
    approve.add_argument("--policy", help="policy YAML (default: HOME/policy.yaml, else /etc/upgrader/policy.yaml, else the shipped one); never taken from the plan")
    approve.add_argument("-o", "--output", required=True, metavar="APPROVAL")
    approve.add_argument("--json", action="store_true")
    approve.set_defaults(func="approvals:cmd_approve")

    # `upgrader plan show PLAN` and `upgrader plan digest PLAN` (main() routes them here; see _PLAN_SUBCOMMANDS)
    show = sub.add_parser("plan-show", prog="upgrader plan show",
                          help="= 'upgrader plan show PLAN': everything a plan will do, in full (what an approver "
                               "reviews)",
                          description="Print everything PLAN will do, in full: what an approver reviews before "
                                      "'upgrader approve' (which prints the same, then signs). Per host: versions, "
                                      "package file and full sha256, every rule's decision and check, every command "
                                      "and hook the run executes as it will run, probes; and the catalog's signer "
                                      "and serial, the policy's source and digest (and whether the policy here is "
                                      "the same), the requester and their key, the service window. Changes nothing.")
    show.add_argument("plan")
    show.add_argument("--check", action="store_true",
                      help="also connect to every host read-only (host key verified, nothing written, no lock taken) "
                           "and re-check the version, the lock, free disk and whether the package is there; needs "
                           "no approval. Exit 5 when a host is unreachable or not as the plan expects")
    show.add_argument("--policy", help="policy YAML (default: HOME/policy.yaml, else /etc/upgrader/policy.yaml, else the shipped one); never taken from the plan")
    show.add_argument("--json", action="store_true")
    show.set_defaults(func="review:cmd_plan_show")
    digest = sub.add_parser("plan-digest", prog="upgrader plan digest",
                            help="= 'upgrader plan digest PLAN': the digest an approval signs",
                            description="Print the digest of PLAN: the sha256 of its canonical JSON (its requester "
                                        "signature left out), which an approval signs.")
    digest.add_argument("plan")
    digest.add_argument("--json", action="store_true")
    digest.set_defaults(func="review:cmd_plan_digest")

    keys = sub.add_parser("keys", help="SSH keys for approvals and signatures").add_subparsers(dest="sub", metavar="SUB")
    gen = keys.add_parser("generate", help="make an Ed25519 key pair and print its allowed_signers line",
                          description="Write NAME and NAME.pub (in --dir, default HOME/keys) and print the line to "
                                      "add to an allowed_signers file. A NAME with a '/' (keys/vendor, "
                                      "./engineer, /etc/upgrader/keys/x) is a path, as with ssh-keygen -f: the key "
                                      "is written there. Existing OpenSSH keys work too.")
    gen.add_argument("name", help="a bare name (written in --dir or HOME/keys) or a path")
    gen.add_argument("--principal", help="identity in allowed_signers (default: NAME)")
    gen.add_argument("--dir", help="where to write the key (default: HOME/keys)")
    gen.add_argument("--json", action="store_true")
    gen.set_defaults(func="keys:cmd_generate")

    catalog = sub.add_parser("catalog", help="the vendor's signed catalog").add_subparsers(dest="sub", metavar="SUB")
    cbuild = catalog.add_parser("build", help="write catalog.yaml for the packages in DIR (and sign it)")
    cbuild.add_argument("dir")
    cbuild.add_argument("--serial", type=int, required=True, help="catalog serial; must grow with every release")
    cbuild.add_argument("--key", help="vendor private key: sign the catalog (catalog.yaml.sig)")
    cbuild.add_argument("--json", action="store_true")
    cbuild.set_defaults(func="catalogs:cmd_build")
    csign = catalog.add_parser("sign", help="sign catalog.yaml (writes catalog.yaml.sig, namespace upgrader-catalog)")
    csign.add_argument("catalog")
    csign.add_argument("--key", required=True)
    csign.add_argument("--json", action="store_true")
    csign.set_defaults(func="catalogs:cmd_sign")

    audit = sub.add_parser("audit", help="verify, read and export the audit log").add_subparsers(dest="sub",
                                                                                               metavar="SUB")
    averify = audit.add_parser("verify", help="prove the audit log was not altered",
                               description="Check the hash chain, the sequence and every signed checkpoint. Exit 0 when "
                                           "intact, 6 naming the first bad line. Only --anchor (a checkpoint a run "
                                           "printed, kept elsewhere) proves that nothing was cut off the end.")
    averify.add_argument("log", nargs="?", help="the log (default: HOME/audit/audit.jsonl)")
    averify.add_argument("--anchor", metavar="CHECKPOINT", help="SEQ:HEAD as a run printed it, or a file holding it")
    averify.add_argument("--allowed-signers", metavar="FILE",
                         help="operators' keys (default: the policy's audit.allowed_signers)")
    averify.add_argument("--policy", help="policy YAML naming the allowed signers")
    averify.add_argument("--witness", metavar="INVENTORY",
                         help="also check the log against the checkpoints every host of this inventory witnessed "
                              "and each host's own record of the runs it finished (read-only, over SSH or locally): "
                              "a rewritten log, a run cut off the end or a field of a run that differs from the "
                              "host's record is named, exit 6; a witness late or missing, or a host that cannot be "
                              "read, leaves it not proven (exit 2); with --plans/--approvals both checks run and "
                              "the worse exit code wins")
    _witness_options(averify)
    averify.add_argument("--plans", metavar="DIR", help="also check every plan the log names: a file in DIR must "
                         "have its digest (recomputed from the file); exit 6 naming the line and file otherwise")
    averify.add_argument("--approvals", metavar="DIR", help="also check every approval a run accepted: a file in DIR "
                         "with its digest, a good signature by an allowed approver, for the plan the log names")
    averify.add_argument("--approval-signers", metavar="FILE",
                         help="approvers' keys for --approvals (default: the policy's approvals.allowed_signers)")
    averify.add_argument("--lang", choices=("en", "zh"),
                         help="English or Simplified Chinese (default: from the locale)")
    averify.add_argument("--json", action="store_true")
    averify.set_defaults(func="audit:cmd_verify")
    ashow = audit.add_parser("show", help="a readable timeline of the audit log, after its verdict",
                            description="Verify the whole log first and print INTACT, ALTERED (line N) or UNVERIFIED "
                                        "(no allowed signers given) above the timeline. Exit 6 when the log was "
                                        "altered, else 0.")
    ashow.add_argument("log", nargs="?", help="the log (default: HOME/audit/audit.jsonl)")
    ashow.add_argument("--run", metavar="ID", help="only this run (a prefix is enough)")
    ashow.add_argument("--host", metavar="H")
    ashow.add_argument("--since", metavar="DATE", help="e.g. 2026-11-26 or 2026-11-26T10:00")
    ashow.add_argument("--anchor", metavar="CHECKPOINT", help="SEQ:HEAD as a run printed it, or a file holding it")
    ashow.add_argument("--allowed-signers", metavar="FILE",
                       help="operators' keys (default: the policy's audit.allowed_signers)")
    ashow.add_argument("--policy", help="policy YAML naming the allowed signers")
    ashow.add_argument("--witness", metavar="INVENTORY",
                       help="also check the log against every host's own records (as audit verify --witness) and "
                            "show that verdict under the log's: exit 6 when the hosts contradict the log, 2 when a "
                            "host could not be read or a doubt remains")
    _witness_options(ashow)
    ashow.add_argument("--lang", choices=("en", "zh"), help="English or Simplified Chinese (default: from the locale)")
    ashow.add_argument("--json", action="store_true")
    ashow.set_defaults(func="audit:cmd_show")
    acase = audit.add_parser("case", help="one record per change: who requested, who approved when, policy, window, "
                                          "what ran, what happened, which checkpoint proves it",
                             description="Print the case file of RUN_ID (its id or a prefix naming one run), from "
                                         "the whole log after its verification (exit 6 when the log was altered).")
    acase.add_argument("run", metavar="RUN_ID")
    acase.add_argument("log", nargs="?", help="the log (default: HOME/audit/audit.jsonl)")
    acase.add_argument("--anchor", metavar="CHECKPOINT")
    acase.add_argument("--allowed-signers", metavar="FILE")
    acase.add_argument("--policy")
    acase.add_argument("--witness", metavar="INVENTORY",
                       help="also read (read-only) the checkpoints the hosts of this inventory keep and name which "
                            "hosts keep this run's checkpoint and whether the log matches it (exit 6 if not)")
    _witness_options(acase)
    acase.add_argument("--approvals", metavar="DIR",
                       help="the approval files the auditor was given: each approval of the run names its file, whose "
                            "signature is checked and whose plan, approver, key and expiry must be the log's (exit 6 "
                            "otherwise)")
    acase.add_argument("--plans", metavar="DIR",
                       help="the plan files the auditor was given: the run's plan must be one of them and its "
                            "requester, hosts and target the log's (exit 6 otherwise); without --plans or --approvals "
                            "the requester is shown as the controller's word")
    acase.add_argument("--lang", choices=("en", "zh"), help="English or Simplified Chinese (default: from the locale)")
    acase.add_argument("--json", action="store_true")
    acase.set_defaults(func="audit:cmd_case")
    aexport = audit.add_parser("export", help="write an HTML, JSON or CSV report",
                               description="Write a report of the audit log: HTML (one self-contained file: summary per "
                                           "run, per-host phase timeline, policy decisions, rollbacks, and the "
                                           "verification result at the top), JSON or CSV. The report is written "
                                           "even when the log was altered; the exit code is then 6, as for "
                                           "'audit verify'.")
    aexport.add_argument("log", nargs="?", help="the log (default: HOME/audit/audit.jsonl)")
    aexport.add_argument("--format", required=True, choices=("html", "json", "csv"))
    aexport.add_argument("-o", "--output", required=True, metavar="FILE")
    aexport.add_argument("--lang", choices=("en", "zh"), help="labels in English or Simplified Chinese "
                         "(default: from the locale)")
    aexport.add_argument("--run", metavar="ID")
    aexport.add_argument("--host", metavar="H")
    aexport.add_argument("--since", metavar="DATE")
    aexport.add_argument("--anchor", metavar="CHECKPOINT")
    aexport.add_argument("--witness", metavar="INVENTORY",
                         help="fill each run's case file with the hosts that keep its checkpoint and whether the log "
                              "matches it (read-only; exit 6 if any host's record does not match the log)")
    _witness_options(aexport)
    aexport.add_argument("--plans", metavar="DIR",
                         help="the plan files the auditor was given: each run's plan must be one of them and its "
                              "requester, hosts and target the log's (exit 6 otherwise); a requester no plan file "
                              "holds is marked as the controller's word")
    aexport.add_argument("--allowed-signers", metavar="FILE")
    aexport.add_argument("--policy")
    aexport.add_argument("--json", action="store_true")
    aexport.set_defaults(func="audit:cmd_export")

    access = sub.add_parser("access", help="customer-granted, time-limited SSH access for an engineer").add_subparsers(
        dest="sub", metavar="SUB")
    agrant = access.add_parser("grant", help="let one engineer key in for a few hours (authorized_keys entry)",
                               description="Add one authorized_keys entry for ENGINEER_PUBKEY with expiry-time, optional "
                                           "from= patterns and restrict (plus only what upgrader's own SSH use needs), "
                                           "marked as a grant with an id. A key already granted is extended, not "
                                           "duplicated. Recorded in the audit log.")
    agrant.add_argument("--key", required=True, metavar="ENGINEER_PUBKEY", help="the engineer's public key file")
    agrant.add_argument("--hours", type=float, metavar="N", help="how long (default from the policy; at most its maximum)")
    agrant.add_argument("--from", dest="from_patterns", metavar="PATTERNS",
                        help="only from these addresses (OpenSSH from= patterns, e.g. '10.1.2.*,192.0.2.7')")
    agrant.add_argument("--user", help="the account to open (default: you)")
    agrant.add_argument("--reason", help="why (ticket, name); kept in the entry's comment and the audit log")
    agrant.add_argument("--inventory", metavar="INV", help="grant on every host of an inventory, over SSH")
    agrant.add_argument("--hosts", metavar="PATTERN")
    agrant.add_argument("--json", action="store_true")
    agrant.add_argument("--lang", choices=("zh", "en"), help="language of the output (default: from the locale)")
    agrant.set_defaults(func="access:cmd_grant")
    alist = access.add_parser("list", help="open grants: who, why, from where, time left")
    alist.add_argument("--user")
    alist.add_argument("--inventory", metavar="INV")
    alist.add_argument("--hosts", metavar="PATTERN")
    alist.add_argument("--json", action="store_true")
    alist.add_argument("--lang", choices=("zh", "en"), help="language of the output (default: from the locale)")
    alist.set_defaults(func="access:cmd_list")
    arevoke = access.add_parser("revoke", help="close grants: one by id, all, or the expired ones")
    arevoke.add_argument("grant_id", nargs="?", metavar="ID")
    arevoke.add_argument("--all", action="store_true")
    arevoke.add_argument("--expired", action="store_true")
    arevoke.add_argument("--user")
    arevoke.add_argument("--inventory", metavar="INV")
    arevoke.add_argument("--hosts", metavar="PATTERN")
    arevoke.add_argument("--json", action="store_true")
    arevoke.add_argument("--lang", choices=("zh", "en"), help="language of the output (default: from the locale)")
    arevoke.set_defaults(func="access:cmd_revoke")

    guide = sub.add_parser(
        "guide", help="guided upgrade of this host, for the customer's operator (Chinese or English)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="A wizard that upgrades the middleware on this host step by step: finds the installed product, "
                    "checks the package against the signed catalog and the version policy (every rule explained), "
                    "checks the engineer's approval and the service window, shows the preflight checks and the "
                    "health inspection, asks you to confirm your business-data backup, offers time-limited access "
                    "for the engineer (and to close it at the end), shows the plan, asks before stopping the "
                    "service, then runs backup, stop, install, start and observe with progress, rolling back "
                    "automatically on failure. Journal and audit log exactly as 'upgrader run'.",
        epilog="""plan and approval:
  An approval signs one plan. Either give the plan and approval your engineer sent (--plan P --approval A), or
  let the guide make the plan here (--package PKG, or --catalog CAT --to VERSION): it is kept in
  HOME/guide/plans/<digest>.json and the guide stops (exit 4) so you can send it to the engineer. When the
  approval comes back, run the same command again with --approval A: the guide finds the plan it names.

questions and --yes:
  Every question has a safe default ([y/N] means No). --yes answers for a script: use the one install found
  (several or none: exit 2, give --install-dir), business data backed up: yes, open access for the engineer:
  no, stop the service and upgrade: yes. Refusals (policy, approval, service window) are never overridden.

Ctrl-C and a lost terminal:
  Before the service is stopped, Ctrl-C (or answering no) changes nothing: exit 130. After it was stopped, Ctrl-C
  cancels at the next safe point and the old version is restored (exit 1); a second Ctrl-C does not abandon the
  rollback. If the terminal is lost (SIGHUP) during the run, it goes on to its end with output only in the
  journal and audit log; 'upgrader resume RUN_ID' finishes a run whose guide was killed. Before the run, a lost
  terminal changes nothing: exit 129.

exit codes: 0 upgraded, 1 failed or cancelled after stop and rolled back, 2 bad input, 3 refused by the version
policy, 4 approval missing or invalid or outside the service window, 5 needs a person, 129/130 see above""")
    guide.add_argument("--install-dir", metavar="DIR", help="the product's install directory (default: look in "
                       "/opt/*, /opt/*/*, /usr/local/*, /srv/*, /app/*, /data/*, ~/*, or env UPGRADER_SEARCH_PATH, "
                       "then ask)")
    guide.add_argument("--package", metavar="PKG", help="the package to install; it must be listed in the signed "
                       "catalog of its directory (or --catalog)")
    guide.add_argument("--catalog", metavar="CAT", help="the vendor's signed catalog (directory or catalog.yaml)")
    guide.add_argument("--to", metavar="VERSION", help="with --catalog: the version to upgrade to")
    guide.add_argument("--approval", metavar="APPROVAL", help="the approval file your engineer sent")
    guide.add_argument("--plan", metavar="PLAN", help="the plan file your engineer sent (default: the plan the "
                       "guide made earlier that the approval names)")
    guide.add_argument("--lang", choices=("zh", "en"), help="language (default: from LC_ALL, LC_MESSAGES, LANG: "
                       "zh* is Chinese, else English)")
    guide.add_argument("--yes", action="store_true", help="non-interactive: answer as described below")
    guide.add_argument("--playbook", metavar="P", help="the product's playbook (name or file), when not found by "
                       "the product's files")
    guide.add_argument("--inventory", metavar="INV", help="an inventory that lists this host (address: local) "
                       "with its variables and maintenance contract")
    guide.add_argument("--var", action="append", metavar="NAME=VALUE", help="a playbook variable of this install, "
                       "e.g. http_port=8089 (repeatable)")
    guide.add_argument("--policy", help="policy YAML (default: HOME/policy.yaml if present, else the shipped one)")
    guide.add_argument("--audit-key", metavar="KEY", help="your SSH key that signs the audit checkpoint")
    guide.set_defaults(func="guide:cmd_guide")

    run = sub.add_parser("run", help="execute a plan",
                         description="Run the plan's phases on every host: preflight, backup, stop, install, start, "
                                     "observe; roll back automatically on failure.")
    run.add_argument("plan")
    run.add_argument("--approval", action="append", default=[], metavar="APPROVAL",
                     help="an engineer's approval of this plan (repeat when the policy needs several)")
    run.add_argument("--catalog", metavar="CAT", help="where the packages are, if not where the plan says")
    run.add_argument("--policy", help="policy YAML (default: HOME/policy.yaml, else /etc/upgrader/policy.yaml, else the shipped one); never taken from the plan")
    run.add_argument("--batch", metavar="N|P%", help="hosts per rolling batch, a number or a percentage "
                     "(default: all at once, bounded by --forks)")
    run.add_argument("--canary", type=int, default=0, metavar="N",
                     help="upgrade the first N hosts alone first; the rest waits for a confirmation or --yes")
    run.add_argument("--max-failures", metavar="N|P%", help="once more than N hosts (or P%% of them) failed over the "
                     "whole run, start no new host (default: no limit)")
    run.add_argument("--forks", type=int, default=10, metavar="N", help="hosts worked on at once (default 10)")
    run.add_argument("--yes", action="store_true", help="continue after a successful canary without asking")
    run.add_argument("--break-lock", action="store_true", help=_BREAK_LOCK_HELP)
    run.add_argument("--dry-run", action="store_true",
                     help="check everything and read every host (read-only: version, lock, disk, host key, package); "
                          "print the exact commands, probes and host order; touch nothing; exit 5 if a host is not "
                          "ready or unreachable")
    run.add_argument("--audit-key", metavar="KEY", help="your SSH key that signs the audit checkpoint "
                     "(default: env UPGRADER_AUDIT_KEY, HOME/keys/operator, ~/.ssh/id_*)")
    run.add_argument("--obfuscate", action="store_true", help=_OBFUSCATE_HELP)
    run.add_argument("--json", action="store_true")
    run.add_argument("--events", metavar="FILE|-", help=_EVENTS_HELP)
    run.set_defaults(func="upgrade:cmd_run")

    resume = sub.add_parser("resume", help="finish what an interrupted run left",
                            description="Read the run journal and each host's own state, then finish what a killed "
                                        "run left: hosts before stop are released untouched, hosts stopped, mid-install "
                                        "or mid-start are rolled back (or completed, if the playbook says "
                                        "on_resume: complete), hosts done stay done. Running it twice changes "
                                        "nothing the second time.")
    resume.add_argument("run_id", metavar="RUN_ID")
    resume.add_argument("--hosts", metavar="PATTERN")
    resume.add_argument("--audit-key", metavar="KEY", help="your SSH key that signs the audit checkpoint")
    resume.add_argument("--policy", help="policy YAML (default: HOME/policy.yaml, else /etc/upgrader/policy.yaml, else the shipped one); never taken from the plan")
    resume.add_argument("--yes", action="store_true",
                        help="go on with the hosts that wait after a successful canary, without asking")
    resume.add_argument("--break-lock", action="store_true", help=_BREAK_LOCK_HELP)
    resume.add_argument("--obfuscate", action="store_true", help=_OBFUSCATE_HELP)
    resume.add_argument("--json", action="store_true")
    resume.add_argument("--events", metavar="FILE|-", help=_EVENTS_HELP)
    resume.set_defaults(func="upgrade:cmd_resume")

    rollback = sub.add_parser("rollback", help="restore the backup of a past run",
                              description="Restore each host of run RUN_ID from its verified backup, start the old "
                                          "version and observe it. Before any host is stopped its state is read: a "
                                          "host a later run changed since is refused (exit 5, naming that run: roll "
                                          "it back first); a host where RUN_ID is already undone is left as it is "
                                          "(nothing to do). Running it twice changes nothing the second time. "
                                          "Configuration edited since the upgrade is named before the stop and kept "
                                          "aside (the path is printed after). The policy's window.rollback says "
                                          "whether the service window applies (default any_time).",
                              epilog="exit codes: 0 every host restored (or nothing to do), 2 bad input or more than "
                                     "one host without --yes and without a terminal, 4 outside the service window "
                                     "(window.rollback: like_run), 5 a host needs a person or was changed by a "
                                     "later run")
    rollback.add_argument("run_id", metavar="RUN_ID")
    rollback.add_argument("--hosts", metavar="PATTERN")
    rollback.add_argument("--batch", metavar="N|P%", help="hosts rolled back at a time (default: all at once)")
    rollback.add_argument("--max-failures", metavar="N|P%", help="once more than N hosts (or P%%) failed to roll "
                          "back, stop no further host (default: no limit)")
    rollback.add_argument("--yes", action="store_true",
                          help="do not ask before stopping the service (on a terminal it asks first; without one, a single "
                               "host goes ahead and more than one host needs --yes)")
    rollback.add_argument("--break-lock", action="store_true", help=_BREAK_LOCK_HELP)
    rollback.add_argument("--audit-key", metavar="KEY", help="your SSH key that signs the audit checkpoint")
    rollback.add_argument("--policy", help="policy YAML (default: HOME/policy.yaml, else /etc/upgrader/policy.yaml, else the shipped one); never taken from the plan")
    rollback.add_argument("--obfuscate", action="store_true", help=_OBFUSCATE_HELP)
    rollback.add_argument("--json", action="store_true")
    rollback.add_argument("--events", metavar="FILE|-", help=_EVENTS_HELP)
    rollback.set_defaults(func="upgrade:cmd_rollback")
    status = sub.add_parser("status", help="per host: version, lock and its holder, runs that need a person",
                            description="Read every host (read-only): the version it runs, the lock and who holds it "
                                        "(run, user, machine, since when), and every run of this machine that left "
                                        "the host interrupted, needing a person or waiting after a canary, with the "
                                        "command that resolves it. Without --inventory: the hosts of this machine's "
                                        "runs. Changes nothing.",
                            epilog="exit codes: 0 every host reachable, unlocked and nothing waits for a person; "
                                   "2 bad input; 5 a host is locked, unreachable or needs a person")
    status.add_argument("--inventory", metavar="INV")
    status.add_argument("--hosts", metavar="PATTERN")
    status.add_argument("--json", action="store_true")
    status.add_argument("--lang", choices=("zh", "en"), help="language of the output (default: from the locale)")
    status.set_defaults(func="status:cmd_status")
    diag = sub.add_parser(
        "diagnostics", help="(re)build the diagnostics bundle of a run, to send to support",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Write RUN_ID's diagnostics bundle (a .tar.gz, default HOME/runs/RUN_ID/diagnostics-RUN_ID.tar.gz): "
                    "the run journal, plan and results, per host the phase records and probe results, versions, "
                    "platform facts (as upgrader inspect collects them), configuration digests (sha256, size, "
                    "mtime; the text only of the files the playbook's inspect.configs names, never key stores, "
                    "keys, licences or security/), and the last lines of the product's logs, with a manifest.json "
                    "(sha256 and collector of every file) and the incident's severity level. Passwords, secrets, "
                    "tokens, keys, cookies, authorization headers and credentials in URLs and command lines are "
                    "replaced by *** everywhere. run, resume and rollback write it by themselves when a host fails "
                    "(not when the operator cancelled: that is no incident).",
        epilog="severity levels, by the customer's state after the run: 1 the service is down, cannot start, keeps "
               "crashing or\ncannot reach its data source; 2 it serves but core functions are badly degraded or "
               "unstable; 3 the upgrade\nfailed and was rolled back and the old version is healthy (a workaround "
               "exists); 4 a minor loss or a warning\nonly. Respond within the policy's severity.response_hours "
               "(default 2, 4, 8, 48 h); first call-back within\n1 h, 2 h, 4 h, 8 h; initial action plan within 2 h, "
               "4 h, 1 and 2 working days. Levels 1-2: 7x24 when\nbooked; 3-4: weekdays 09:00-18:00 Beijing time.\n\nexit codes: 0 written, "
               "2 no such run or the file cannot be written")
    diag.add_argument("run_id", metavar="RUN_ID")
    diag.add_argument("--obfuscate", action="store_true",
                      help="also replace host names (short and qualified, any case, each host's own hostname), "
                           "their domains, IPv4 and IPv6 addresses (host1, domain1, ip-1, ip6-1, ...); the key is "
                           "written beside the bundle, never into it")
    diag.add_argument("--domain", action="append", default=[], metavar="DOMAIN",
                      help="with --obfuscate: also replace this domain wherever it appears (db.DOMAIN, "
                           "ops@DOMAIN); repeatable")
    diag.add_argument("-o", "--output", metavar="FILE", help="where to write the .tar.gz")
    diag.add_argument("--json", action="store_true")
    diag.add_argument("--lang", choices=("zh", "en"), help="language of the output (default: from the locale)")
    diag.set_defaults(func="diagnostics:cmd_diagnostics")
    return p


def _resolve(spec: str) -> Callable[[argparse.Namespace], int]:
    import importlib

    module, name = spec.split(":")
    return getattr(importlib.import_module(f".commands.{module}", __package__), name)  # type: ignore[no-any-return]


#: ``plan SUB`` forms that are commands of their own (``plan`` itself takes only options)
_PLAN_SUBCOMMANDS = {"show": "plan-show", "digest": "plan-digest"}


def _route(argv: list[str]) -> list[str]:
    """``[global options] plan show|digest ...`` -> ``[global options] plan-show|plan-digest ...``."""
    i = 0
    while i < len(argv) and argv[i].startswith("-"):
        i += 2 if argv[i] == "--home" else 1
    if i + 1 < len(argv) and argv[i] == "plan" and argv[i + 1] in _PLAN_SUBCOMMANDS:
        return argv[:i] + [_PLAN_SUBCOMMANDS[argv[i + 1]]] + argv[i + 2:]
    return argv


def main(argv: Sequence[str] | None = None, *, clock: Clock | None = None) -> int:
    """Run one command; ``clock`` replaces the system's clock for programs that drive the CLI in-process."""
    parser = build_parser()
    try:
        args = parser.parse_args(_route(list(sys.argv[1:] if argv is None else argv)))
    except SystemExit as e:  # argparse: usage errors exit 2, --help exits 0
        return int(e.code or 0)
    if not getattr(args, "func", None):
        parser.print_help()
        return ExitCode.BAD_INPUT if args.command is None and argv else ExitCode.OK
    args.clock = clock
    try:
        args.home = Path(args.home or _default_home())
        return int(_resolve(args.func)(args))
    except UpgraderError as e:
        if args.debug:
            traceback.print_exc()
        from .commands.error_lines import localized_error_lines

        for line in localized_error_lines(args, e):
            print(line, file=sys.stderr)
        print(f"upgrader: error: {e}", file=sys.stderr)
        return int(e.exit_code)
    except KeyboardInterrupt:
        print("upgrader: interrupted", file=sys.stderr)
        return 130
    except Exception:  # noqa: BLE001 - an internal error: say so, keep the traceback in a file
        fd, path = tempfile.mkstemp(prefix="upgrader-crash-", suffix=".txt")
        with os.fdopen(fd, "w") as f:
            traceback.print_exc(file=f)
        if args.debug:
            traceback.print_exc()
        print(f"upgrader: internal error (a bug in upgrader, not in your input); traceback written to {path}",
              file=sys.stderr)
        return 70
