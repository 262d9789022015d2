# Zone pressure: a 32k zone (the smallest, 40 sets) and 300 credential
# sets.  The least recently used entries are evicted, every request still
# gets its token, and an evicted set is served by the worker's own copy
# of its token until its refresh point: no second token request.  (The
# sets-per-zone figure, keep-warm and the per-worker backoff are checked
# in t/022-safety.t.)

use Test::Nginx::Socket 'no_plan';
use Test::DQE;

check_accum_error_log();
no_shuffle();
run_tests();

__DATA__

=== TEST 1: 300 credential sets through a 32k zone; the first again
--- log_level: info
--- http_config
    proxy_ssl_verify on;
    proxy_ssl_trusted_certificate $TEST_NGINX_DQE_CA;
    dqe_oauth_zone tiny:32k;
    dqe_oauth_server  127.0.0.1:$TEST_NGINX_DQE_PORT;
    dqe_oauth_secret  bulk-pass;
    dqe_oauth_scope   client_address;
--- config eval
CORE::join '', map {
    "    location /c/$_/ {\n"
    . "        dqe_oauth_licence " . (100000 + $_) . ";\n"
    . '        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;' . "\n"
    . "    }\n"
} 0 .. 299
--- request eval
["GET /__mock/reset", (map { "GET /c/$_/x" } 0 .. 299), "GET /c/299/y",
 "GET /c/0/y", "GET /__mock/stats?reset=1"]
--- error_code eval
[(200) x 304]
--- response_body_like eval
[qr/reset/, (map { qr/"path":"\/c\/$_\/x"/ } 0 .. 299), qr/"ok":true/,
 qr/"ok":true/,
 qr/"token_requests":\{"GET":0,"POST":300\}.*"api":\{"200":302,"401":0\}/]
--- no_error_log
[error]
[alert]
[crit]
--- timeout: 60
