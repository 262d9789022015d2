# Token replies are read by cJSON and checked around it: exactly one JSON
# object, nothing after it, no "\u0000" anywhere (cJSON's strings would
# end there) and no control byte in a string or outside one but JSON's
# whitespace, nesting up to 32, a field given twice not valid, escapes
# decoded.  What cJSON takes that RFC 8259 does not, and that is
# harmless, is shown taken (numbers by their value).  Each case: a reply from the mock, the status the client gets
# and the cause in the error line; for the good ones, the token the
# upstream gets.
#
# Plain Test::More: a table of cases, each with a credential set of its
# own (no backoff between them); an upstream of nginx itself echoes the
# Authorization header it receives.

use strict;
use warnings;

use Test::More;
use Test::DQE;

sub mock { Test::DQE::mock(@_) }

my $tail = '"token_type":"Bearer","expires_in":"300"}';

my @cases = (
    # reply body, cause in the error line (or the token the upstream gets)
    [ '{"access_token":"tokA\u0000tokB",' . $tail,
      'is not a JSON object', 'a NUL inside the token' ],
    [ '{"access_token":"tokA","token_type":"Bearer\u0000MAC",'
      . '"expires_in":"300"}',
      'is not a JSON object', 'a NUL inside the type' ],
    [ '{"access_token":"tokA","token_type":"Bearer",'
      . '"expires_in":"300\u0000abc"}',
      'is not a JSON object', 'a NUL inside expires_in' ],
    [ '{"x":"a\u0000","access_token":"tokA",' . $tail,
      'is not a JSON object', 'a NUL in a member we do not use' ],
    [ "{\"access_token\":\"tok\tA\"," . $tail,
      'is not a JSON object', 'a raw tab in a string' ],
    [ "\f{\"access_token\":\"tokA\"," . $tail,
      'is not a JSON object', 'a form feed before the object' ],
    [ "{\"access_token\":\"tokA\",\x0b" . $tail,
      'is not a JSON object', 'a vertical tab between members' ],
    [ "{\"access_token\":\"tokA\"," . $tail . "\x00",
      'is not a JSON object', 'a NUL byte after the object' ],
    [ '[{"access_token":"tokA",' . $tail . ']',
      'is not a JSON object', 'an array holding the object' ],
    [ '{"access_token":"TK\x",' . $tail,
      'is not a JSON object', 'an escape \x' ],
    [ '{"access_token":"TK\u00g1",' . $tail,
      'is not a JSON object', 'a \u with a digit that is not hex' ],
    [ '{"access_token":"TK\U0041",' . $tail,
      'is not a JSON object', 'a \U (JSON knows \u only)' ],
    [ '{"x":' . ('[' x 31) . (']' x 31) . ',"access_token":"TKd",' . $tail,
      '=Bearer TKd', 'nesting 32 deep, the object counted' ],
    [ '{"x":' . ('[' x 32) . (']' x 32) . ',"access_token":"TKd",' . $tail,
      'is not a JSON object', 'nesting 33 deep' ],
    [ '{"x":"\"' . ('[' x 40) . '","access_token":"TKq",' . $tail,
      '=Bearer TKq', 'an escaped quote, then brackets, in a string' ],
    [ '{"access_token":"TK\\\\u0000",' . $tail,
      '=Bearer TK\\u0000', 'an escaped backslash before u0000: no NUL' ],
    [ '{"access_token":"tokA",' . $tail . '<html>',
      'is not a JSON object', 'bytes after the object' ],
    [ '{"access_token":"tokA",' . $tail . '{"access_token":"x"}',
      'is not a JSON object', 'a second object' ],
    [ '{"access_token":"tokA","access_token":"tokB",' . $tail,
      'no valid "access_token"', 'the token given twice' ],
    [ '{"access_token":"tokA","expires_in":"300",' . $tail,
      'no valid "expires_in"', 'expires_in given twice' ],
    [ '{"access_token":"tok\ud800A",' . $tail,
      'is not a JSON object', 'a lone surrogate' ],
    [ "{\"access_token\":\"tok\x01A\"," . $tail,
      'is not a JSON object', 'a raw control byte in a string' ],
    [ '{"access_token":"tokA",' . $tail =~ s/\}$/,}/r,
      'is not a JSON object', 'a trailing comma' ],
    [ '{"access_token":"TKe","token_type":"Bearer","expires_in":3e2}',
      '=Bearer TKe', 'expires_in 3e2, a number of value 300' ],
    [ '{"access_token":"TKf","token_type":"Bearer","expires_in":300.0}',
      '=Bearer TKf', 'expires_in 300.0, a number of value 300' ],
    [ '{"access_token":"tokA","token_type":"Bearer","expires_in":300.5}',
      'no valid "expires_in"', 'expires_in 300.5, not whole' ],
    [ '{"access_token":"tokA","token_type":"Bearer","expires_in":1e400}',
      'no valid "expires_in"', 'expires_in 1e400, out of range' ],
    [ '{"access_token":"tokA","token_type":"Bearer","expires_in":31536001}',
      'no valid "expires_in"', 'expires_in over a year' ],
    [ '{"access_token":"TKy","token_type":"Bearer","expires_in":31536000}',
      '=Bearer TKy', 'expires_in a year' ],
    [ '{"access_token":"tokA","token_type":"Bearer","expires_in":"300.0"}',
      'no valid "expires_in"', 'expires_in "300.0", a string not of digits' ],
    [ '{"access_token":"tokA","token_type":"Bearer","expires_in":true}',
      'no valid "expires_in"', 'expires_in true' ],
    [ '{"access_token":300,"token_type":"Bearer","expires_in":"300"}',
      'no valid "access_token"', 'a token that is a number' ],
    [ '{"access_token":"tokA","token_type":"Bearer","expires_in":"+300"}',
      'no valid "expires_in"', 'expires_in with a sign' ],
    [ '{"access_token":"tokA","token_type":"Bearer",'
      . '"expires_in":"99999999999999999999999"}',
      'no valid "expires_in"', 'expires_in overflowing' ],
    [ '{"x":' . ('[' x 40) . (']' x 40) . ',"access_token":"tokA",' . $tail,
      'is not a JSON object', 'nesting 40 deep' ],
    [ '{"access_token":"tok\u00e9",' . $tail,
      'no valid "access_token"', 'a token that is not ASCII' ],
    [ '{"access_token":"tok A",' . $tail,
      'no valid "access_token"', 'a token with a space' ],
    [ '{"access_token":"tok\u007fA",' . $tail,
      'no valid "access_token"', 'a token with a DEL' ],
    [ '{"x":"\udc00","access_token":"TKa",' . $tail,
      'is not a JSON object', 'a lone low surrogate, in another member' ],
    [ '{"x":' . ('{"y":' x 40) . '1' . ('}' x 40) . ',"access_token":"TKa",'
      . $tail,
      'is not a JSON object', 'objects nested 40 deep' ],
    [ '{"access_token":"TK\qa",' . $tail,
      'is not a JSON object', 'an unknown escape' ],
    [ '{"access_token":"TKz","token_type":"Bearer","expires_in":0300}',
      '=Bearer TKz', 'a number with a leading zero, cJSON\'s 300' ],
    [ '{"access_token":"TK\u0041\/x",' . $tail,
      '=Bearer TKA/x', 'escapes decoded' ],
    [ '{"x":{"y":[1,2.5e-3,true,null,"\ud83d\ude00"]},"access_token":"TKn",'
      . $tail,
      '=Bearer TKn', 'other members, nested, skipped' ],
    [ " \r\n\t" . '{"access_token":"TKw",' . $tail . " \n",
      '=Bearer TKw', 'whitespace around the object' ],
    [ '{"access_token":"TKb","token_type":"bEARER","expires_in":"300"}',
      '=Bearer TKb', 'the token type in any case' ],
    [ '{"access_token":"TKr","refresh_token":"a","refresh_token":"b",'
      . $tail,
      '=Bearer TKr', 'a refresh token given twice is dropped, not fatal' ],
);

