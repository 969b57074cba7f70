# install: unpack the 2.0 release beside the install, swap the two trees by rename, delete the old one
rm -rf "$D/current.new" "$D/current.old"
mkdir "$D/current.new"
tar -xzf "$D/release/middleware-2.0.tar.gz" -C "$D/current.new" --strip-components=1
mv "$D/current" "$D/current.old"
mv "$D/current.new" "$D/current"
rm -rf "$D/current.old"
