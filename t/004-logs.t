# What never reaches a log: the client secret (any level, debug included,
# with the default POST method) and tokens (the module's own lines at any
# level; every log at info and above; the access log, even one that logs
# $http_authorization).  nginx core's own debug dump of the upstream
# request headers does show the Authorization header: see the README.

use Test::Nginx::Socket 'no_plan';
use Test::DQE;

check_accum_error_log();
no_shuffle();
run_tests();

__DATA__

=== TEST 1: debug log: no secret, and no token outside core's header dump
--- log_level: debug
--- config
    location /api/ {
        dqe_oauth_server  127.0.0.1:$TEST_NGINX_DQE_PORT;
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
    location /bad/ {
        dqe_oauth_server  127.0.0.1:$TEST_NGINX_DQE_PORT;
        dqe_oauth_licence 999999;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
--- request eval
["GET /api/x", "GET /api/y", "GET /bad/z", "GET /__mock/stats?reset=1"]
--- error_code eval
[200, 200, 502, 200]
--- response_body_like eval
[qr/"ok":true/, qr/"ok":true/, qr/502/, qr/"POST":2/]
--- error_log eval
[qr/\[debug\] .*dqe_oauth fetch for server/,
 qr/\[debug\] .*http proxy header: "Authorization: Bearer TK/]
--- no_error_log eval
[qr/s3cr3t/,
 qr/^(?!Authorization: Bearer TK|.*http proxy header: "Authorization: Bearer TK).*TK[0-9a-f]{40}/]



=== TEST 2: debug log with dqe_oauth_method get: the secret is in the URL
--- log_level: debug
--- config
    location /api/ {
        dqe_oauth_server  127.0.0.1:$TEST_NGINX_DQE_PORT;
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        dqe_oauth_method  get;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
--- request eval
["GET /api/x", "GET /__mock/stats?reset=1"]
--- response_body_like eval
[qr/"ok":true/, qr/"GET":1/]
--- error_log eval
[qr/client_secret=s3cr3t-pass/]



=== TEST 3: info level and the access log: no secret, no token, anywhere
--- log_level: info
--- http_config
    proxy_ssl_verify on;
    proxy_ssl_trusted_certificate $TEST_NGINX_DQE_CA;
    log_format dqe '$remote_user "$request" $status "$http_authorization" '
                   '"$sent_http_authorization" "$upstream_http_authorization" '
                   '"$request_body" "$args"';
--- config
    access_log logs/error.log dqe;

    location /api/ {
        dqe_oauth_server  127.0.0.1:$TEST_NGINX_DQE_PORT;
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
    location /bad/ {
        dqe_oauth_server  127.0.0.1:$TEST_NGINX_DQE_PORT;
        dqe_oauth_licence 222222;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
--- more_headers
Authorization: Basic YWxpY2U6cHc=
--- request eval
["GET /bad/z?q=1", "GET /api/x", "GET /api/y", "GET /__mock/stats?reset=1"]
--- error_code eval
[502, 200, 200, 200]
--- response_body_like eval
[qr/502/, qr/"ok":true/, qr/"ok":true/, qr/"POST":2/]
--- error_log eval
[qr/^alice "GET \/bad\/z\?q=1 HTTP\/1.1" 502 "Basic YWxpY2U6cHc=" "-" "-" "-" "q=1"$/,
 qr/\[error\] .*DQE answered 400 unauthorized_client/]
--- no_error_log eval
[qr/s3cr3t/, qr/TK[0-9a-f]{8}/]



=== TEST 4: the access log of a request with no Authorization: $http_authorization is "-"
--- log_level: info
--- http_config
    proxy_ssl_verify on;
    proxy_ssl_trusted_certificate $TEST_NGINX_DQE_CA;
    log_format dqe '"$request" $status "$http_authorization"';
--- config
    access_log logs/error.log dqe;

    location /api/ {
        dqe_oauth_server  127.0.0.1:$TEST_NGINX_DQE_PORT;
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
--- request eval
["GET /api/x", "GET /api/y", "GET /__mock/stats?reset=1"]
--- error_code eval
[200, 200, 200]
--- response_body_like eval
[qr/"ok":true/, qr/"ok":true/, qr/"POST":1/]
--- error_log eval
[qr/^"GET \/api\/x HTTP\/1.1" 200 "-"$/]
--- no_error_log eval
[qr/TK[0-9a-f]{8}/]
