#!/usr/bin/env bash
# Builds Debian's Redis VERSION source (checked against SHA256) into DIR once; extra
# arguments go to make (MALLOC=libc, say). Used by setup.sh (Redis 8) and memcheck.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
version=$1 sha256=$2 dir=$3
shift 3
[ -x "$dir/src/redis-server" ] && exit 0
echo "building Redis $version into $dir (once, a few minutes)"
mkdir -p .tools
tarball=.tools/redis_$version.orig.tar.gz
curl -fsS -m 300 -o "$tarball" "http://deb.debian.org/debian/pool/main/r/redis/redis_$version.orig.tar.gz"
echo "$sha256  $tarball" | sha256sum -c --quiet
rm -rf "$dir" && mkdir -p "$dir"
tar -xzf "$tarball" -C "$dir" --strip-components=1
make -C "$dir" -j2 BUILD_TLS=no "$@" >/dev/null
