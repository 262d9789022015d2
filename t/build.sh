#!/bin/bash
# Builds nginx with the module from an nginx source tree, the way users
# include modules in their own builds.
#
#   t/build.sh static  [SRC] OUT    nginx with the module compiled in
#                                   (./configure --add-module): OUT/nginx
#   t/build.sh dynamic [SRC] OUT    nginx and the module beside it
#                                   (--add-dynamic-module): OUT/nginx and
#                                   OUT/ngx_http_dqe_oauth_module.so
#
# SRC: an nginx source directory or release tarball.  Without it, Debian's
# own source of the installed nginx: "apt-get source --download-only nginx"
# (needs a deb-src entry in apt's sources; see the README), unpacked with
# Debian's patches when their tarball is there.  Configure flags: the
# tree's Debian conf_flags if it has them, else Debian's nginx-dev ones
# (/usr/share/nginx/src/conf_flags), else a minimal set; CC_OPT adds
# compiler flags.
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
mode=${1:?usage: t/build.sh static|dynamic [SRC] OUT}
shift

if [ $# -eq 2 ]; then
    src=$1
    out=$2
else
    src=
    out=${1:?usage: t/build.sh static|dynamic [SRC] OUT}
fi

mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$out/src

# --- the source tree ------------------------------------------------------

debian_source() {
    local dl=$top/build/debian-source

    mkdir -p "$dl"

    if ! ls "$dl"/nginx_*.debian.tar.xz >/dev/null 2>&1; then
        # the newest version's files may be missing from a mirror (seen:
        # a security update's); the first version whose files all come
        # wins, the upstream tarball alone will do
        for v in $(apt-cache showsrc nginx 2>/dev/null \
                   | awk '/^Version:/ { print $2 }' | sort -rV); do
            (cd "$dl" && apt-get source -qq --download-only "nginx=$v") \
                >/dev/null 2>&1 && break
            rm -f "$dl"/*.dsc "$dl"/*.debian.tar.xz
        done
    fi

    if ! ls "$dl"/nginx_*.orig.tar.gz >/dev/null 2>&1; then
        echo "t/build.sh: no nginx source: add a deb-src entry to apt's" \
             "sources (see the README) and run apt-get update, or give" \
             "an nginx source directory or tarball" >&2
        exit 1
    fi

    echo "$dl"
}

rm -rf "$work"

if [ -z "$src" ]; then
    dl=$(debian_source)
    mkdir -p "$work"
    tar xzf "$(ls "$dl"/nginx_*.orig.tar.gz | tail -1)" -C "$work" \
        --strip-components=1

    deb=$(ls "$dl"/nginx_*.debian.tar.xz 2>/dev/null | tail -1 || true)

    if [ -n "$deb" ]; then
        tar xJf "$deb" -C "$work"
        if [ -f "$work/debian/patches/series" ]; then
            while read -r p _; do
                case "$p" in ''|'#'*) continue ;; esac
                patch -d "$work" -p1 -s < "$work/debian/patches/$p"
            done < "$work/debian/patches/series"
        fi
        echo "source: $(basename "$deb") over the upstream tarball"
    else
        echo "source: $(ls "$dl"/nginx_*.orig.tar.gz | tail -1 | xargs basename)" \
             "(Debian's patches not downloadable)"
    fi

elif [ -d "$src" ]; then
    cp -r "$src" "$work"
    echo "source: $src"

else
    mkdir -p "$work"
    tar xzf "$src" -C "$work" --strip-components=1
    echo "source: $src"
fi

# release tarballs have ./configure, repository trees auto/configure

if [ -x "$work/configure" ]; then
    configure=./configure
else
    configure=auto/configure
fi

# --- configure and build ---------------------------------------------------

if [ -f "$work/conf_flags" ]; then
    source "$work/conf_flags"
elif [ -f /usr/share/nginx/src/conf_flags ]; then
    source /usr/share/nginx/src/conf_flags
else
    NGX_CONF_FLAGS=(--with-compat --with-debug --with-threads
                    --with-http_ssl_module --with-http_v2_module
                    --with-http_auth_request_module --with-http_realip_module
                    --with-http_stub_status_module)
fi

case "$mode" in
    static)  add=--add-module=$top ;         target=binary ;;
    dynamic) add=--add-dynamic-module=$top ; target=build ;;
    *) echo "usage: t/build.sh static|dynamic [SRC] OUT" >&2; exit 2 ;;
esac

cd "$work"

$configure "${NGX_CONF_FLAGS[@]}" \
    --with-cc-opt="-g -O2 -Werror ${CC_OPT:-}" \
    --builddir="$out/objs" "$add" >"$out/configure.log" 2>&1 || {
        tail -20 "$out/configure.log" >&2
        exit 1
    }

make -f "$out/objs/Makefile" -j"$(nproc)" "$target" >"$out/make.log" 2>&1 || {
    grep -E "error|warning" "$out/make.log" | head -20 >&2
    exit 1
}

cp "$out/objs/nginx" "$out/nginx"
"$out/nginx" -V 2>&1 | head -1
echo "built $out/nginx"

if [ "$mode" = dynamic ]; then
    cp "$out/objs/ngx_http_dqe_oauth_module.so" "$out/"
    echo "built $out/ngx_http_dqe_oauth_module.so"
fi
