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
# own source of the installed nginx (t/debian-source.sh).  Configure
# flags: the tree's Debian conf_flags if it has them, else Debian's
# nginx-dev ones (/usr/share/nginx/src/conf_flags), else a minimal set;
# CC_OPT adds compiler flags.
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

rm -rf "$work"

if [ -z "$src" ]; then
    bash "$top/t/debian-source.sh" nginx "$work"

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
"$out/nginx" -v 2>&1
echo "built $out/nginx"

if [ "$mode" = dynamic ]; then
    cp "$out/objs/ngx_http_dqe_oauth_module.so" "$out/"
    echo "built $out/ngx_http_dqe_oauth_module.so"
fi
