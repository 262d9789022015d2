#!/bin/bash
# Runs the Test::Nginx suite in t/.  Uses the real Test::Nginx::Socket when
# it is installed (unless DQE_BUNDLED_RUNNER=1), else the bundled subset in
# t/runner.  Arguments go to prove (e.g. a single t/NNN-*.t file).
set -euo pipefail
cd "$(dirname "$0")/.."

inc=(-I t/lib)
if [ -n "${DQE_BUNDLED_RUNNER:-}" ] \
   || ! perl -MTest::Nginx::Socket -e 1 2>/dev/null; then
    inc+=(-I t/runner)
fi

export TEST_NGINX_BINARY="${TEST_NGINX_BINARY:-/usr/sbin/nginx}"

# a free port below the ephemeral range rather than Test::Nginx's 1984, so
# that runs from two trees (make mutate, a second checkout) do not collide
if [ -z "${TEST_NGINX_PORT:-}" ]; then
    TEST_NGINX_PORT=$(python3 t/free_port.py)
    export TEST_NGINX_PORT
fi

if [ $# -eq 0 ]; then
    set -- -r t/
fi

exec prove "${inc[@]}" "$@"
