# stop: signal the server named by the pid file, then wait (50 ms polls, 10 s at most) until its port is closed
if [ -f "$D/run/server.pid" ]; then kill "$(cat "$D/run/server.pid")" 2>/dev/null || true; fi
tries=0
while (exec 3<>"/dev/tcp/127.0.0.1/$P") 2>/dev/null; do
  tries=$((tries + 1))
  [ "$tries" -le 200 ] || { echo "stop: port $P still open after 10 s" >&2; false; }
  sleep 0.05
done
