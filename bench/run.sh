#!/bin/bash
# make bench: the module's warm path against a static-header baseline, in
# one nginx (same workers, same upstream), reported as ratios B/A:
#
#   - wrk in turns (A B A B ...), with 1, 2 and 4 workers: throughput and
#     latency;
#   - valgrind's callgrind: instructions per request, the whole nginx
#     process (client, proxy and the upstream it proxies to, all in one),
#     as the difference between a run of N and one of 3N requests, so
#     that start-up and the token fetch cancel out.  It does not depend
#     on the machine's load, unlike wrk.
#
# Nothing here is a pass/fail test.
#
#   BENCH_SECONDS  seconds per wrk run        (default 5)
#   BENCH_ROUNDS   rounds of A and B          (default 3)
#   BENCH_CONNS    concurrent connections     (default 50)
#   BENCH_WORKERS  worker counts for wrk      (default "1 2 4")
#   BENCH_CALLS    N for callgrind            (default 2000; 0: skip it)

set -euo pipefail
cd "$(dirname "$0")/.."

top=$PWD
out=$top/bench/out
nginx=${NGINX:-/usr/sbin/nginx}
module=${DQE_MODULE:-$top/build/objs/ngx_http_dqe_oauth_module.so}
secs=${BENCH_SECONDS:-5}
rounds=${BENCH_ROUNDS:-3}
conns=${BENCH_CONNS:-50}
worker_counts=${BENCH_WORKERS:-1 2 4}
calls=${BENCH_CALLS:-2000}

free_port() { python3 t/free_port.py; }

rm -rf "$out"
mkdir -p "$out/conf" "$out/logs"

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 -days 1 \
    -keyout "$out/key.pem" -out "$out/cert.pem" >/dev/null 2>&1

python3 t/dqe_mock.py --listen 127.0.0.1:0 --tls-cert "$out/cert.pem" \
    --tls-key "$out/key.pem" --fault-listen 127.0.0.1:0=delay=6 \
    --quiet >"$out/mock.out" 2>&1 &
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
slow=$(sed -n 's/^READY .*faults=\([0-9]*\).*/\1/p' "$out/mock.out")

static_port=$(free_port)
dqe_port=$(free_port)
backend_port=$(free_port)
probe_port=$(free_port)

