#!/bin/bash
# The previous release's package (t/deb-previous), built from its commit
# the way "make deb" builds this tree's, into build/deb-previous.
set -euo pipefail
cd "$(dirname "$0")/.."

read -r version commit < <(grep -v '^#' t/deb-previous)
out=build/deb-previous

if ! git cat-file -e "$commit^{commit}" 2>/dev/null; then
    echo "t/deb-previous.sh: release $version's commit $commit is not in" \
         "this clone (a shallow one? git fetch --unshallow)" >&2
    exit 1
fi

rm -rf "$out" && mkdir -p "$out/src"
git archive "$commit" | tar xf - -C "$out/src"
(cd "$out/src" && dpkg-buildpackage -b -us -uc >../build.log 2>&1) \
    || { tail -30 "$out/build.log"; exit 1; }
ls "$out"/libnginx-mod-http-dqe-oauth_"$version"_*.deb
