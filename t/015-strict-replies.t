# Token replies are read strictly: exactly one JSON object, nothing after
# it, no NUL or control byte in a field (a "\u0000" is not where a field
# ends), a field given twice is not valid, escapes decoded with their
# lengths.  Each case: a reply from the mock, the status the client gets
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
      'no valid "access_token"', 'a NUL inside the token' ],
    [ '{"access_token":"tokA","token_type":"Bearer\u0000MAC",'
      . '"expires_in":"300"}',
      'no valid "token_type"', 'a NUL inside the type' ],
    [ '{"access_token":"tokA","token_type":"Bearer",'
      . '"expires_in":"300\u0000abc"}',
      'no valid "expires_in"', 'a NUL inside expires_in' ],
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
    [ '{"access_token":"tokA","token_type":"Bearer","expires_in":3e2}',
      'no valid "expires_in"', 'expires_in with an exponent' ],
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
    [ '{"access_token":"TKa","token_type":"Bearer","expires_in":0300}',
      'is not a JSON object', 'a number with a leading zero' ],
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