# the configuration: $1 workers, $2 master process and daemon (on|off)
write_conf() {
cat >"$out/conf/nginx.conf" <<CONF
load_module $module;
worker_processes $1;
master_process $2;
daemon $2;
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

    # the waiters' probes: a DQE that answers in 6 s
    server {
        listen 127.0.0.1:$probe_port;
        location / {
            dqe_oauth_server  127.0.0.1:$slow;
            dqe_oauth_licence 100001;
            dqe_oauth_secret  bulk-pass;
            dqe_oauth_scope   client_address;
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
}

run() {
    wrk -t2 -c"$conns" -d"${secs}s" --latency "http://127.0.0.1:$1/x" \
        >"$out/wrk.$2.$3" 2>&1
}

rss() {
    local master total=0
    master=$(cat "$out/logs/nginx.pid")
    for p in $(pgrep -P "$master"); do
        total=$((total + $(awk '/^VmRSS/ {print $2}' "/proc/$p/status")))
    done
    echo "$total"
}

for w in $worker_counts; do
    write_conf "$w" on
    "$nginx" -p "$out/" -c "$out/conf/nginx.conf"
    sleep 0.5

    curl -sf "http://127.0.0.1:$dqe_port/warm" >/dev/null   # the token

    for i in $(seq "$rounds"); do
        run "$static_port" static "$w.$i"
        run "$dqe_port" dqe "$w.$i"
    done

    rss >"$out/rss.$w"
    "$nginx" -p "$out/" -c "$out/conf/nginx.conf" -s quit
    for _ in $(seq 100); do
        [ -f "$out/logs/nginx.pid" ] || break
        sleep 0.1
    done
done

# callgrind: one nginx process, no master, N then 3N keep-alive requests
# to one variant; instructions per request = the difference / 2N

callgrind() {   # port variant count
    local pid
    write_conf 1 off
    valgrind --tool=callgrind --callgrind-out-file="$out/cg.$2.$3" \
        "$nginx" -p "$out/" -c "$out/conf/nginx.conf" \
        >"$out/cg.$2.$3.log" 2>&1 &
    pid=$!

    for _ in $(seq 300); do
        curl -sf -o /dev/null "http://127.0.0.1:$1/warm" && break
        sleep 0.1
    done

    python3 - "$1" "$3" <<'PY'
import http.client, sys
port, n = int(sys.argv[1]), int(sys.argv[2])
c = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
for _ in range(n):
    c.request("GET", "/x")
    r = c.getresponse()
    r.read()
    assert r.status == 200, r.status
PY

    kill -QUIT "$pid"
    wait "$pid" || true
}

if [ "$calls" -gt 0 ] && command -v valgrind >/dev/null; then
    for n in "$calls" $((calls * 3)); do
        callgrind "$static_port" static "$n"
        callgrind "$dqe_port" dqe "$n"
    done
fi

# waiters: 300 connections (2 workers) wait for one token request that
# DQE answers in 6 s; those in the other worker check that the fetching
# worker is alive (kill(pid, 0), under the zone's lock): counted with
# strace.  0.3.0 probed at every poll, about 2,800 times a second.

probes=
if command -v strace >/dev/null; then
    write_conf 2 on
    "$nginx" -p "$out/" -c "$out/conf/nginx.conf"
    sleep 0.5
    workers=$(pgrep -P "$(cat "$out/logs/nginx.pid")" | sed 's/^/-p /')
    # shellcheck disable=SC2086
    strace -f -qq -e trace=kill -o "$out/probes.trace" $workers &
    tracer=$!
    sleep 1
    wrk -t2 -c300 -d8s "http://127.0.0.1:$probe_port/x" >"$out/wrk.probe" 2>&1
    kill -INT "$tracer" 2>/dev/null || true
    wait "$tracer" 2>/dev/null || true
    probes=$(grep -c 'kill([0-9]*, 0)' "$out/probes.trace" || true)
    "$nginx" -p "$out/" -c "$out/conf/nginx.conf" -s quit
    for _ in $(seq 100); do
        [ -f "$out/logs/nginx.pid" ] || break
        sleep 0.1
    done
fi

python3 - "$out" "$rounds" "$worker_counts" "$calls" <<'PY'
import os, re, statistics, sys

out, rounds, counts, calls = sys.argv[1], int(sys.argv[2]), \
    sys.argv[3].split(), int(sys.argv[4])

def ms(v):
    n, unit = re.match(r"([\d.]+)(us|ms|s)", v).groups()
    return float(n) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

def read(variant, w):
    rps, p50, p99, errs = [], [], [], 0
    for i in range(1, rounds + 1):
        t = open("%s/wrk.%s.%s.%d" % (out, variant, w, i)).read()
        rps.append(float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1)))
        p50.append(ms(re.search(r"^\s+50%\s+(\S+)", t, re.M).group(1)))
        p99.append(ms(re.search(r"^\s+99%\s+(\S+)", t, re.M).group(1)))
        m = re.search(r"Non-2xx or 3xx responses: (\d+)", t)
        errs += int(m.group(1)) if m else 0
    return statistics.median(rps), statistics.median(p50), \
        statistics.median(p99), errs

print("%-8s %-22s %12s %10s %10s %8s" % ("workers", "variant", "req/s",
                                         "p50 ms", "p99 ms", "non-2xx"))
ratios = []
for w in counts:
    a, b = read("static", w), read("dqe", w)
    for name, r in (("static header (A)", a), ("dqe_oauth, warm (B)", b)):
        print("%-8s %-22s %12.0f %10.3f %10.3f %8d"
              % (w, name, r[0], r[1], r[2], r[3]))
    ratios.append((w, b[0] / a[0], b[1] / a[1], b[2] / a[2]))
    rss = int(open("%s/rss.%s" % (out, w)).read())
print()
for w, t, p50, p99 in ratios:
    print("ratio B/A, %s worker(s): throughput %.3f, p50 latency %.3f, "
          "p99 latency %.3f" % (w, t, p50, p99))
print("worker RSS after the runs with %s workers (both variants): %d KiB"
      % (counts[-1], rss))

def instructions(variant, n):
    t = open("%s/cg.%s.%d" % (out, variant, n)).read()
    return int(re.search(r"^summary:\s+(\d+)", t, re.M).group(1))

if calls and os.path.exists("%s/cg.static.%d" % (out, calls)):
    per = {}
    for v in ("static", "dqe"):
        per[v] = (instructions(v, calls * 3) - instructions(v, calls)) \
            / (2.0 * calls)
    print()
    print("callgrind, instructions per request (whole process, %d vs %d "
          "requests):" % (calls, calls * 3))
    print("  static header (A) %10.0f" % per["static"])
    print("  dqe_oauth, warm (B) %8.0f" % per["dqe"])
    print("ratio B/A: instructions %.4f" % (per["dqe"] / per["static"]))
PY

if [ -n "$probes" ]; then
    echo
    echo "300 waiters on 2 workers, DQE answering in 6 s: $probes probes of" \
         "the fetching worker (kill(pid, 0)), about $(( (probes + 5) / 6 ))" \
         "a second (0.3.0: about 2,800 a second)"
fi

grep -c "dqe_oauth" "$out/logs/error.log" >/dev/null 2>&1 && {
    echo "error log lines from the module:"; grep "dqe_oauth" "$out/logs/error.log" | head -5
} || true
