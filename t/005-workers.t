# Sharing across workers: many requests on several workers make one token
# request.  nginx itself makes the concurrency: an SSI page includes N
# subrequests, each proxied over its own connection to a second server{}
# listening with "reuseport", so the kernel spreads them over the workers;
# the API location there tags each request with its worker's pid
# (X-Worker), and the mock counts the distinct ones.

use Test::Nginx::Socket 'no_plan';
use Test::DQE;

master_on();
workers(2);
worker_connections(2048);
check_accum_error_log();
no_shuffle();
run_tests();

__DATA__

=== TEST 1: 50 cold requests over 2 workers: one token request
--- http_config
    proxy_ssl_verify on;
    proxy_ssl_trusted_certificate $TEST_NGINX_DQE_CA;

    server {
        listen 127.0.0.1:$TEST_NGINX_FAN_PORT reuseport;

        location /api/ {
            dqe_oauth_server  127.0.0.1:$TEST_NGINX_DQE_PORT;
            dqe_oauth_licence 123456;
            dqe_oauth_secret  s3cr3t-pass;
            dqe_oauth_scope   client_address;
            proxy_set_header  X-Worker $pid;
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
        return 200 '<!--# include virtual="/burst50?0" -->';
    }
    location /fan/ {
        proxy_pass http://127.0.0.1:$TEST_NGINX_FAN_PORT/api/;
    }
--- request eval
["GET /__mock/reset", "GET /burst", "GET /burst", "GET /__mock/stats?reset=1"]
--- response_body_like eval
[qr/reset/,
 qr/\A(?:.*?"ok":true){50}(?!.*"ok":true)/s,
 qr/\A(?:.*?"ok":true){50}(?!.*"ok":true)/s,
 qr/"token_requests":\{"GET":0,"POST":1\}.*"api":\{"200":100,"401":0\}.*"workers_seen":2,.*"token_in_flight_max":1,/]
--- no_error_log
[error]
[alert]
--- timeout: 30



=== TEST 2: 200 cold requests at once over 2 workers: one token request
--- http_config
    proxy_ssl_verify on;
    proxy_ssl_trusted_certificate $TEST_NGINX_DQE_CA;

    server {
        listen 127.0.0.1:$TEST_NGINX_FAN_PORT reuseport;

        location /api/ {
            dqe_oauth_server  127.0.0.1:$TEST_NGINX_DQE_PORT;
            dqe_oauth_licence 123456;
            dqe_oauth_secret  s3cr3t-pass;
            dqe_oauth_scope   client_address;
            proxy_set_header  X-Worker $pid;
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
        return 200 '<!--# include virtual="/burst50?0" --><!--# include virtual="/burst50?1" --><!--# include virtual="/burst50?2" --><!--# include virtual="/burst50?3" -->';
    }
    location /fan/ {
        proxy_pass http://127.0.0.1:$TEST_NGINX_FAN_PORT/api/;
    }
--- request eval
["GET /__mock/reset", "GET /burst", "GET /burst", "GET /__mock/stats?reset=1"]
--- response_body_like eval
[qr/reset/,
 qr/\A(?:.*?"ok":true){200}(?!.*"ok":true)/s,
 qr/\A(?:.*?"ok":true){200}(?!.*"ok":true)/s,
 qr/"token_requests":\{"GET":0,"POST":1\}.*"api":\{"200":400,"401":0\}.*"workers_seen":2,.*"token_in_flight_max":1,/]
--- no_error_log
[error]
[alert]
--- timeout: 30
