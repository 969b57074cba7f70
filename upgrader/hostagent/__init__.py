"""The host-side agent: performs one phase action on the host it runs on.

Standard library only and compatible with Python 3.8, because it runs on remote hosts with their
``python3``. It reaches a host as one file: the controller packs this package into a zip application
(``upgrader/fleet/transport/bundle.py``, built at run time, its sha256 naming the cached copy) that
the host's ``python3`` runs. The controller sends one JSON request (base64 in ``argv[1]``, or on
stdin; or one per line with ``--serve``) and reads one JSON reply on stdout; the agent never decides
*whether* to act (the engine does), only *how*, always re-reading the real state of the host first
so every action is safe to repeat.

Layout it keeps beside the install dir, on the same file system (renames and hard links are
then atomic and free): ``<parent>/.upgrader-<name>/``
    lock                    who holds the host (run, controller, user, time)
    installed.json          manifest of the product files the last install put in place (and its product)
    packages/<sha256>.tar.gz  packages already on the host (sent once)
    runs/<run>/state.json   how far this run got on this host
    runs/<run>/package.tar.gz  the verified copy that is extracted (never the original)
    runs/<run>/staging/     the new tree, built before stop
    runs/<run>/backup/      hard-link snapshot of the product files, copies of preserved config,
                            manifest.json with every file's sha256, mode, owner
    runs/<run>/old/         the previous tree after the swap (removed when the run ends)

Modules, each importing only those listed before it:
    common       the format number, the fault point, AgentError
    files        durable-file helpers (no link followed, JSON written atomically, digests)
    beneath      paths beneath a root, opened from directory descriptors
    state        the state dir and a run's state in it
    manifests    a product tree file by file; staged tree, backup snapshot and its verification
    processes    commands, pids, ports, the ``process:`` selector
    versions     the installed version
    ledger       used approvals, catalog serials, the last install's manifest
    tarheaders   a package opened with tarfile, its header parse bounded (extended headers, sparse maps)
    extract      tar safety
    probes       health probes
    facts, lock, receive, recovery, prepare, service (stop, start, hooks), install, rollback, finish,
    access, inspection, config_vars      the actions
    main         requests in, replies out (the table of actions, the action lock, the session)

tarfile, subprocess and urllib are imported where they are used: most actions need none of them, and
the agent starts once per session.

What it deliberately does not do: read YAML, talk to other hosts, decide policy, write the
run journal or the audit log (the controller does).
"""
