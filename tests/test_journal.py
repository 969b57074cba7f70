"""The run journal: sequence numbers, checksums, and what survives a torn or corrupted file."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from upgrader.core.errors import InputError
from upgrader.core.journal import Journal, read_journal

T0 = dt.datetime(2026, 11, 26, 10, 15, tzinfo=dt.timezone.utc)


def clock() -> dt.datetime:
    return T0


def journal_with(run_dir: Path, n: int) -> Journal:
    j = Journal(run_dir, clock)
    for i in range(n):
        j.record("backup" if i % 2 else "preflight", "intent" if i % 2 else "done", host="app-01", step=i)
    return j


def test_records_carry_consecutive_seq_and_a_checksum(tmp_path):
    """Each line holds the record with seq 1..n and a hex checksum; read_journal returns them all in order."""
    j = journal_with(tmp_path / "run", 4)
    lines = j.path.read_text().splitlines()
    assert len(lines) == 4
    for i, line in enumerate(lines, 1):
        outer = json.loads(line)
        assert outer["rec"]["seq"] == i
        assert len(outer["crc"]) == 16 and int(outer["crc"], 16) >= 0
    records = list(read_journal(j.path))
    assert [r.seq for r in records] == [1, 2, 3, 4]
    assert [r.data["step"] for r in records] == [0, 1, 2, 3]
    assert records[0].host == "app-01" and records[0].phase == "preflight" and records[0].event == "done"
    assert records[0].time.startswith("2026-11-26T10:15:00")


def test_checksum_changes_with_the_record(tmp_path):
    """Two records that differ only in their data carry different checksums."""
    j = journal_with(tmp_path / "run", 0)
    j.record("stop", "intent", host="a")
    j.record("stop", "intent", host="b")
    a, b = (json.loads(x) for x in j.path.read_text().splitlines())
    assert a["crc"] != b["crc"]


def test_torn_last_line_is_ignored_by_read_journal(tmp_path):
    """A last line cut off mid-write (no newline) is not part of the valid prefix."""
    j = journal_with(tmp_path / "run", 3)
    full = j.path.read_bytes()
    extra = Journal(tmp_path / "other", clock).record("install", "intent", host="app-01")
    assert extra.seq == 1
    torn = (tmp_path / "other" / "journal.jsonl").read_bytes()
    j.path.write_bytes(full + torn[: len(torn) // 2])
    assert [r.seq for r in read_journal(j.path)] == [1, 2, 3]


def test_torn_last_line_is_truncated_when_the_journal_is_reopened(tmp_path):
    """Reopening a journal cuts the torn tail off and continues with the next sequence number."""
    run = tmp_path / "run"
    j = journal_with(run, 3)
    valid = j.path.read_bytes()
    j.path.write_bytes(valid + b'{"rec": {"seq": 4, "time": "2026-11-26T10:1')
    reopened = Journal(run, clock)
    assert reopened.path.read_bytes() == valid
    rec = reopened.record("install", "done", host="app-01")
    assert rec.seq == 4
    assert [r.seq for r in read_journal(reopened.path)] == [1, 2, 3, 4]


def test_complete_last_line_with_bad_checksum_is_truncated_on_reopen(tmp_path):
    """A whole last line whose checksum does not match is dropped on reopen like a torn one."""
    run = tmp_path / "run"
    j = journal_with(run, 2)
    valid = j.path.read_bytes()
    j.path.write_bytes(valid + b'{"crc": "0000000000000000", "rec": {"seq": 3}}\n')
    reopened = Journal(run, clock)
    assert reopened.path.read_bytes() == valid
    assert reopened.record("stop", "intent").seq == 3


def test_corrupted_middle_record_ends_the_valid_prefix(tmp_path):
    """An altered record in the middle stops read_journal there: later records are not trusted."""
    j = journal_with(tmp_path / "run", 4)
    lines = j.path.read_text().splitlines(keepends=True)
    assert '"step": 1' in lines[1]
    lines[1] = lines[1].replace('"step": 1', '"step": 7')
    j.path.write_text("".join(lines))
    assert [r.seq for r in read_journal(j.path)] == [1]


def test_out_of_sequence_record_ends_the_valid_prefix(tmp_path):
    """A valid record repeated (seq 2 after seq 2) ends the prefix: sequence numbers must grow by one."""
    j = journal_with(tmp_path / "run", 3)
    lines = j.path.read_text().splitlines(keepends=True)
    j.path.write_text(lines[0] + lines[1] + lines[1] + lines[2])
    assert [r.seq for r in read_journal(j.path)] == [1, 2]


def test_read_journal_of_missing_file_is_input_error(tmp_path):
    """Reading the journal of a run that does not exist is an InputError naming the file."""
    with pytest.raises(InputError) as e:
        list(read_journal(tmp_path / "nope" / "journal.jsonl"))
    assert "journal.jsonl" in str(e.value)


def test_write_replaces_a_state_file_whole(tmp_path):
    """Journal.write replaces a JSON file atomically: the new content, no temp file left behind."""
    j = journal_with(tmp_path / "run", 0)
    j.write("result.json", {"exit_code": 1})
    path = j.write("result.json", {"exit_code": 0})
    assert json.loads(path.read_text()) == {"exit_code": 0}
    assert sorted(p.name for p in j.dir.iterdir()) == ["result.json"]


def test_readable_json_is_json_for_any_keys_json_accepts() -> None:
    """Top-level keys that are not strings are written as json.dumps writes them ("1", "true", "null")."""
    from upgrader.core.plan import readable_json

    for data in ({1: "a", "b": [1, 2]}, {True: 1, None: 2, 1.5: [3]}, {"x": {2: 3}}, {}, [1, {"a": 2}], "text"):
        assert json.loads(readable_json(data)) == json.loads(json.dumps(data))
