#!/bin/sh
# Ask sample-middleware to stop (SIGTERM to the pid in run/server.pid) and return at once.
# It does not wait: the service removes run/server.pid when it has stopped.
cd "$(dirname "$0")/.." || exit 1
if [ -f run/server.pid ]; then
    kill -TERM "$(cat run/server.pid)" 2>/dev/null || true
fi
exit 0
