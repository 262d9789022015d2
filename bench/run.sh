#!/bin/bash
# make bench: the module's warm path against a static-header baseline, in
# one nginx (same workers, same upstream), measured with wrk in turns
# (A B A B ...) and reported as ratios.  Nothing here is a pass/fail test.
#
#   BENCH_SECONDS  seconds per wrk run        (default 5)
#   BENCH_ROUNDS   rounds of A and B          (default 3)
#   BENCH_CONNS    concurrent connections     (default 50)

set -euo pipefail
cd "$(dirname "$0")/.."

top=$PWD
out=$top/bench/out
nginx=${NGINX:-/usr/sbin/nginx}
module=${DQE_MODULE:-$top/build/objs/ngx_http_dqe_oauth_module.so}
secs=${BENCH_SECONDS:-5}
rounds=${BENCH_ROUNDS:-3}
conns=${BENCH_CONNS:-50}

# below the ephemeral range, so that no outgoing connection can take it
free_port() {
    python3 - <<'PY'
import random, socket
while True:
    port = random.randrange(20000, 30000)
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        continue
    finally:
        s.close()
    print(port)
    break
PY
}

rm -rf "$out"
mkdir -p "$out/conf" "$out/logs"

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 -days 1 \
    -keyout "$out/key.pem" -out "$out/cert.pem" >/dev/null 2>&1

python3 t/dqe_mock.py --listen 127.0.0.1:0 --tls-cert "$out/cert.pem" \
    --tls-key "$out/key.pem" --quiet >"$out/mock.out" 2>&1 &
mock=$!

cleanup() {
    "$nginx" -p "$out/" -c "$out/conf/nginx.conf" -s stop 2>/dev/null || true
    kill "$mock" 2>/dev/null || true
}
trap cleanup EXIT

for _ in $(seq 100); do
    grep -q READY "$out/mock.out" && break
    sleep 0.1
done
dqe=$(sed -n 's/^READY port=\([0-9]*\).*/\1/p' "$out/mock.out")

static_port=$(free_port)
dqe_port=$(free_port)
backend_port=$(free_port)

cat >"$out/conf/nginx.conf" <<CONF
load_module $module;
worker_processes 2;
pid logs/nginx.pid;
error_log logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    proxy_ssl_verify on;
    proxy_ssl_trusted_certificate $out/cert.pem;

    upstream backend {
        server 127.0.0.1:$backend_port;
        keepalive 64;
    }

    # the API stand-in: both variants proxy here
    server {
        listen 127.0.0.1:$backend_port;
        location / { return 200 "ok\n"; }
    }

    # A: what one would write without the module
    server {
        listen 127.0.0.1:$static_port;
        location / {
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Authorization "Bearer TKstatic0123456789abcdef0123456789abcdef0";
            proxy_pass http://backend;
        }
    }

    # B: the module, token cached
    server {
        listen 127.0.0.1:$dqe_port;
        location / {
            dqe_oauth_server  127.0.0.1:$dqe;
            dqe_oauth_licence 123456;
            dqe_oauth_secret  s3cr3t-pass;
            dqe_oauth_scope   client_address;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://backend;
        }
    }
}
CONF

"$nginx" -p "$out/" -c "$out/conf/nginx.conf"
sleep 0.5

curl -sf "http://127.0.0.1:$dqe_port/warm" >/dev/null   # fetch the token

run() {
    wrk -t2 -c"$conns" -d"${secs}s" --latency "http://127.0.0.1:$1/x" \
        >"$out/wrk.$2.$3" 2>&1
}

for i in $(seq "$rounds"); do
    run "$static_port" static "$i"
    run "$dqe_port" dqe "$i"
done

rss() {
    local master total=0
    master=$(cat "$out/logs/nginx.pid")
    for p in $(pgrep -P "$master"); do
        total=$((total + $(awk '/^VmRSS/ {print $2}' "/proc/$p/status")))
    done
    echo "$total"
}

python3 - "$out" "$rounds" "$(rss)" <<'PY'
import re, statistics, sys

out, rounds, rss = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

def ms(v):
    n, unit = re.match(r"([\d.]+)(us|ms|s)", v).groups()
    return float(n) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

def read(variant):
    rps, p50, p99, errs = [], [], [], 0
    for i in range(1, rounds + 1):
        t = open("%s/wrk.%s.%d" % (out, variant, i)).read()
        rps.append(float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1)))
        p50.append(ms(re.search(r"50%\s+(\S+)", t).group(1)))
        p99.append(ms(re.search(r"99%\s+(\S+)", t).group(1)))
        m = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
        errs += int(m.group(1)) if m else 0
    return statistics.median(rps), statistics.median(p50), \
        statistics.median(p99), errs

a, b = read("static"), read("dqe")
print("%-22s %12s %10s %10s %8s" % ("variant", "req/s", "p50 ms", "p99 ms",
                                    "non-2xx"))
for name, r in (("static header (A)", a), ("dqe_oauth, warm (B)", b)):
    print("%-22s %12.0f %10.3f %10.3f %8d" % (name, r[0], r[1], r[2], r[3]))
print()
print("ratio B/A: throughput %.3f, p50 latency %.3f, p99 latency %.3f"
      % (b[0] / a[0], b[1] / a[1], b[2] / a[2]))
print("worker RSS after the runs (both variants): %d KiB" % rss)
PY

grep -c "dqe_oauth" "$out/logs/error.log" >/dev/null 2>&1 && {
    echo "error log lines from the module:"; grep "dqe_oauth" "$out/logs/error.log" | head -5
} || true
