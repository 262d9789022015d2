# Freshness: renewal ahead of the cutoff (in the background, with DQE's
# refresh_token flow, falling back to the licence and secret), backoff
# when DQE fails, and the 401 purge.  Lifetimes are shortened at the mock
# (/__mock/config?ttl=N) and time passes with /__mock/sleep.

use Test::Nginx::Socket 'no_plan';
use Test::DQE;

worker_connections(1024);
check_accum_error_log();
no_shuffle();
run_tests();

__DATA__

=== TEST 1: renewal ahead of the cutoff uses the refresh token, no 401
--- config
    location /api/ {
        dqe_oauth_server  127.0.0.1:$TEST_NGINX_DQE_PORT;
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
--- request eval
["GET /__mock/reset", "GET /__mock/config?ttl=5", "GET /api/1",
 "GET /__mock/sleep?s=3.1", "GET /api/2", "GET /__mock/sleep?s=0.5",
 "GET /api/3", "GET /api/4", "GET /__mock/stats?reset=1"]
--- response_body_like eval
[qr/reset/, qr/"ttl":\s*5/, qr/"ok":true/, qr/slept/, qr/"ok":true/,
 qr/slept/, qr/"ok":true/, qr/"ok":true/,
 qr/"token_requests":\{"GET":0,"POST":2\}.*"tokens_issued":2,"refresh_requests":1,"refresh_ok":1,"api":\{"200":4,"401":0\}/]
--- no_error_log
[error]
[warn]
--- timeout: 15



=== TEST 2: dqe_oauth_refresh_token off: renewals use the licence and secret
--- config
    location /api/ {
        dqe_oauth_server  127.0.0.1:$TEST_NGINX_DQE_PORT;
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        dqe_oauth_refresh_token off;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
--- request eval
["GET /__mock/reset", "GET /__mock/config?ttl=5", "GET /api/1",
 "GET /__mock/sleep?s=3.1", "GET /api/2", "GET /__mock/sleep?s=0.5",
 "GET /api/3", "GET /__mock/stats?reset=1"]
--- response_body_like eval
[qr/reset/, qr/"ttl":\s*5/, qr/"ok":true/, qr/slept/, qr/"ok":true/,
 qr/slept/, qr/"ok":true/,
 qr/"token_requests":\{"GET":0,"POST":2\}.*"tokens_issued":2,"refresh_requests":0,.*"api":\{"200":3,"401":0\}/]
--- no_error_log
[error]
[warn]
--- timeout: 15



=== TEST 3: a refused refresh token falls back to the licence and secret
--- config
    location /api/ {
        dqe_oauth_server  127.0.0.1:$TEST_NGINX_DQE_PORT;
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
--- request eval
["GET /__mock/reset", "GET /__mock/config?ttl=5&refresh_ttl=1", "GET /api/1",
 "GET /__mock/sleep?s=3.1", "GET /api/2", "GET /__mock/sleep?s=0.5",
 "GET /api/3", "GET /__mock/stats?reset=1"]
--- response_body_like eval
[qr/reset/, qr/"refresh_ttl":\s*1/, qr/"ok":true/, qr/slept/,
 qr/"ok":true/, qr/slept/, qr/"ok":true/,
 qr/"token_requests":\{"GET":0,"POST":3\}.*"invalid_grant":1\}.*"tokens_issued":2,"refresh_requests":1,"refresh_ok":0,"api":\{"200":3,"401":0\}/]
--- no_error_log
[error]
[warn]
--- timeout: 15



=== TEST 4: past the cutoff, a refresh token still young enough is used
--- config
    location /api/ {
        dqe_oauth_server  127.0.0.1:$TEST_NGINX_DQE_PORT;
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        dqe_oauth_refresh_ahead off;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
--- request eval
["GET /__mock/reset", "GET /__mock/config?ttl=2", "GET /api/1",
 "GET /__mock/sleep?s=2.1", "GET /api/2", "GET /__mock/stats?reset=1"]
--- response_body_like eval
[qr/reset/, qr/"ttl":\s*2/, qr/"ok":true/, qr/slept/, qr/"ok":true/,
 qr/"token_requests":\{"GET":0,"POST":2\}.*"tokens_issued":2,"refresh_requests":1,"refresh_ok":1,"api":\{"200":2,"401":0\}/]
--- no_error_log
[error]
--- timeout: 15



=== TEST 5: token server failing under 200 requests: one token request, fail fast, recovery
--- http_config
    proxy_ssl_verify on;
    proxy_ssl_trusted_certificate $TEST_NGINX_DQE_CA;

    server {
        listen 127.0.0.1:$TEST_NGINX_FAN_PORT;

        location /api/ {
            dqe_oauth_server  127.0.0.1:$TEST_NGINX_DQE_PORT;
            dqe_oauth_licence 123456;
            dqe_oauth_secret  s3cr3t-pass;
            dqe_oauth_scope   client_address;
            proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
        }
    }
--- config
    location = /burst50 {
        default_type text/html;
        ssi on;
        return 200 '<!--# include virtual="/fan/1" --><!--# include virtual="/fan/2" --><!--# include virtual="/fan/3" --><!--# include virtual="/fan/4" --><!--# include virtual="/fan/5" --><!--# include virtual="/fan/6" --><!--# include virtual="/fan/7" --><!--# include virtual="/fan/8" --><!--# include virtual="/fan/9" --><!--# include virtual="/fan/10" --><!--# include virtual="/fan/11" --><!--# include virtual="/fan/12" --><!--# include virtual="/fan/13" --><!--# include virtual="/fan/14" --><!--# include virtual="/fan/15" --><!--# include virtual="/fan/16" --><!--# include virtual="/fan/17" --><!--# include virtual="/fan/18" --><!--# include virtual="/fan/19" --><!--# include virtual="/fan/20" --><!--# include virtual="/fan/21" --><!--# include virtual="/fan/22" --><!--# include virtual="/fan/23" --><!--# include virtual="/fan/24" --><!--# include virtual="/fan/25" --><!--# include virtual="/fan/26" --><!--# include virtual="/fan/27" --><!--# include virtual="/fan/28" --><!--# include virtual="/fan/29" --><!--# include virtual="/fan/30" --><!--# include virtual="/fan/31" --><!--# include virtual="/fan/32" --><!--# include virtual="/fan/33" --><!--# include virtual="/fan/34" --><!--# include virtual="/fan/35" --><!--# include virtual="/fan/36" --><!--# include virtual="/fan/37" --><!--# include virtual="/fan/38" --><!--# include virtual="/fan/39" --><!--# include virtual="/fan/40" --><!--# include virtual="/fan/41" --><!--# include virtual="/fan/42" --><!--# include virtual="/fan/43" --><!--# include virtual="/fan/44" --><!--# include virtual="/fan/45" --><!--# include virtual="/fan/46" --><!--# include virtual="/fan/47" --><!--# include virtual="/fan/48" --><!--# include virtual="/fan/49" --><!--# include virtual="/fan/50" -->';
    }
    location = /burst {
        default_type text/html;
        ssi on;
        return 200 '<!--# include virtual="/burst50?1" --><!--# include virtual="/burst50?2" --><!--# include virtual="/burst50?3" --><!--# include virtual="/burst50?4" -->';
    }
    location /fan/ {
        proxy_pass http://127.0.0.1:$TEST_NGINX_FAN_PORT/api/;
    }
--- request eval
["GET /__mock/reset", "GET /__mock/fault?status=500&body=oops", "GET /burst",
 "GET /burst", "GET /__mock/fault?clear=1", "GET /__mock/sleep?s=1.2",
 "GET /fan/x", "GET /__mock/stats?reset=1"]
--- response_body_like eval
[qr/reset/, qr/"status":\s*500/,
 qr/\A(?:.*?502 Bad Gateway){200}(?!.*502 Bad Gateway)(?!.*"ok":true)/s,
 qr/\A(?:.*?502 Bad Gateway){200}(?!.*502 Bad Gateway)(?!.*"ok":true)/s,
 qr/null/, qr/slept/, qr/"ok":true/,
 qr/"token_requests":\{"GET":0,"POST":2\},"token_status":\{"200":1,"400":0,"500":1\}.*"api":\{"200":1,"401":0\}/]
--- timeout: 15



=== TEST 6: retry off: a 401 from the API drops the token; the next request gets another
--- config
    location /api/ {
        dqe_oauth_server  127.0.0.1:$TEST_NGINX_DQE_PORT;
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        dqe_oauth_retry_on_401 off;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
--- request eval
["GET /__mock/reset", "GET /api/1", "GET /__mock/revoke", "GET /api/2",
 "GET /api/3", "GET /api/4", "GET /__mock/stats?reset=1"]
--- error_code eval
[200, 200, 200, 401, 200, 200, 200]
--- response_body_like eval
[qr/reset/, qr/"ok":true/, qr/"revoked":1/, qr/invalid_token/, qr/"ok":true/,
 qr/"ok":true/, qr/"tokens_issued":2,.*"api":\{"200":3,"401":1\}/]
--- no_error_log
[error]



=== TEST 7: retry on (the default): the request that got the 401 is sent again with a new token
--- config
    location /api/ {
        dqe_oauth_server  127.0.0.1:$TEST_NGINX_DQE_PORT;
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        add_header X-DQE-Status $dqe_oauth_status always;
        add_header X-Upstream-Status $upstream_status always;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
--- request eval
["GET /__mock/reset", "GET /api/1", "GET /__mock/revoke", "GET /api/2",
 "GET /api/3", "GET /__mock/stats?reset=1"]
--- error_code eval
[200, 200, 200, 200, 200, 200]
--- response_headers eval
["", "X-DQE-Status: MISS", "", "X-DQE-Status: RETRY\nX-Upstream-Status: 401 : 200",
 "X-DQE-Status: HIT\nX-Upstream-Status: 200", ""]
--- response_body_like eval
[qr/reset/, qr/"ok":true/, qr/"revoked":1/, qr/"ok":true,"path":"\/api\/2"/,
 qr/"ok":true/, qr/"tokens_issued":2,.*"api":\{"200":3,"401":1\}/]
--- no_error_log
[error]



=== TEST 8: backoff for refused credentials is longer: 10 s
--- config
    location /api/ {
        dqe_oauth_server  127.0.0.1:$TEST_NGINX_DQE_PORT;
        dqe_oauth_licence 999999;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
--- request eval
["GET /api/1", "GET /__mock/sleep?s=1.2", "GET /api/2", "GET /api/3",
 "GET /__mock/stats?reset=1"]
--- error_code eval
[502, 200, 502, 502, 200]
--- response_body_like eval
[qr/502/, qr/slept/, qr/502/, qr/502/,
 qr/"token_requests":\{"GET":0,"POST":1\}/]
--- error_log eval
[qr/\[error\] .*DQE answered 400 invalid_client .*; next token request in 10000 ms/]
