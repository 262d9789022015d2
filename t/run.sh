#!/bin/bash
# "make run": the module in Debian's nginx, against the mock DQE server,
# with the configuration of conf.example.  "make stop" ends both.
#
#   DQE_PORT    the mock's HTTPS port          (default 18443)
#   CTL_PORT    the mock's plain control port  (default 18080)
#   NGINX_PORT  nginx's port                   (default 8080)

set -euo pipefail
cd "$(dirname "$0")/.."

top=$PWD
run=$top/run
nginx=${NGINX:-/usr/sbin/nginx}
module=${DQE_MODULE:-$top/build/objs/ngx_http_dqe_oauth_module.so}
dqe_port=${DQE_PORT:-18443}
ctl_port=${CTL_PORT:-18080}
nginx_port=${NGINX_PORT:-8080}

stop() {
    if [ -f "$run/nginx/logs/nginx.pid" ]; then
        "$nginx" -p "$run/nginx/" -c "$run/nginx/conf/nginx.conf" -s quit \
            2>/dev/null || true
    fi
    if [ -f "$run/mock.pid" ]; then
        kill "$(cat "$run/mock.pid")" 2>/dev/null || true
    fi
    for _ in $(seq 50); do
        [ -f "$run/nginx/logs/nginx.pid" ] || [ -f "$run/mock.pid" ] || break
        sleep 0.1
    done
}

start() {
    stop
    mkdir -p "$run/nginx/conf" "$run/nginx/logs"

    # a certificate for the mock, made here: nginx verifies it as DQE's
    if [ ! -s "$run/cert.pem" ]; then
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
            -nodes -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 \
            -days 30 -keyout "$run/key.pem" -out "$run/cert.pem" \
            >/dev/null 2>&1
    fi

    python3 t/dqe_mock.py --listen "127.0.0.1:$dqe_port" \
        --control "127.0.0.1:$ctl_port" \
        --tls-cert "$run/cert.pem" --tls-key "$run/key.pem" \
        --pid-file "$run/mock.pid" >"$run/mock.out" 2>"$run/mock.log" &

    for _ in $(seq 100); do
        grep -q READY "$run/mock.out" 2>/dev/null && break
        sleep 0.1
    done
    grep -q READY "$run/mock.out" || {
        echo "the mock DQE server did not start:"; cat "$run/mock.log"; exit 1
    }

    # conf.example, pointed at the mock and at the module just built
    sed -e "s|^load_module .*|load_module $module;|" \
        -e "s|dqe\.example\.com|127.0.0.1:$dqe_port|g" \
        -e "s|/etc/ssl/certs/ca-certificates.crt|$run/cert.pem|" \
        -e "s|listen  127.0.0.1:8080;|listen  127.0.0.1:$nginx_port;|" \
        -e "s|^http {|error_log logs/error.log info;\npid logs/nginx.pid;\n\nhttp {\n    access_log logs/access.log;|" \
        conf.example >"$run/nginx/conf/nginx.conf"

    "$nginx" -p "$run/nginx/" -c "$run/nginx/conf/nginx.conf" -t -q
    "$nginx" -p "$run/nginx/" -c "$run/nginx/conf/nginx.conf"

    cat <<MSG

nginx with ngx_http_dqe_oauth_module is up on 127.0.0.1:$nginx_port,
in front of the mock DQE server on 127.0.0.1:$dqe_port (https).

  try:    curl -i http://127.0.0.1:$nginx_port/api/address
          (the mock answers 200 only to a live token it issued)
  stats:  curl http://127.0.0.1:$ctl_port/__mock/stats
  logs:   $run/nginx/logs/error.log, $run/mock.log
  config: $run/nginx/conf/nginx.conf (made from conf.example)
  stop:   make stop
MSG
}

case "${1:-start}" in
    start) start ;;
    stop) stop ;;
    *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
