# Configuration errors: "nginx -t" (here: starting nginx) fails with an
# [emerg] line that names the directive and the fix.  Blocks at the end
# show the accepted shapes: parts shared from http{} or server{}, a custom
# zone, and a location that inherits a partial set without using it.

use Test::Nginx::Socket 'no_plan';
use Test::DQE;

check_accum_error_log();
no_shuffle();
run_tests();

__DATA__

=== TEST 1: a location without dqe_oauth_server
--- config
    location /api/ {
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
--- must_die
--- error_log eval
qr/\[emerg\] .*location "\/api\/" uses dqe_oauth but has no "dqe_oauth_server": set it in the location or in an enclosing server\{\} or http\{\} block, or write "dqe_oauth off;"/



=== TEST 2: a location without dqe_oauth_licence
--- config
    location /api/ {
        dqe_oauth_server  127.0.0.1:$TEST_NGINX_DQE_PORT;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
--- must_die
--- error_log eval
qr/\[emerg\] .*location "\/api\/" uses dqe_oauth but has no "dqe_oauth_licence": set it in the location or in an enclosing server\{\} or http\{\} block, or write "dqe_oauth off;"/



=== TEST 3: a location without dqe_oauth_secret
--- config
    location /api/ {
        dqe_oauth_server  127.0.0.1:$TEST_NGINX_DQE_PORT;
        dqe_oauth_licence 123456;
        dqe_oauth_scope   client_address;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
--- must_die
--- error_log eval
qr/\[emerg\] .*location "\/api\/" uses dqe_oauth but has no "dqe_oauth_secret" or "dqe_oauth_secret_file": set it in the location or in an enclosing server\{\} or http\{\} block, or write "dqe_oauth off;"/



=== TEST 4: a location without dqe_oauth_scope
--- config
    location /api/ {
        dqe_oauth_server  127.0.0.1:$TEST_NGINX_DQE_PORT;
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
--- must_die
--- error_log eval
qr/\[emerg\] .*location "\/api\/" uses dqe_oauth but has no "dqe_oauth_scope": set it in the location or in an enclosing server\{\} or http\{\} block, or write "dqe_oauth off;"/



=== TEST 5: "dqe_oauth on" alone
--- config
    location /api/ {
        dqe_oauth on;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
--- must_die
--- error_log eval
qr/\[emerg\] .*location "\/api\/" uses dqe_oauth but has no "dqe_oauth_server"/



=== TEST 6: scope with a space
--- config
    location /api/ {
        dqe_oauth_server  127.0.0.1:$TEST_NGINX_DQE_PORT;
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope "client address";
    }
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid dqe_oauth_scope "client address": a scope is made of letters, digits, "_", "." and "-", e.g. "client_address"/



=== TEST 7: scope with an ampersand
--- config
    location /api/ {
        dqe_oauth_server  127.0.0.1:$TEST_NGINX_DQE_PORT;
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope client_address&x=1;
    }
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid dqe_oauth_scope "client_address&x=1"/



=== TEST 8: empty licence
--- config
    location /api/ {
        dqe_oauth_server  127.0.0.1:$TEST_NGINX_DQE_PORT;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        dqe_oauth_licence "";
    }
--- must_die
--- error_log eval
qr/\[emerg\] .*"dqe_oauth_licence" must not be empty/



=== TEST 9: secret with a control character
--- config
    location /api/ {
        dqe_oauth_server  127.0.0.1:$TEST_NGINX_DQE_PORT;
        dqe_oauth_licence 123456;
        dqe_oauth_scope   client_address;
        dqe_oauth_secret "a\tb";
    }
--- must_die
--- error_log eval
qr/\[emerg\] .*"dqe_oauth_secret" must not contain control characters/



=== TEST 10: duplicate directive
--- config
    location /api/ {
        dqe_oauth_server  127.0.0.1:$TEST_NGINX_DQE_PORT;
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        dqe_oauth_licence 654321;
    }
--- must_die
--- error_log eval
qr/\[emerg\] .*"dqe_oauth_licence" directive is duplicate/



=== TEST 11: server with a path
--- config
    location /api/ {
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        dqe_oauth_server 127.0.0.1:$TEST_NGINX_DQE_PORT/oauth/access_token/;
    }
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid dqe_oauth_server "127.0.0.1:\d+\/oauth\/access_token\/": give host\[:port\] without a path, the module requests \/oauth\/access_token\/ itself/



=== TEST 12: server with another scheme
--- config
    location /api/ {
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        dqe_oauth_server ftp://127.0.0.1;
    }
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid dqe_oauth_server "ftp:\/\/127.0.0.1": the scheme must be https:\/\/ \(the default\) or http:\/\//



=== TEST 13: server with a bad port
--- config
    location /api/ {
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        dqe_oauth_server 127.0.0.1:99999;
    }
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid dqe_oauth_server "127.0.0.1:99999": invalid port/



=== TEST 14: unknown method
--- config
    location /api/ {
        dqe_oauth_server  127.0.0.1:$TEST_NGINX_DQE_PORT;
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        dqe_oauth_method put;
    }
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid dqe_oauth_method "put": use "post" \(the default\) or "get"/



=== TEST 15: error status out of range
--- config
    location /api/ {
        dqe_oauth_server  127.0.0.1:$TEST_NGINX_DQE_PORT;
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        dqe_oauth_error_status 404;
    }
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid dqe_oauth_error_status "404": use a code from 500 to 599/



=== TEST 16: error status above 599
--- config
    location /api/ {
        dqe_oauth_server  127.0.0.1:$TEST_NGINX_DQE_PORT;
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        dqe_oauth_error_status 600;
    }
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid dqe_oauth_error_status "600": use a code from 500 to 599/



=== TEST 17: bad expiry margin
--- config
    location /api/ {
        dqe_oauth_server  127.0.0.1:$TEST_NGINX_DQE_PORT;
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        dqe_oauth_expiry_margin soon;
    }
--- must_die
--- error_log eval
qr/\[emerg\] .*"dqe_oauth_expiry_margin" directive invalid value/



=== TEST 18: refresh ahead out of range
--- config
    location /api/ {
        dqe_oauth_server  127.0.0.1:$TEST_NGINX_DQE_PORT;
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        dqe_oauth_refresh_ahead 95%;
    }
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid dqe_oauth_refresh_ahead "95%": use a share of the token lifetime from 0% to 90% \(e.g. 20%\), a time \(e.g. 30s\), or "off"/



=== TEST 19: zone without a size
--- http_config
    dqe_oauth_zone tokens;
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid dqe_oauth_zone "tokens": use NAME:SIZE, e.g. "dqe_oauth:1m"/



=== TEST 20: zone with a bad size
--- http_config
    dqe_oauth_zone tokens:lots;
--- must_die
--- error_log eval
qr/\[emerg\] .*invalid dqe_oauth_zone size "lots": use a size such as 1m or 512k/



=== TEST 21: zone too small
--- http_config
    dqe_oauth_zone tokens:4k;
--- must_die
--- error_log eval
qr/\[emerg\] .*dqe_oauth_zone "tokens" is too small: give it at least 32k/



=== TEST 22: zone declared twice
--- http_config
    dqe_oauth_zone tokens:1m;
    dqe_oauth_zone other:1m;
--- must_die
--- error_log eval
qr/\[emerg\] .*"dqe_oauth_zone" directive is duplicate/



=== TEST 23: zone in a server block
--- config
    dqe_oauth_zone tokens:1m;
--- must_die
--- error_log eval
qr/\[emerg\] .*"dqe_oauth_zone" directive is not allowed here/



=== TEST 24: zone name clashing with another module's zone
--- http_config
    limit_req_zone $binary_remote_addr zone=shared:1m rate=1r/s;
    dqe_oauth_zone shared:1m;
--- must_die
--- error_log eval
qr/\[emerg\] .*the shared memory zone "shared" is already declared for a different use/



=== TEST 25: token server name that does not resolve
--- config
    location /api/ {
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        dqe_oauth_server no-such-host.invalid;
    }
--- must_die
--- error_log eval
qr/\[emerg\] .*host not found in upstream "no-such-host.invalid"/



=== TEST 26: server and secret shared from http{}, the rest per location
--- http_config
    proxy_ssl_verify on;
    proxy_ssl_trusted_certificate $TEST_NGINX_DQE_CA;
    dqe_oauth_zone    tokens:64k;
    dqe_oauth_server  127.0.0.1:$TEST_NGINX_DQE_PORT;
    dqe_oauth_secret  s3cr3t-pass;
--- config
    location /api/ {
        dqe_oauth_licence 123456;
        dqe_oauth_scope   client_address;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
    location /plain/ {
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT/api/;
    }
--- request eval
["GET /__mock/reset", "GET /api/x", "GET /plain/x", "GET /__mock/stats?reset=1"]
--- error_code eval
[200, 200, 401, 200]
--- response_body_like eval
[qr/reset/, qr/"ok":true/, qr/invalid_token/,
 qr/"token_requests":\{"GET":0,"POST":1\}.*"api":\{"200":1,"401":1\}/]
--- no_error_log
[error]
[emerg]



=== TEST 27: server-level credentials, used by every location of the server
--- config
    dqe_oauth_server  127.0.0.1:$TEST_NGINX_DQE_PORT;
    dqe_oauth_licence 654321;
    dqe_oauth_secret  other-pass;
    dqe_oauth_scope   client_b2b;

    location /api/ {
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
--- request eval
["GET /__mock/reset", "GET /api/x", "GET /__mock/stats?reset=1"]
--- response_body_like eval
[qr/reset/, qr/"scope":"client_b2b"/, qr/"POST":1/]
--- no_error_log
[error]
