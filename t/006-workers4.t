# Sharing across workers: many requests on several workers make one token
# request.  nginx itself makes the concurrency (Test::DQE::burst): an SSI
# page includes N subrequests, each proxied over its own connection to a
# second server{} (Test::DQE::fan_server) listening with "reuseport", so
# the kernel spreads them over the workers; the API location there tags
# each request with its worker's pid (X-Worker), and the mock counts the
# distinct ones.

use Test::Nginx::Socket 'no_plan';
use Test::DQE;

master_on();
workers(4);
worker_connections(2048);
check_accum_error_log();
no_shuffle();
run_tests();

__DATA__

=== TEST 1: 200 cold requests at once over 4 workers: one token request
--- http_config eval
Test::DQE::fan_server()
--- config eval
Test::DQE::burst(200)
--- request eval
["GET /__mock/reset", "GET /burst", "GET /burst", "GET /__mock/stats?reset=1"]
--- response_body_like eval
[qr/reset/,
 qr/\A(?:.*?"ok":true){200}(?!.*"ok":true)/s,
 qr/\A(?:.*?"ok":true){200}(?!.*"ok":true)/s,
 Test::DQE::stats(token_requests => { GET => 0, POST => 1 },
                  api => { 200 => 400, 401 => 0 },
                  workers_seen => 4, token_in_flight_max => 1)]
--- no_error_log
[error]
[alert]
--- timeout: 30
