#!/bin/bash
# Debian's own source of a package (nginx, cjson), unpacked into DIR:
# "apt-get source --download-only PACKAGE" (needs a deb-src entry in apt's
# sources: see .ci/deb-src.sh), the upstream tarball with Debian's
# patches applied when their tarball is there.  The downloads are kept in
# build/debian-source.
#
#   t/debian-source.sh PACKAGE DIR
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
pkg=${1:?usage: t/debian-source.sh PACKAGE DIR}
work=${2:?usage: t/debian-source.sh PACKAGE DIR}
dl=$top/build/debian-source

mkdir -p "$dl"

if ! ls "$dl"/${pkg}_*.debian.tar.xz >/dev/null 2>&1; then
    # the newest version's files may be missing from a mirror (seen: a
    # security update's); the first version whose files all come wins,
    # the upstream tarball alone will do
    for v in $(apt-cache showsrc "$pkg" 2>/dev/null \
               | awk '/^Version:/ { print $2 }' | sort -rV); do
        (cd "$dl" && apt-get source -qq --download-only "$pkg=$v") \
            >/dev/null 2>&1 && break
        rm -f "$dl"/*.dsc "$dl"/*.debian.tar.xz
    done
fi

orig=$(ls "$dl"/${pkg}_*.orig.tar.gz 2>/dev/null | tail -1 || true)

if [ -z "$orig" ]; then
    echo "t/debian-source.sh: no $pkg source: add a deb-src entry to apt's" \
         "sources (bash .ci/deb-src.sh) and run apt-get update" >&2
    exit 1
fi

rm -rf "$work"
mkdir -p "$work"
tar xzf "$orig" -C "$work" --strip-components=1

deb=$(ls "$dl"/${pkg}_*.debian.tar.xz 2>/dev/null | tail -1 || true)

if [ -n "$deb" ]; then
    tar xJf "$deb" -C "$work"
    if [ -f "$work/debian/patches/series" ]; then
        while read -r p _; do
            case "$p" in ''|'#'*) continue ;; esac
            patch -d "$work" -p1 -s < "$work/debian/patches/$p"
        done < "$work/debian/patches/series"
    fi
    echo "source: $(basename "$deb") over $(basename "$orig")"
else
    echo "source: $(basename "$orig") (Debian's patches not downloadable)"
fi
