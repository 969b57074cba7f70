"""`upgrader keys generate PATH` writes the key where PATH says (as ``ssh-keygen -f`` users expect); a bare NAME keeps
going to HOME/keys (or --dir)."""

from __future__ import annotations

from pathlib import Path

import pytest

from upgrader.cli import main
from upgrader.trust.keys import load_private_key


def test_a_path_is_written_relative_to_the_current_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    home, work = tmp_path / "home", tmp_path / "work"
    (work / "keys").mkdir(parents=True)
    monkeypatch.chdir(work)
    assert main(["--home", str(home), "keys", "generate", "keys/vendor"]) == 0
    assert load_private_key(work / "keys" / "vendor") is not None
    pub = (work / "keys" / "vendor.pub").read_text()
    assert pub.startswith("ssh-ed25519 ") and pub.rstrip().endswith(" vendor")   # principal: the file's name
    assert not (home / "keys").exists()                                          # not HOME/keys/keys/vendor
    assert "keys/vendor" in capsys.readouterr().out


def test_a_bare_name_goes_to_home_keys_and_dir_with_a_path_is_refused(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    home = tmp_path / "home"
    monkeypatch.chdir(tmp_path)
    assert main(["--home", str(home), "keys", "generate", "engineer"]) == 0
    assert (home / "keys" / "engineer").is_file() and not (tmp_path / "engineer").exists()
    capsys.readouterr()
    assert main(["--home", str(home), "keys", "generate", "sub/eng", "--dir", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert "'sub/eng' is a path and --dir" in err and "Traceback" not in err
    assert not (tmp_path / "sub").exists() and not (tmp_path / "d").exists()
