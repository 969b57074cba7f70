"""The run journal redacts every record before it is written; the seal of the run's accepted plan (an SSH signature)
must come through byte for byte. A signature's last base64 line may spell a secret-looking name before its ``=``
padding (``…GpwdEEcKH8M0PphXtDg==``): the redactor took that line for a ``key=value`` setting and masked it, the
seal no longer parsed, and ``resume``/``rollback`` refused a run nobody had touched (seen in CI: about one seal in a
thousand). Real keys, the real journal and the real seal check; the seal is searched for, not made up."""

from __future__ import annotations

import datetime as _dt
import subprocess
from pathlib import Path

from upgrader.audit.redaction import is_secret_name, redact
from upgrader.core.journal import Journal, read_journal
from upgrader.trust.keys import load_private_key
from upgrader.trust.run_seal import NAMESPACE, check_seal, seal
from upgrader.trust.signers import parse_allowed_signers

NOW = _dt.datetime(2026, 12, 4, 17, 0, tzinfo=_dt.timezone.utc)


def _secret_looking(armored: str) -> bool:
    """The seal's last base64 line reads like ``secret_name=`` to the redactor's setting rule."""
    last = armored.strip().split("\n")[-2]
    return last.endswith("=") and is_secret_name(last.rstrip("="))


def test_a_seal_whose_base64_spells_a_secret_name_survives_the_journal_and_verifies(tmp_path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "operator", "-f", str(tmp_path / "op")],
                   check=True)
    key = load_private_key(tmp_path / "op")
    fields: dict[str, object] = {"plan_digest": "ab" * 32, "hosts": ["app-01"]}
    for n in range(200_000):
        run_id = f"20261204T170000Z-{n:06x}"
        armored = seal(run_id, fields, key)
        if _secret_looking(armored):
            break
    else:
        raise AssertionError("no seal with a secret-looking last line in 200000 tries")
    assert redact(armored) == armored  # kept as it is, whatever its base64 spells
    assert redact(f"password=hunter2\n{armored}\ntoken=abc123") == f"password=***\n{armored}\ntoken=***"
    fake = "-----BEGIN SSH SIGNATURE-----\npassword=hunter2\n-----END SSH SIGNATURE-----"
    assert "hunter2" not in redact(fake)  # only base64 lines make a signature block that is kept

    journal = Journal(tmp_path / "run", lambda: NOW)
    journal.record("plan", "accepted", seal=armored, **fields)
    (rec,) = list(read_journal(journal.path))
    assert rec.data["seal"] == armored
    signers = parse_allowed_signers(
        f'operator@customer namespaces="{NAMESPACE}" ' + (tmp_path / "op.pub").read_text().split(" operator")[0],
        "allowed_signers")
    assert check_seal(journal.path, 1, run_id, rec.data, signers, NOW).startswith("SHA256:")
