#!/bin/bash
# the venv's upgrader under GNU time: wall, user, sys (children included: the local agent) per command
exec /usr/bin/time -a -o "$TIMELOG" -f "%e %U %S %C" REPO/.venv/bin/upgrader "$@"
