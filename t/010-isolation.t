# The token goes to the API location that asked for it and nowhere else:
# not to an auth_request parent, not to a location reached by an internal
# redirect, not to mirror subrequests.  And the token request itself is
# verified TLS wherever dqe_oauth_server is written.

use Test::Nginx::Socket 'no_plan';
use Test::DQE;

check_accum_error_log();
no_shuffle();
run_tests();

__DATA__

=== TEST 1: auth_request to a location of ours: the token stays in the subrequest
--- config
    location /front/ {
        auth_request /api/check;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
    location = /api/check {
        internal;
        dqe_oauth_server  127.0.0.1:$TEST_NGINX_DQE_PORT;
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
--- request eval
["GET /__mock/reset", "GET /front/x", "GET /__mock/stats?reset=1"]
--- error_code eval
[200, 401, 200]
--- response_body_like eval
[qr/reset/, qr/invalid_token/,
 qr/"token_requests":\{"GET":0,"POST":1\}.*"api":\{"200":1,"401":1\}/]
--- no_error_log
[error]



=== TEST 2: auth_request with the client's own Authorization: it is kept for the parent
--- config
    location /front/ {
        auth_request /api/check;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
    location = /api/check {
        internal;
        dqe_oauth_server  127.0.0.1:$TEST_NGINX_DQE_PORT;
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
--- more_headers
Authorization: Basic YWxpY2U6cHc=
--- request eval
["GET /__mock/reset", "GET /front/x", "GET /__mock/stats?reset=1"]
--- error_code eval
[200, 401, 200]
--- response_body_like eval
[qr/reset/, qr/invalid_token/,
 qr/"api":\{"200":1,"401":1\},"api_auth_headers_last":1,"api_auth_headers_max":1/]
--- no_error_log
[error]



=== TEST 3: redirected to a location without the module: the token is taken back
--- config
    location /api/ {
        dqe_oauth_server  127.0.0.1:$TEST_NGINX_DQE_PORT;
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        error_page 502 = @plain;
        proxy_pass https://127.0.0.1:1;
    }
    location @plain {
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
--- more_headers
Authorization: Bearer client-own
--- request eval
["GET /__mock/reset", "GET /api/x", "GET /__mock/stats?reset=1"]
--- error_code eval
[200, 401, 200]
--- response_body_like eval
[qr/reset/, qr/invalid_token/,
 qr/"token_requests":\{"GET":0,"POST":1\}.*"api":\{"200":0,"401":1\},"api_auth_headers_last":1/]



=== TEST 4: redirected to a location of ours with another scope: its own token
--- config
    location /api/ {
        dqe_oauth_server  127.0.0.1:$TEST_NGINX_DQE_PORT;
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        error_page 502 = @email;
        proxy_pass https://127.0.0.1:1;
    }
    location @email {
        dqe_oauth_server  127.0.0.1:$TEST_NGINX_DQE_PORT;
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_email;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
--- request eval
["GET /__mock/reset", "GET /api/x", "GET /__mock/stats?reset=1"]
--- error_code eval
[200, 200, 200]
--- response_body_like eval
[qr/reset/, qr/"scope":"client_email"/,
 qr/"token_requests":\{"GET":0,"POST":2\}.*"api":\{"200":1,"401":0\},"api_auth_headers_last":1/]



=== TEST 5: mirror subrequests never carry the token
--- config
    location /api/ {
        dqe_oauth_server  127.0.0.1:$TEST_NGINX_DQE_PORT;
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        mirror /mirror;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
    location = /mirror {
        internal;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT/mirrored;
    }
--- request eval
["GET /__mock/reset", "GET /api/x", "GET /__mock/sleep?s=0.3",
 "GET /__mock/stats?reset=1"]
--- response_body_like eval
[qr/reset/, qr/"ok":true/, qr/slept/,
 qr/"token_requests":\{"GET":0,"POST":1\}.*"api":\{"200":1,"401":1\}/]
--- no_error_log
[error]



=== TEST 6: token server in http{}, verification only in server{}: nginx -t fails
--- http_config
    proxy_ssl_server_name on;
    dqe_oauth_server  127.0.0.1:$TEST_NGINX_DQE_PORT;
--- config
    proxy_ssl_verify on;
    proxy_ssl_trusted_certificate $TEST_NGINX_DQE_CA;

    location /api/ {
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
--- must_die
--- error_log eval
qr/\[emerg\] .*dqe_oauth: the token requests to "https:\/\/127.0.0.1:\d+" would not verify the server's certificate, and they carry the secret: write "proxy_ssl_verify on;" and "proxy_ssl_trusted_certificate" in the server\{\} or http\{\} where dqe_oauth_server is written/



=== TEST 7: verification in http{}, trusted certificate only in server{}: nginx -t fails
--- http_config
    proxy_ssl_verify on;
    dqe_oauth_server  127.0.0.1:$TEST_NGINX_DQE_PORT;
--- config
    proxy_ssl_trusted_certificate $TEST_NGINX_DQE_CA;

    location /api/ {
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
--- must_die
--- error_log eval
[qr/\[emerg\] .*no proxy_ssl_trusted_certificate for proxy_ssl_verify/,
 qr/\[emerg\] .*dqe_oauth: the token requests to "https:\/\/127.0.0.1:\d+" cannot be set up: see the line before; they take proxy_\* settings from the server\{\} or http\{\} where dqe_oauth_server is written, and always verify the server's certificate \(proxy_ssl_trusted_certificate\)/]



=== TEST 8: plain http token server: no verification needed
--- http_config
    proxy_ssl_server_name on;
    dqe_oauth_server  http://127.0.0.1:$TEST_NGINX_DQE_CTL_PORT;
--- config
    location /api/ {
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        return 200 "configured\n";
    }
--- request
GET /api/x
--- response_body
configured



=== TEST 9: a server value that would extend the proxy_pass is refused
--- config
    location /api/ {
        dqe_oauth_server  "127.0.0.1 proxy_set_body x";
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
    }
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid dqe_oauth_server "127.0.0.1 proxy_set_body x": a host name or address, with an optional port, is made of letters, digits/
