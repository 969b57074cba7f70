# observe: poll /VERSION every 0.1 s (10 s at most) until it answers 2.0, then record it in version.txt
tries=0
until [ "$(curl -sf "http://127.0.0.1:$P/VERSION" 2>/dev/null)" = "2.0" ]; do
  tries=$((tries + 1))
  [ "$tries" -le 100 ] || { echo "observe: http://127.0.0.1:$P/VERSION does not answer 2.0 after 10 s" >&2; false; }
  sleep 0.1
done
echo 2.0 > "$D/version.txt"
