#!/bin/bash
# What the token requests' TLS contexts cost at configuration time:
# "nginx -t" with N servers (default 300), each proxying to DQE over https
# and, with the module, writing its own dqe_oauth_server; prints the wall
# time and the peak RSS of the process (GNU time), the configuration
# being what a master holds.
#
#   bench/contexts.sh NGINX MODULE.so|static|none [N]
#
# none: plain proxies, the baseline.  The trusted CA bundle is Debian's
# (ca-certificates): each TLS context loads it.
set -euo pipefail

nginx=${1:?usage: bench/contexts.sh NGINX MODULE.so|static|none [N]}
module=${2:?usage: bench/contexts.sh NGINX MODULE.so|static|none [N]}
n=${3:-300}

dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
mkdir -p "$dir/conf" "$dir/logs"

{
    case "$module" in
        none|static) ;;
        *) echo "load_module $module;" ;;
    esac

    echo "events { }"
    echo "http {"
    echo "    proxy_ssl_verify on;"
    echo "    proxy_ssl_trusted_certificate /etc/ssl/certs/ca-certificates.crt;"

    for i in $(seq "$n"); do
        echo "    server {"
        echo "        listen 127.0.0.1:$((20000 + i));"
        if [ "$module" != none ]; then
            echo "        dqe_oauth_server 127.0.0.1:8443;"
            echo "        dqe_oauth_licence 123456;"
            echo "        dqe_oauth_secret s3cr3t-pass;"
            echo "        dqe_oauth_scope client_address;"
        fi
        echo "        location / { proxy_pass https://127.0.0.1:8443; }"
        echo "    }"
    done

    echo "}"
} > "$dir/conf/nginx.conf"

/usr/bin/time -f "%e s, %M KB" "$nginx" -p "$dir/" -c conf/nginx.conf -t -q
