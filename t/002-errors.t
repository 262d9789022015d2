# Every way a token request can fail gives the client a defined status
# (502 unless dqe_oauth_error_status says otherwise), a body that shows
# nothing from DQE, and one [error] line naming the credentials, the cause
# and what to check.
#
# Causes the mock DQE cannot be made to give come from a stand-in token
# endpoint in the test's own server (return CODE 'BODY'), or from the
# mock's fault listeners ($TEST_NGINX_DQE_FAULT_*).  The failing request
# comes first in each block: Test::Nginx checks error_log after each one.

use Test::Nginx::Socket 'no_plan';
use Test::DQE;

check_accum_error_log();
no_shuffle();
run_tests();

__DATA__

=== TEST 1: invalid_request (400) is named, with what to check
--- config
    location /api/ {
        dqe_oauth_server  http://127.0.0.1:$TEST_NGINX_SERVER_PORT;
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
    location = /oauth/access_token/ {
        default_type application/json;
        return 400 '{"error":"invalid_request","error_description":"client_id is empty"}';
    }
--- request eval
["GET /api/x", "GET /__mock/stats?reset=1"]
--- error_code eval
[502, 200]
--- response_body_like eval
[qr/\A(?!.*(?:TK|invalid_|Invalid|error_description|not http))(?s:.*)502/s,
 qr/"token_requests":\{"GET":0,"POST":0\}/]
--- error_log eval
[qr/dqe_oauth: no token for server "http:\/\/127.0.0.1:\d+", licence "123456", scope "client_address": DQE answered 400 invalid_request \(a field is missing or empty\): check dqe_oauth_licence, dqe_oauth_secret and dqe_oauth_scope; next token request in 10000 ms, client: 127.0.0.1/]



=== TEST 2: invalid_client: expired licence
--- config
    location /api/ {
        dqe_oauth_server  127.0.0.1:$TEST_NGINX_DQE_PORT;
        dqe_oauth_licence 999999;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
--- request eval
["GET /api/x", "GET /__mock/stats?reset=1"]
--- error_code eval
[502, 200]
--- response_body_like eval
[qr/\A(?!.*(?:TK|invalid_|Invalid|error_description|not http))(?s:.*)502/s,
 qr/"invalid_client":1,/]
--- error_log eval
[qr/no token for server "https:\/\/127.0.0.1:\d+", licence "999999", scope "client_address": DQE answered 400 invalid_client \(unknown or expired licence, or wrong secret\): check dqe_oauth_licence and dqe_oauth_secret; next token request in 10000 ms, client/]



=== TEST 3: invalid_client: unknown licence
--- config
    location /api/ {
        dqe_oauth_server  127.0.0.1:$TEST_NGINX_DQE_PORT;
        dqe_oauth_licence 000001;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
--- request eval
["GET /api/x", "GET /__mock/stats?reset=1"]
--- error_code eval
[502, 200]
--- response_body_like eval
[qr/\A(?!.*(?:TK|invalid_|Invalid|error_description|not http))(?s:.*)502/s,
 qr/"invalid_client":1,/]
--- error_log eval
[qr/licence "000001".*DQE answered 400 invalid_client/]



=== TEST 4: unauthorized_client: licence not allowed the scope
--- config
    location /api/ {
        dqe_oauth_server  127.0.0.1:$TEST_NGINX_DQE_PORT;
        dqe_oauth_licence 222222;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
--- request eval
["GET /api/x", "GET /__mock/stats?reset=1"]
--- error_code eval
[502, 200]
--- response_body_like eval
[qr/\A(?!.*(?:TK|invalid_|Invalid|error_description|not http))(?s:.*)502/s,
 qr/"unauthorized_client":1,/]
--- error_log eval
[qr/licence "222222", scope "client_address": DQE answered 400 unauthorized_client \(the licence is not allowed this scope\): check dqe_oauth_scope/]



=== TEST 5: unsupported_grant_type: unknown scope
--- config
    location /api/ {
        dqe_oauth_server  127.0.0.1:$TEST_NGINX_DQE_PORT;
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
--- request eval
["GET /api/x", "GET /__mock/stats?reset=1"]
--- error_code eval
[502, 200]
--- response_body_like eval
[qr/\A(?!.*(?:TK|invalid_|Invalid|error_description|not http))(?s:.*)502/s,
 qr/"unsupported_grant_type":1,/]
--- error_log eval
[qr/scope "client": DQE answered 400 unsupported_grant_type \(unknown scope\): check dqe_oauth_scope/]



=== TEST 6: 500 from DQE (what an unknown parameter name gives)
--- config
    location /api/ {
        dqe_oauth_server  http://127.0.0.1:$TEST_NGINX_SERVER_PORT;
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
    location = /oauth/access_token/ {
        default_type application/json;
        return 500 'Internal Server Error';
    }
--- request eval
["GET /api/x", "GET /__mock/stats?reset=1"]
--- error_code eval
[502, 200]
--- response_body_like eval
[qr/\A(?!.*(?:TK|invalid_|Invalid|error_description|not http))(?s:.*)502/s,
 qr/"token_requests":\{"GET":0,"POST":0\}/]
--- error_log eval
[qr/DQE answered 500 \(a server error; DQE also answers 500 to an unknown parameter name\): check dqe_oauth_server and DQE's status/]



=== TEST 7: plain-text error body is understood
--- config
    location /api/ {
        dqe_oauth_server  http://127.0.0.1:$TEST_NGINX_SERVER_PORT;
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
    location = /oauth/access_token/ {
        default_type application/json;
        return 400 'Invalid Client';
    }
--- request eval
["GET /api/x", "GET /__mock/stats?reset=1"]
--- error_code eval
[502, 200]
--- response_body_like eval
[qr/\A(?!.*(?:TK|invalid_|Invalid|error_description|not http))(?s:.*)502/s,
 qr/"token_requests":\{"GET":0,"POST":0\}/]
--- error_log eval
[qr/DQE answered 400 invalid_client/]



=== TEST 8: HTML error body is understood
--- config
    location /api/ {
        dqe_oauth_server  http://127.0.0.1:$TEST_NGINX_SERVER_PORT;
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
    location = /oauth/access_token/ {
        default_type application/json;
        return 400 '<html><body><h1>Unauthorized Client</h1></body></html>';
    }
--- request eval
["GET /api/x", "GET /__mock/stats?reset=1"]
--- error_code eval
[502, 200]
--- response_body_like eval
[qr/\A(?!.*(?:TK|invalid_|Invalid|error_description|not http))(?s:.*)502/s,
 qr/"token_requests":\{"GET":0,"POST":0\}/]
--- error_log eval
[qr/DQE answered 400 unauthorized_client/]



=== TEST 9: OAuth2 error names are compared without regard to case
--- config
    location /api/ {
        dqe_oauth_server  http://127.0.0.1:$TEST_NGINX_SERVER_PORT;
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
    location = /oauth/access_token/ {
        default_type application/json;
        return 400 '{"error":"Unsupported_Grant_Type"}';
    }
--- request eval
["GET /api/x", "GET /__mock/stats?reset=1"]
--- error_code eval
[502, 200]
--- response_body_like eval
[qr/\A(?!.*(?:TK|invalid_|Invalid|error_description|not http))(?s:.*)502/s,
 qr/"token_requests":\{"GET":0,"POST":0\}/]
--- error_log eval
[qr/DQE answered 400 unsupported_grant_type/]



=== TEST 10: an error body naming nothing known
--- config
    location /api/ {
        dqe_oauth_server  http://127.0.0.1:$TEST_NGINX_SERVER_PORT;
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
    location = /oauth/access_token/ {
        default_type application/json;
        return 403 'Forbidden';
    }
--- request eval
["GET /api/x", "GET /__mock/stats?reset=1"]
--- error_code eval
[502, 200]
--- response_body_like eval
[qr/\A(?!.*(?:TK|invalid_|Invalid|error_description|not http))(?s:.*)502/s,
 qr/"token_requests":\{"GET":0,"POST":0\}/]
--- error_log eval
[qr/DQE answered 403 without a known OAuth2 error: check that dqe_oauth_server is DQE's token server; next token request in 10000 ms/]



=== TEST 11: a 200 that is not JSON
--- config
    location /api/ {
        dqe_oauth_server  http://127.0.0.1:$TEST_NGINX_SERVER_PORT;
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
    location = /oauth/access_token/ {
        default_type application/json;
        return 200 '<html>maintenance</html>';
    }
--- request eval
["GET /api/x", "GET /__mock/stats?reset=1"]
--- error_code eval
[502, 200]
--- response_body_like eval
[qr/\A(?!.*(?:TK|invalid_|Invalid|error_description|not http))(?s:.*)502/s,
 qr/"token_requests":\{"GET":0,"POST":0\}/]
--- error_log eval
[qr/the token response is not a JSON object: check that dqe_oauth_server is DQE's token server/]



=== TEST 12: a 200 with JSON that is not an object
--- config
    location /api/ {
        dqe_oauth_server  http://127.0.0.1:$TEST_NGINX_SERVER_PORT;
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
    location = /oauth/access_token/ {
        default_type application/json;
        return 200 '["TKabc"]';
    }
--- request eval
["GET /api/x", "GET /__mock/stats?reset=1"]
--- error_code eval
[502, 200]
--- response_body_like eval
[qr/\A(?!.*(?:TK|invalid_|Invalid|error_description|not http))(?s:.*)502/s,
 qr/"token_requests":\{"GET":0,"POST":0\}/]
--- error_log eval
[qr/the token response is not a JSON object/]



=== TEST 13: a 200 with truncated JSON
--- config
    location /api/ {
        dqe_oauth_server  http://127.0.0.1:$TEST_NGINX_SERVER_PORT;
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
    location = /oauth/access_token/ {
        default_type application/json;
        return 200 '{"access_token":"TKabc","token_type":"Bearer","expi';
    }
--- request eval
["GET /api/x", "GET /__mock/stats?reset=1"]
--- error_code eval
[502, 200]
--- response_body_like eval
[qr/\A(?!.*(?:TK|invalid_|Invalid|error_description|not http))(?s:.*)502/s,
 qr/"token_requests":\{"GET":0,"POST":0\}/]
--- error_log eval
[qr/the token response is not a JSON object/]



=== TEST 14: a 200 with an empty body
--- config
    location /api/ {
        dqe_oauth_server  http://127.0.0.1:$TEST_NGINX_SERVER_PORT;
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
    location = /oauth/access_token/ {
        default_type application/json;
        return 200 '';
    }
--- request eval
["GET /api/x", "GET /__mock/stats?reset=1"]
--- error_code eval
[502, 200]
--- response_body_like eval
[qr/\A(?!.*(?:TK|invalid_|Invalid|error_description|not http))(?s:.*)502/s,
 qr/"token_requests":\{"GET":0,"POST":0\}/]
--- error_log eval
[qr/the token response is not a JSON object/]



=== TEST 15: bad field: access_token missing
--- config
    location /api/ {
        dqe_oauth_server  http://127.0.0.1:$TEST_NGINX_SERVER_PORT;
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
    location = /oauth/access_token/ {
        default_type application/json;
        return 200 '{"token_type":"Bearer","expires_in":"300"}';
    }
--- request eval
["GET /api/x", "GET /__mock/stats?reset=1"]
--- error_code eval
[502, 200]
--- response_body_like eval
[qr/\A(?!.*(?:TK|invalid_|Invalid|error_description|not http))(?s:.*)502/s,
 qr/"token_requests":\{"GET":0,"POST":0\}/]
--- error_log eval
[qr/the token response has no valid "access_token"/]



=== TEST 16: bad field: access_token empty
--- config
    location /api/ {
        dqe_oauth_server  http://127.0.0.1:$TEST_NGINX_SERVER_PORT;
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
    location = /oauth/access_token/ {
        default_type application/json;
        return 200 '{"access_token":"","token_type":"Bearer","expires_in":"300"}';
    }
--- request eval
["GET /api/x", "GET /__mock/stats?reset=1"]
--- error_code eval
[502, 200]
--- response_body_like eval
[qr/\A(?!.*(?:TK|invalid_|Invalid|error_description|not http))(?s:.*)502/s,
 qr/"token_requests":\{"GET":0,"POST":0\}/]
--- error_log eval
[qr/the token response has no valid "access_token"/]



=== TEST 17: bad field: access_token with a space
--- config
    location /api/ {
        dqe_oauth_server  http://127.0.0.1:$TEST_NGINX_SERVER_PORT;
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
    location = /oauth/access_token/ {
        default_type application/json;
        return 200 '{"access_token":"TK a","token_type":"Bearer","expires_in":"300"}';
    }
--- request eval
["GET /api/x", "GET /__mock/stats?reset=1"]
--- error_code eval
[502, 200]
--- response_body_like eval
[qr/\A(?!.*(?:TK|invalid_|Invalid|error_description|not http))(?s:.*)502/s,
 qr/"token_requests":\{"GET":0,"POST":0\}/]
--- error_log eval
[qr/the token response has no valid "access_token"/]



=== TEST 18: bad field: access_token with CR LF (header injection)
--- config
    location /api/ {
        dqe_oauth_server  http://127.0.0.1:$TEST_NGINX_SERVER_PORT;
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
    location = /oauth/access_token/ {
        default_type application/json;
        return 200 '{"access_token":"TKa\\r\\nX-Injected: 1","token_type":"Bearer","expires_in":"300"}';
    }
--- request eval
["GET /api/x", "GET /__mock/stats?reset=1"]
--- error_code eval
[502, 200]
--- response_body_like eval
[qr/\A(?!.*(?:TK|invalid_|Invalid|error_description|not http))(?s:.*)502/s,
 qr/"token_requests":\{"GET":0,"POST":0\}/]
--- error_log eval
[qr/the token response has no valid "access_token"/]



=== TEST 19: bad field: access_token with a control byte
--- config
    location /api/ {
        dqe_oauth_server  http://127.0.0.1:$TEST_NGINX_SERVER_PORT;
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
    location = /oauth/access_token/ {
        default_type application/json;
        return 200 '{"access_token":"TKa\\u0001b","token_type":"Bearer","expires_in":"300"}';
    }
--- request eval
["GET /api/x", "GET /__mock/stats?reset=1"]
--- error_code eval
[502, 200]
--- response_body_like eval
[qr/\A(?!.*(?:TK|invalid_|Invalid|error_description|not http))(?s:.*)502/s,
 qr/"token_requests":\{"GET":0,"POST":0\}/]
--- error_log eval
[qr/the token response has no valid "access_token"/]



=== TEST 20: bad field: access_token with a non-ASCII byte
--- config
    location /api/ {
        dqe_oauth_server  http://127.0.0.1:$TEST_NGINX_SERVER_PORT;
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
    location = /oauth/access_token/ {
        default_type application/json;
        return 200 '{"access_token":"TKa\\u00e9b","token_type":"Bearer","expires_in":"300"}';
    }
--- request eval
["GET /api/x", "GET /__mock/stats?reset=1"]
--- error_code eval
[502, 200]
--- response_body_like eval
[qr/\A(?!.*(?:TK|invalid_|Invalid|error_description|not http))(?s:.*)502/s,
 qr/"token_requests":\{"GET":0,"POST":0\}/]
--- error_log eval
[qr/the token response has no valid "access_token"/]



=== TEST 21: bad field: access_token not a string
--- config
    location /api/ {
        dqe_oauth_server  http://127.0.0.1:$TEST_NGINX_SERVER_PORT;
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
    location = /oauth/access_token/ {
        default_type application/json;
        return 200 '{"access_token":12345,"token_type":"Bearer","expires_in":"300"}';
    }
--- request eval
["GET /api/x", "GET /__mock/stats?reset=1"]
--- error_code eval
[502, 200]
--- response_body_like eval
[qr/\A(?!.*(?:TK|invalid_|Invalid|error_description|not http))(?s:.*)502/s,
 qr/"token_requests":\{"GET":0,"POST":0\}/]
--- error_log eval
[qr/the token response has no valid "access_token"/]



=== TEST 22: bad field: token_type not Bearer
--- config
    location /api/ {
        dqe_oauth_server  http://127.0.0.1:$TEST_NGINX_SERVER_PORT;
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
    location = /oauth/access_token/ {
        default_type application/json;
        return 200 '{"access_token":"TKabc","token_type":"mac","expires_in":"300"}';
    }
--- request eval
["GET /api/x", "GET /__mock/stats?reset=1"]
--- error_code eval
[502, 200]
--- response_body_like eval
[qr/\A(?!.*(?:TK|invalid_|Invalid|error_description|not http))(?s:.*)502/s,
 qr/"token_requests":\{"GET":0,"POST":0\}/]
--- error_log eval
[qr/the token response has no valid "token_type"/]



=== TEST 23: bad field: token_type missing
--- config
    location /api/ {
        dqe_oauth_server  http://127.0.0.1:$TEST_NGINX_SERVER_PORT;
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
    location = /oauth/access_token/ {
        default_type application/json;
        return 200 '{"access_token":"TKabc","expires_in":"300"}';
    }
--- request eval
["GET /api/x", "GET /__mock/stats?reset=1"]
--- error_code eval
[502, 200]
--- response_body_like eval
[qr/\A(?!.*(?:TK|invalid_|Invalid|error_description|not http))(?s:.*)502/s,
 qr/"token_requests":\{"GET":0,"POST":0\}/]
--- error_log eval
[qr/the token response has no valid "token_type"/]



=== TEST 24: bad field: expires_in "0"
--- config
    location /api/ {
        dqe_oauth_server  http://127.0.0.1:$TEST_NGINX_SERVER_PORT;
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
    location = /oauth/access_token/ {
        default_type application/json;
        return 200 '{"access_token":"TKabc","token_type":"Bearer","expires_in":"0"}';
    }
--- request eval
["GET /api/x", "GET /__mock/stats?reset=1"]
--- error_code eval
[502, 200]
--- response_body_like eval
[qr/\A(?!.*(?:TK|invalid_|Invalid|error_description|not http))(?s:.*)502/s,
 qr/"token_requests":\{"GET":0,"POST":0\}/]
--- error_log eval
[qr/the token response has no valid "expires_in"/]



=== TEST 25: bad field: expires_in "-5"
--- config
    location /api/ {
        dqe_oauth_server  http://127.0.0.1:$TEST_NGINX_SERVER_PORT;
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
    location = /oauth/access_token/ {
        default_type application/json;
        return 200 '{"access_token":"TKabc","token_type":"Bearer","expires_in":"-5"}';
    }
--- request eval
["GET /api/x", "GET /__mock/stats?reset=1"]
--- error_code eval
[502, 200]
--- response_body_like eval
[qr/\A(?!.*(?:TK|invalid_|Invalid|error_description|not http))(?s:.*)502/s,
 qr/"token_requests":\{"GET":0,"POST":0\}/]
--- error_log eval
[qr/the token response has no valid "expires_in"/]



=== TEST 26: bad field: expires_in "abc"
--- config
    location /api/ {
        dqe_oauth_server  http://127.0.0.1:$TEST_NGINX_SERVER_PORT;
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
    location = /oauth/access_token/ {
        default_type application/json;
        return 200 '{"access_token":"TKabc","token_type":"Bearer","expires_in":"abc"}';
    }
--- request eval
["GET /api/x", "GET /__mock/stats?reset=1"]
--- error_code eval
[502, 200]
--- response_body_like eval
[qr/\A(?!.*(?:TK|invalid_|Invalid|error_description|not http))(?s:.*)502/s,
 qr/"token_requests":\{"GET":0,"POST":0\}/]
--- error_log eval
[qr/the token response has no valid "expires_in"/]



=== TEST 27: bad field: expires_in ""
--- config
    location /api/ {
        dqe_oauth_server  http://127.0.0.1:$TEST_NGINX_SERVER_PORT;
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
    location = /oauth/access_token/ {
        default_type application/json;
        return 200 '{"access_token":"TKabc","token_type":"Bearer","expires_in":""}';
    }
--- request eval
["GET /api/x", "GET /__mock/stats?reset=1"]
--- error_code eval
[502, 200]
--- response_body_like eval
[qr/\A(?!.*(?:TK|invalid_|Invalid|error_description|not http))(?s:.*)502/s,
 qr/"token_requests":\{"GET":0,"POST":0\}/]
--- error_log eval
[qr/the token response has no valid "expires_in"/]



=== TEST 28: bad field: expires_in " 300"
--- config
    location /api/ {
        dqe_oauth_server  http://127.0.0.1:$TEST_NGINX_SERVER_PORT;
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
    location = /oauth/access_token/ {
        default_type application/json;
        return 200 '{"access_token":"TKabc","token_type":"Bearer","expires_in":" 300"}';
    }
--- request eval
["GET /api/x", "GET /__mock/stats?reset=1"]
--- error_code eval
[502, 200]
--- response_body_like eval
[qr/\A(?!.*(?:TK|invalid_|Invalid|error_description|not http))(?s:.*)502/s,
 qr/"token_requests":\{"GET":0,"POST":0\}/]
--- error_log eval
[qr/the token response has no valid "expires_in"/]



=== TEST 29: bad field: expires_in "300s"
--- config
    location /api/ {
        dqe_oauth_server  http://127.0.0.1:$TEST_NGINX_SERVER_PORT;
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
    location = /oauth/access_token/ {
        default_type application/json;
        return 200 '{"access_token":"TKabc","token_type":"Bearer","expires_in":"300s"}';
    }
--- request eval
["GET /api/x", "GET /__mock/stats?reset=1"]
--- error_code eval
[502, 200]
--- response_body_like eval
[qr/\A(?!.*(?:TK|invalid_|Invalid|error_description|not http))(?s:.*)502/s,
 qr/"token_requests":\{"GET":0,"POST":0\}/]
--- error_log eval
[qr/the token response has no valid "expires_in"/]



=== TEST 30: bad field: expires_in missing
--- config
    location /api/ {
        dqe_oauth_server  http://127.0.0.1:$TEST_NGINX_SERVER_PORT;
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
    location = /oauth/access_token/ {
        default_type application/json;
        return 200 '{"access_token":"TKabc","token_type":"Bearer"}';
    }
--- request eval
["GET /api/x", "GET /__mock/stats?reset=1"]
--- error_code eval
[502, 200]
--- response_body_like eval
[qr/\A(?!.*(?:TK|invalid_|Invalid|error_description|not http))(?s:.*)502/s,
 qr/"token_requests":\{"GET":0,"POST":0\}/]
--- error_log eval
[qr/the token response has no valid "expires_in"/]



=== TEST 31: bad field: expires_in 0
--- config
    location /api/ {
        dqe_oauth_server  http://127.0.0.1:$TEST_NGINX_SERVER_PORT;
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
    location = /oauth/access_token/ {
        default_type application/json;
        return 200 '{"access_token":"TKabc","token_type":"Bearer","expires_in":0}';
    }
--- request eval
["GET /api/x", "GET /__mock/stats?reset=1"]
--- error_code eval
[502, 200]
--- response_body_like eval
[qr/\A(?!.*(?:TK|invalid_|Invalid|error_description|not http))(?s:.*)502/s,
 qr/"token_requests":\{"GET":0,"POST":0\}/]
--- error_log eval
[qr/the token response has no valid "expires_in"/]



=== TEST 32: bad field: expires_in -5
--- config
    location /api/ {
        dqe_oauth_server  http://127.0.0.1:$TEST_NGINX_SERVER_PORT;
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
    location = /oauth/access_token/ {
        default_type application/json;
        return 200 '{"access_token":"TKabc","token_type":"Bearer","expires_in":-5}';
    }
--- request eval
["GET /api/x", "GET /__mock/stats?reset=1"]
--- error_code eval
[502, 200]
--- response_body_like eval
[qr/\A(?!.*(?:TK|invalid_|Invalid|error_description|not http))(?s:.*)502/s,
 qr/"token_requests":\{"GET":0,"POST":0\}/]
--- error_log eval
[qr/the token response has no valid "expires_in"/]



=== TEST 33: bad field: expires_in 1.5
--- config
    location /api/ {
        dqe_oauth_server  http://127.0.0.1:$TEST_NGINX_SERVER_PORT;
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
    location = /oauth/access_token/ {
        default_type application/json;
        return 200 '{"access_token":"TKabc","token_type":"Bearer","expires_in":1.5}';
    }
--- request eval
["GET /api/x", "GET /__mock/stats?reset=1"]
--- error_code eval
[502, 200]
--- response_body_like eval
[qr/\A(?!.*(?:TK|invalid_|Invalid|error_description|not http))(?s:.*)502/s,
 qr/"token_requests":\{"GET":0,"POST":0\}/]
--- error_log eval
[qr/the token response has no valid "expires_in"/]



=== TEST 34: bad field: expires_in null
--- config
    location /api/ {
        dqe_oauth_server  http://127.0.0.1:$TEST_NGINX_SERVER_PORT;
        dqe_oauth_licence 123456;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
    location = /oauth/access_token/ {
        default_type application/json;
        return 200 '{"access_token":"TKabc","token_type":"Bearer","expires_in":null}';
    }
--- request eval
["GET /api/x", "GET /__mock/stats?reset=1"]
--- error_code eval
[502, 200]
--- response_body_like eval
[qr/\A(?!.*(?:TK|invalid_|Invalid|error_description|not http))(?s:.*)502/s,
 qr/"token_requests":\{"GET":0,"POST":0\}/]
--- error_log eval
[qr/the token response has no valid "expires_in"/]



=== TEST 35: access_token over 4 KiB
--- config
    location /api/ {
        dqe_oauth_server  127.0.0.1:$TEST_NGINX_DQE_FAULT_LONG_TOKEN;
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
[qr/\A(?!.*(?:TK|invalid_|Invalid|error_description|not http))(?s:.*)502/s,
 qr/"token_requests":\{"GET":0,"POST":1\}/]
--- error_log eval
[qr/the token response has no valid "access_token"/]



=== TEST 36: token response larger than 16k: not read into memory, one error line
--- config
    location /api/ {
        dqe_oauth_server  127.0.0.1:$TEST_NGINX_DQE_FAULT_BIG;
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
[qr/\A(?!.*(?:TK|invalid_|Invalid|error_description|not http))(?s:.*)502/s,
 qr/"token_requests":\{"GET":0,"POST":1\}/]
--- error_log eval
[qr/the token response was cut short or is larger than 16k/]
--- no_error_log
too big subrequest response



=== TEST 37: truncated token response
--- config
    location /api/ {
        dqe_oauth_server  127.0.0.1:$TEST_NGINX_DQE_FAULT_TRUNCATE;
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
[qr/\A(?!.*(?:TK|invalid_|Invalid|error_description|not http))(?s:.*)502/s,
 qr/"token_requests":\{"GET":0,"POST":1\}/]
--- error_log eval
[qr/the token response was cut short or is larger than 16k/]



=== TEST 38: token server closes the connection
--- config
    location /api/ {
        dqe_oauth_server  127.0.0.1:$TEST_NGINX_DQE_FAULT_CLOSE;
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
[qr/\A(?!.*(?:TK|invalid_|Invalid|error_description|not http))(?s:.*)502/s,
 qr/"token_requests":\{"GET":0,"POST":1\}/]
--- error_log eval
[qr/the token server closed the connection or sent no valid HTTP response: check dqe_oauth_server/]



=== TEST 39: token server resets the connection
--- config
    location /api/ {
        dqe_oauth_server  127.0.0.1:$TEST_NGINX_DQE_FAULT_RESET;
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
[qr/\A(?!.*(?:TK|invalid_|Invalid|error_description|not http))(?s:.*)502/s,
 qr/"token_requests":\{"GET":0,"POST":1\}/]
--- error_log eval
[qr/no token for server .*: the token server closed the connection or sent no valid HTTP response/]



=== TEST 40: token server answers garbage
--- config
    location /api/ {
        dqe_oauth_server  127.0.0.1:$TEST_NGINX_DQE_FAULT_GARBAGE;
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
[qr/\A(?!.*(?:TK|invalid_|Invalid|error_description|not http))(?s:.*)502/s,
 qr/"token_requests":\{"GET":0,"POST":1\}/]
--- error_log eval
[qr/no token for server .*: (the token response is not a JSON object|the token server closed)/]



=== TEST 41: token request times out
--- http_config
    proxy_ssl_verify on;
    proxy_ssl_trusted_certificate $TEST_NGINX_DQE_CA;
    proxy_read_timeout 1s;
--- config
    location /api/ {
        dqe_oauth_server  127.0.0.1:$TEST_NGINX_DQE_FAULT_SLOW;
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
[qr/\A(?!.*(?:TK|invalid_|Invalid|error_description|not http))(?s:.*)502/s,
 qr/"token_requests":\{"GET":0,"POST":1\}/]
--- error_log eval
[qr/the token request timed out: check dqe_oauth_server, proxy_connect_timeout and proxy_read_timeout/]
--- timeout: 10



=== TEST 42: connection refused
--- config
    location /api/ {
        dqe_oauth_server  127.0.0.1:1;
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
[qr/\A(?!.*(?:TK|invalid_|Invalid|error_description|not http))(?s:.*)502/s,
 qr/"token_requests":\{"GET":0,"POST":0\}/]
--- error_log eval
[qr/could not connect to the token server \(refused, unreachable, or TLS handshake failed, see the line before\): check dqe_oauth_server and proxy_ssl_\*/]



=== TEST 43: dqe_oauth_error_status sets the status
--- config
    location /api/ {
        dqe_oauth_server  127.0.0.1:$TEST_NGINX_DQE_PORT;
        dqe_oauth_licence 999999;
        dqe_oauth_secret  s3cr3t-pass;
        dqe_oauth_scope   client_address;
        dqe_oauth_error_status 503;
        proxy_pass https://127.0.0.1:$TEST_NGINX_DQE_PORT;
    }
--- request eval
["GET /api/x", "GET /__mock/stats?reset=1"]
--- error_code eval
[503, 200]
--- response_body_like eval
[qr/\A(?!.*(?:TK|invalid_|Invalid|error_description|not http))(?s:.*)503/s,
 qr/"invalid_client":1,/]
--- error_log eval
[qr/DQE answered 400 invalid_client/]
