"""pyinfra deploy: the five steps as five server.shell operations run by bash (pyinfra runs each
operation on every host before the next one). The step texts are read from ../steps; each is
prefixed with "set -e; export D=... P=..." from the host's inventory data."""

from pathlib import Path

from pyinfra import host
from pyinfra.operations import server

_steps = sorted((Path(__file__).resolve().parent.parent / "steps").glob("[0-9]_*.sh"))
_prefix = f"set -e; export D={host.data.hostdir} P={host.data.http_port}\n"

for _step in _steps:
    server.shell(name=_step.stem, commands=[_prefix + _step.read_text()], _shell_executable="bash")
