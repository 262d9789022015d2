# Token fetch and the Authorization header, against the mock DQE server.
#
# Blocks end with GET /__mock/stats?reset=1, so what the mock counted is
# asserted per block; most also start with GET /__mock/reset.  A block
# that expects an error line makes the failing request first: Test::Nginx
# checks error_log after every request.

use Test::Nginx::Socket 'no_plan';
use Test::DQE;

check_accum_error_log();
no_shuffle();
run_tests();

__DATA__

=== TEST 1: POST: a token is fetched and the API accepts it
--- config
    location /api/ {
        dqe_oauth_server  127.0.0.1:$TEST_NGINX_DQE_PORT;
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
--- request eval
["GET /__mock/reset", "GET /api/address", "GET /__mock/stats?reset=1"]
--- error_code eval
[200, 200, 200]
--- response_body_like eval
[qr/reset/,
 qr/^\{"ok":true,"path":"\/api\/address","scope":"client_address"\}$/,
 qr/"token_requests":\{"GET":0,"POST":1\}.*"api":\{"200":1,"401":0\}.*"last_token_params":\["client_id","client_secret","scope"\],"last_token_content_type":"application\/x-www-form-urlencoded","last_token_method":"POST"/]
--- no_error_log
[error]
[warn]



=== TEST 2: GET method sends the same fields as a query string
--- config
    location /api/ {
        dqe_oauth_server  127.0.0.1:$TEST_NGINX_DQE_PORT;
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_email;
        dqe_oauth_method  get;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
--- request eval
["GET /__mock/reset", "GET /api/email", "GET /__mock/stats?reset=1"]
--- response_body_like eval
[qr/reset/,
 qr/"scope":"client_email"/,
 qr/"token_requests":\{"GET":1,"POST":0\}.*"last_token_params":\["client_id","client_secret","scope"\]/]
--- no_error_log
[error]



=== TEST 3: a secret with reserved characters is URL-encoded
--- http_config
    proxy_ssl_verify on;
    proxy_ssl_trusted_certificate $TEST_NGINX_DQE_CA;
--- config
    location /api/ {
        dqe_oauth_server  127.0.0.1:$TEST_NGINX_DQE_PORT;
        dqe_oauth_licence 654321;
        dqe_oauth_secret  "other-pass";
        dqe_oauth_scope   client_phone;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
    location /amp/ {
        dqe_oauth_server  127.0.0.1:$TEST_NGINX_DQE_PORT;
        dqe_oauth_licence 123456;
        dqe_oauth_secret  "s3cr3t-pass&scope=client_b2b";
        dqe_oauth_scope   client_phone;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
--- request eval
["GET /amp/phone", "GET /api/phone", "GET /__mock/stats?reset=1"]
--- error_code eval
[502, 200, 200]
--- response_body_like eval
[qr/502 Bad Gateway/, qr/"scope":"client_phone"/,
 qr/"token_errors":\{"invalid_request":0,"unsupported_grant_type":0,"invalid_client":1,/]
--- error_log
DQE answered 400 invalid_client



=== TEST 4: numeric expires_in is accepted
--- config
    location /api/ {
        dqe_oauth_server  127.0.0.1:$TEST_NGINX_DQE_PORT;
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
--- request eval
["GET /__mock/reset", "GET /__mock/config?expires_in=number", "GET /api/a",
 "GET /api/b", "GET /__mock/stats?reset=1"]
--- response_body_like eval
[qr/reset/, qr/"expires_in":\s*"number"/, qr/"ok":true/, qr/"ok":true/,
 qr/"tokens_issued":1,.*"api":\{"200":2,"401":0\}/]
--- no_error_log
[error]



=== TEST 5: one token serves many requests
--- config
    location /api/ {
        dqe_oauth_server  127.0.0.1:$TEST_NGINX_DQE_PORT;
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
--- request eval
["GET /__mock/reset", (map { "GET /api/n$_" } 1 .. 20), "GET /__mock/stats?reset=1"]
--- response_body_like eval
[qr/reset/, (map { qr/"path":"\/api\/n$_"/ } 1 .. 20),
 qr/"token_requests":\{"GET":0,"POST":1\}.*"api":\{"200":20,"401":0\}/]
--- no_error_log
[error]



=== TEST 6: a new token once the old one expires
--- config
    location /api/ {
        dqe_oauth_server  127.0.0.1:$TEST_NGINX_DQE_PORT;
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
--- request eval
["GET /__mock/reset", "GET /__mock/config?ttl=2", "GET /api/1", "GET /api/2",
 "GET /__mock/sleep?s=2.2", "GET /api/3", "GET /__mock/stats?reset=1"]
--- response_body_like eval
[qr/reset/, qr/"ttl":\s*2/, qr/"ok":true/, qr/"ok":true/, qr/slept/,
 qr/"ok":true/,
 qr/"token_requests":\{"GET":0,"POST":2\}.*"tokens_issued":2,.*"api":\{"200":3,"401":0\}/]
--- no_error_log
[error]
--- timeout: 10



=== TEST 7: the client's Authorization header is replaced, never forwarded
--- config
    location /api/ {
        dqe_oauth_server  127.0.0.1:$TEST_NGINX_DQE_PORT;
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
--- more_headers
Authorization: Bearer client-own-token
--- request eval
["GET /__mock/reset", "GET /api/x", "GET /api/y", "GET /__mock/stats?reset=1"]
--- response_body_like eval
[qr/reset/, qr/"ok":true/, qr/"ok":true/,
 qr/"api":\{"200":2,"401":0\},"api_auth_headers_last":1,"api_auth_headers_max":1/]
--- no_error_log
[error]



=== TEST 8: a client's lower-case authorization header is replaced too
--- config
    location /api/ {
        dqe_oauth_server  127.0.0.1:$TEST_NGINX_DQE_PORT;
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
--- more_headers
X-Before: 1
authorization: Basic Zm9vOmJhcg==
X-After: 1
--- request eval
["GET /__mock/reset", "GET /api/x", "GET /api/y", "GET /__mock/stats?reset=1"]
--- response_body_like eval
[qr/reset/, qr/"ok":true/, qr/"ok":true/,
 qr/"api":\{"200":2,"401":0\},"api_auth_headers_last":1,"api_auth_headers_max":1/]
--- no_error_log
[error]



=== TEST 9: the token request never carries the client's headers, nor the API location's
--- config
    location /api/ {
        dqe_oauth_server  127.0.0.1:$TEST_NGINX_DQE_PORT;
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        proxy_set_header  X-Api-Only 1;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
--- more_headers
Content-Type: text/plain
X-Unknown: 1
--- request eval
["GET /__mock/reset", "POST /api/x\nhello", "GET /__mock/stats?reset=1"]
--- response_body_like eval
[qr/reset/, qr/"ok":true/,
 qr/"last_token_params":\["client_id","client_secret","scope"\],"last_token_content_type":"application\/x-www-form-urlencoded","last_token_method":"POST","last_token_headers":\["host","content-length","accept","content-type"\],"last_token_version":"HTTP\/1.1"/]
--- no_error_log
[error]



=== TEST 10: http-level credentials, inherited; a location may override them
--- http_config
    proxy_ssl_verify on;
    proxy_ssl_trusted_certificate $TEST_NGINX_DQE_CA;
    dqe_oauth_server  127.0.0.1:$TEST_NGINX_DQE_PORT;
    dqe_oauth_licence 123456;
    dqe_oauth_secret  s3cr3t-pass;
    dqe_oauth_scope   client_address;
--- config
    location /api/ {
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
    location /email/ {
        dqe_oauth_scope client_email;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
--- request eval
["GET /__mock/reset", "GET /api/x", "GET /email/x", "GET /email/y",
 "GET /__mock/stats?reset=1"]
--- response_body_like eval
[qr/reset/, qr/"scope":"client_address"/, qr/"scope":"client_email"/,
 qr/"scope":"client_email"/,
 qr/"token_requests":\{"GET":0,"POST":2\}/]
--- no_error_log
[error]



=== TEST 11: same four values in two locations share one token
--- config
    location /a/ {
        dqe_oauth_server  127.0.0.1:$TEST_NGINX_DQE_PORT;
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
    location /b/ {
        dqe_oauth_server  127.0.0.1:$TEST_NGINX_DQE_PORT;
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
    location /c/ {
        dqe_oauth_server  127.0.0.1:$TEST_NGINX_DQE_PORT;
        dqe_oauth_licence 654321;
        dqe_oauth_secret  other-pass;
        dqe_oauth_scope   client_address;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
--- request eval
["GET /__mock/reset", "GET /a/1", "GET /b/1", "GET /a/2", "GET /c/1",
 "GET /__mock/stats?reset=1"]
--- response_body_like eval
[qr/reset/, qr/"ok":true/, qr/"ok":true/, qr/"ok":true/, qr/"ok":true/,
 qr/"token_requests":\{"GET":0,"POST":2\}.*"api":\{"200":4,"401":0\}/]
--- no_error_log
[error]



=== TEST 12: dqe_oauth off in a nested location: no token, no token request
--- config
    location /api/ {
        dqe_oauth_server  127.0.0.1:$TEST_NGINX_DQE_PORT;
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;

        location /api/public/ {
            dqe_oauth off;
            proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
        }
    }
--- request eval
["GET /__mock/reset", "GET /api/public/x", "GET /api/x", "GET /__mock/stats?reset=1"]
--- error_code eval
[200, 401, 200, 200]
--- response_body_like eval
[qr/reset/, qr/invalid_token/, qr/"ok":true/,
 qr/"token_requests":\{"GET":0,"POST":1\}.*"api":\{"200":1,"401":1\}/]
--- no_error_log
[error]



=== TEST 13: the token server and the API over https with verification
--- http_config
    proxy_ssl_verify on;
    proxy_ssl_verify_depth 1;
    proxy_ssl_trusted_certificate $TEST_NGINX_DQE_CA;
    proxy_ssl_name 127.0.0.1;
--- config
    location /api/ {
        dqe_oauth_server  https://127.0.0.1:$TEST_NGINX_DQE_PORT;
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
--- request eval
["GET /__mock/reset", "GET /api/x", "GET /__mock/stats?reset=1"]
--- response_body_like eval
[qr/reset/, qr/"ok":true/, qr/"POST":1/]
--- no_error_log
[error]



=== TEST 14: an untrusted token server certificate is refused
--- http_config
    proxy_ssl_verify on;
    proxy_ssl_trusted_certificate /etc/ssl/certs/ca-certificates.crt;
--- config
    location /api/ {
        dqe_oauth_server  127.0.0.1:$TEST_NGINX_DQE_PORT;
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
--- request eval
["GET /api/x", "GET /__mock/stats?reset=1"]
--- error_code eval
[502, 200]
--- response_body_like eval
[qr/502 Bad Gateway/, qr/"token_requests":\{"GET":0,"POST":0\}/]
--- error_log
upstream SSL certificate verify error
could not connect to the token server



=== TEST 15: an upstream{} block as the token server, with keepalive
--- http_config
    proxy_ssl_verify on;
    proxy_ssl_trusted_certificate $TEST_NGINX_DQE_CA;
    proxy_ssl_name 127.0.0.1;

    upstream dqe_pool {
        server 127.0.0.1:$TEST_NGINX_DQE_PORT;
        keepalive 2;
    }
--- config
    location /api/ {
        dqe_oauth_server  dqe_pool;
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        proxy_pass https://dqe_pool;
    }
    location /email/ {
        dqe_oauth_server  dqe_pool;
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_email;
        proxy_pass https://dqe_pool;
    }
--- request eval
["GET /__mock/reset", "GET /api/x", "GET /email/x", "GET /__mock/stats?reset=1"]
--- response_body_like eval
[qr/reset/, qr/"scope":"client_address"/, qr/"scope":"client_email"/,
 qr/"token_requests":\{"GET":0,"POST":2\}/]
--- no_error_log
[error]



=== TEST 16: $dqe_oauth_status tells how each request got its token
--- config
    location /api/ {
        dqe_oauth_server  127.0.0.1:$TEST_NGINX_DQE_PORT;
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        add_header X-DQE-OAuth $dqe_oauth_status always;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
    location /bad/ {
        dqe_oauth_server  127.0.0.1:$TEST_NGINX_DQE_PORT;
        dqe_oauth_licence 999999;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        add_header X-DQE-OAuth $dqe_oauth_status always;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
    location /off/ {
        add_header X-DQE-OAuth "[$dqe_oauth_status]" always;
        return 200 ok;
    }
--- request eval
["GET /__mock/reset", "GET /api/1", "GET /api/2", "GET /bad/1", "GET /off/1",
 "GET /__mock/stats?reset=1"]
--- error_code eval
[200, 200, 200, 502, 200, 200]
--- response_headers_like eval
["", "X-DQE-OAuth: MISS", "X-DQE-OAuth: HIT", "X-DQE-OAuth: ERROR",
 "X-DQE-OAuth: \\[\\]", ""]



=== TEST 17: a client refused by access checks costs no token request
--- config
    location /api/ {
        deny all;
        dqe_oauth_server  127.0.0.1:$TEST_NGINX_DQE_PORT;
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
--- request eval
["GET /__mock/reset", "GET /api/x", "GET /__mock/stats?reset=1"]
--- error_code eval
[200, 403, 200]
--- response_body_like eval
[qr/reset/, qr/403 Forbidden/, qr/"token_requests":\{"GET":0,"POST":0\}/]