my $ngx = Test::DQE::Nginx->new('strict-replies');
my $port = $ngx->port;

my $http = "    server {\n"
    . "        listen 127.0.0.1:$port;\n"
    . "        location /echo { return 200 \$http_authorization; }\n";

for my $i (0 .. $#cases) {
    my $loc = Test::DQE::location("/c$i/", licence => 100900 + $i,
                                  secret => 'bulk-pass');
    $loc =~ s{proxy_pass [^;]+;}{proxy_pass http://127.0.0.1:$port/echo;};
    $http .= $loc;
}

$http .= "    }\n";

ok($ngx->start(http => $http), 'nginx starts');

for my $i (0 .. $#cases) {
    my ($body, $want, $what) = @{ $cases[$i] };

    mock(Test::DQE::fault(body => $body, count => 1) =~ s/^GET //r);

    my ($status, $got) = $ngx->get("/c$i/x");

    if ($want =~ /^=(.*)/) {
        is("$status $got", "200 $1", "$what: the upstream gets \"$1\"");
        next;
    }

    my @lines = $ngx->log =~ /(\[error\] .*no token for .*licence "${\ (100900 + $i)}".*)/g;

    is($status, 502, "$what: 502");
    like($lines[-1] // 'no line', qr/the token response (?:has )?\Q$want\E/,
         "$what: the token response $want");
}

like(mock('/__mock/stats?reset=1'),
     Test::DQE::stats(token_requests => { POST => scalar @cases }),
     'one token request each');

ok($ngx->stop, 'quit');

Test::DQE::log_ok($ngx->log, qr/\[error\](?!.*no token for)/);

done_testing();
