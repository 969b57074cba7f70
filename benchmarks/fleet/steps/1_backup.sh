# backup: a gzip tarball of the whole install, named after the installed version and the time
mkdir -p "$D/backups"
ver=$(cat "$D/current/VERSION")
tar -czf "$D/backups/middleware-$ver-$(date +%Y%m%d%H%M%S%N).tar.gz" -C "$D" current
