#!/bin/bash
# Adds deb-src entries for Debian's own archive, derived from the machine's
# own apt sources (the same mirror, local or proxied, the same suites and
# keys), so that "apt-get source nginx" works wherever "apt-get install"
# does.  Nothing is written if a deb-src entry is there already.
#
#   bash .ci/deb-src.sh        (as root; run apt-get update afterwards)
set -euo pipefail

out=/etc/apt/sources.list.d/debian-src.sources

if grep -rqs '^Types:.*deb-src' /etc/apt/sources.list.d/ \
   || grep -qs '^deb-src' /etc/apt/sources.list; then
    exit 0
fi

list=/etc/apt/sources.list.d/debian-src.list
rm -f "$out" "$list"

# deb822 stanzas (paragraphs separated by blank lines) whose Types has
# "deb" and whose Suites name a Debian release: the others (a vendor's
# repository) need not carry sources
for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk -v RS= -v ORS='\n\n' '
        /(^|\n)Types:[^\n]*(^| )deb( |\n|$)/ &&
        /(^|\n)Suites:[^\n]*(bookworm|trixie|bullseye|stable|sid)/ {
            gsub(/(^|\n)#[^\n]*/, "")
            sub(/(^|\n)?Types:[^\n]*/, "Types: deb-src")
            sub(/^\n/, "")
            print
        }' "$f" >> "$out"
done

# one-line style: "deb [opts] URI suite components" as "deb-src ..."
if [ -f /etc/apt/sources.list ]; then
    sed -n 's/^[[:space:]]*deb[[:space:]]/deb-src /p' /etc/apt/sources.list \
        | grep -E ' (bookworm|trixie|bullseye|stable|sid)' > "$list" || true
fi

[ -s "$out" ] || rm -f "$out"
[ -s "$list" ] || rm -f "$list"

if [ ! -e "$out" ] && [ ! -e "$list" ]; then
    echo ".ci/deb-src.sh: no Debian 'deb' entry in apt's sources" >&2
    exit 1
fi
