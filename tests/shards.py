"""Split the suite's test files into shards of about equal time, for tests/run.sh.

The whole suite runs as several pytest processes side by side (one per shard, each in its own mount
namespace with its own /etc/upgrader), because most of its time is spent waiting: on services that
start and stop, on SSH sessions, on a JVM, on observation windows. Each shard gets whole files, so a
file's module and session fixtures are built once, as in a single run.

The split is the longest-processing-time rule over each file's seconds in tests/durations.json (what a
whole run measured, written by the conftest's recorder to test-artifacts/durations.json; copy it over to
refresh). A file the record does not know counts as the median file, so a new test file is still placed.
The split is deterministic: the same files and record give the same shards.

    python tests/shards.py COUNT INDEX   # the files of shard INDEX (1-based) of COUNT, one per line
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent
RECORD = TESTS / "durations.json"


def test_files() -> list[str]:
    """Every test file of the suite, as pytest is given it (relative to the repository)."""
    return sorted(f"tests/{p.name}" for p in TESTS.glob("test_*.py"))


def recorded_seconds() -> dict[str, float]:
    try:
        data = json.loads(RECORD.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): float(v) for k, v in data.items()} if isinstance(data, dict) else {}


def split(files: list[str], seconds: dict[str, float], count: int) -> list[list[str]]:
    """``files`` in ``count`` shards: the longest file first, each to the shard with the least time so far."""
    known = [seconds[f] for f in files if f in seconds]
    default = statistics.median(known) if known else 1.0
    weight = {f: seconds.get(f, default) for f in files}
    shards: list[list[str]] = [[] for _ in range(count)]
    loads = [0.0] * count
    for f in sorted(files, key=lambda f: (-weight[f], f)):
        i = loads.index(min(loads))
        shards[i].append(f)
        loads[i] += weight[f]
    return [sorted(s) for s in shards]


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not all(a.isdigit() for a in argv) or not 1 <= int(argv[1]) <= int(argv[0]):
        print("usage: python tests/shards.py COUNT INDEX  (1 <= INDEX <= COUNT)", file=sys.stderr)
        return 2
    count, index = int(argv[0]), int(argv[1])
    print("\n".join(split(test_files(), recorded_seconds(), count)[index - 1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
