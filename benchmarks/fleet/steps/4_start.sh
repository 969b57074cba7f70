# start: the server detached from the session (its own session, no inherited descriptors), pid in run/server.pid
cd "$D"
setsid sh -c 'echo $$ > run/server.pid; exec python3 -m http.server "$P" --bind 127.0.0.1 --directory "$D/current"' \
  > run/server.log 2>&1 < /dev/null &
