# A token reply's headers cannot make nginx act: X-Accel-Redirect would
# send the token request, the secret in its body, to another location;
# the other X-Accel-*, Set-Cookie and the caching headers are ignored as
# well.  One block per header: a good token with the header; the token is
# used, the location it names never reached.  And DQE's Retry-After, on
# 429 and 503, sets the backoff (up to 5 minutes).

use Test::Nginx::Socket 'no_plan';
use Test::DQE;

check_accum_error_log();
no_shuffle();

add_block_preprocessor(sub {
    my $block = shift;

    # where an X-Accel-Redirect of the token reply would go: a 418 there
    # would end the token request, and the mock would count a token
    # request more

    $block->set_value('config', Test::DQE::location('/api/')
        . "    location /elsewhere {\n"
        . "        proxy_pass https://127.0.0.1:$ENV{TEST_NGINX_DQE_PORT}"
        . "/oauth/access_token/;\n"
        . "    }\n"
        . "    location /teapot { return 418; }\n")
        unless defined $block->config;

    my $h = $block->reply_header;
    return unless defined $h;

    $block->set_value('request', [
        Test::DQE::fault(header => $h, count => 1),
        "GET /api/x", "GET /api/y", "GET /__mock/stats?reset=1"]);
    $block->set_value('error_code', [200, 200, 200, 200]);
    $block->set_value('response_body_like', [
        qr/"fault"/, qr/"ok":true/, qr/"ok":true/,
        Test::DQE::stats(token_requests => { POST => 1 }, tokens_issued => 1,
                         api => { 200 => 2 })]);
    $block->set_value('no_error_log', ['[error]', '[warn]']);
});

run_tests();

__DATA__

=== TEST 1: X-Accel-Redirect to another upstream: not followed, the secret stays
--- reply_header: X-Accel-Redirect:/elsewhere



=== TEST 2: X-Accel-Redirect to a location that answers 418: not followed
--- reply_header: X-Accel-Redirect:/teapot



=== TEST 3: X-Accel-Buffering
--- reply_header: X-Accel-Buffering:no



=== TEST 4: X-Accel-Limit-Rate
--- reply_header: X-Accel-Limit-Rate:1



=== TEST 5: X-Accel-Expires
--- reply_header: X-Accel-Expires:@1



=== TEST 6: X-Accel-Charset
--- reply_header: X-Accel-Charset:koi8-r



=== TEST 7: Set-Cookie
--- reply_header: Set-Cookie:session=stolen; Path=/



=== TEST 8: Cache-Control and Expires
--- reply_header: Cache-Control:max-age=86400



=== TEST 9: Vary
--- reply_header: Vary:*



=== TEST 10: the reply's headers never reach the client
--- config eval
Test::DQE::location('/api/')
--- request eval
[Test::DQE::fault(header => "Set-Cookie:session=stolen", count => 1),
 "GET /api/x"]
--- response_headers eval
["", "!Set-Cookie"]
--- response_body_like eval
[qr/"fault"/, qr/"ok":true/]



=== TEST 11: 503 with Retry-After in seconds: the backoff is DQE's
--- config eval
Test::DQE::location('/api/', port => $ENV{TEST_NGINX_DQE_FAULT_RETRY_503})
--- request
GET /api/x
--- error_code: 502
--- error_log eval
qr/\[error\] .*DQE answered 503 \(a server error;.*; next token request in 7000 ms/



=== TEST 12: 429 with Retry-After as a date: the backoff is DQE's
--- config eval
Test::DQE::location('/api/', port => $ENV{TEST_NGINX_DQE_FAULT_RETRY_DATE})
--- request
GET /api/x
--- error_code: 502
--- error_log eval
qr/\[error\] .*DQE answered 429 \(too many requests\): token requests wait for its Retry-After, up to 5 minutes; next token request in (?:[6-9]\d|1[01]\d)\d\d\d ms/



=== TEST 13: a Retry-After of an hour is taken as 5 minutes
--- config eval
Test::DQE::location('/api/', port => $ENV{TEST_NGINX_DQE_FAULT_RETRY_HOUR})
--- request
GET /api/x
--- error_code: 502
--- error_log eval
qr/\[error\] .*DQE answered 503 .*; next token request in 300000 ms/



=== TEST 14: 429 without Retry-After: a short backoff, as for a server error
--- config eval
Test::DQE::location('/api/', port => $ENV{TEST_NGINX_DQE_FAULT_RATE_429})
--- request
GET /api/x
--- error_code: 502
--- error_log eval
qr/\[error\] .*DQE answered 429 \(too many requests\).*; next token request in 1000 ms/
