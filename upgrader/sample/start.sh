#!/bin/sh
# Start sample-middleware in the background, fully detached from the caller, and return at once.
# The service writes run/server.pid once it listens; whoever started it waits for that (or the port).
# Set PYTHON to choose the interpreter (default: python3 on PATH).
cd "$(dirname "$0")/.." || exit 1
mkdir -p logs run data || exit 1
setsid nohup "${PYTHON:-python3}" lib/server.py >> logs/console.out 2>&1 < /dev/null &
exit 0
