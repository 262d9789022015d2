# dqe_oauth_retry_on_401: a request whose cached token the API refuses
# (401) is sent again, once, with a new token; the client sees only the
# second answer.
#
#   burst        a revocation under a burst of 200 requests over 4
#                workers: every client 200, one token request; each 401
#                retried once (the status's retries = the mock's 401s)
#   fresh        a token DQE has just issued refused too (the mock's
#                "reject"): the 401 goes to the client once, no loop, one
#                token request in 10 s, one [error] line saying what to
#                check
#   bodies       a POST of 1,000,000 bytes (kept in a temp file) and one
#                of 100,000 (in memory) sent again byte for byte (the
#                mock answers the body's SHA-256), $upstream_status
#                "401 : 200", $dqe_oauth_status RETRY
#   no retry     proxy_request_buffering off, dqe_oauth_retry_on_401 off:
#                the 401 goes to the client
#   HTTP/2       concurrent streams over one connection, all 200
#
# Plain Test::More: nginx with 4 workers, the mock as DQE and API.

use strict;
use warnings;

use Test::More;
use Test::DQE;
use JSON::PP ();
use Digest::SHA qw(sha256_hex);
use Time::HiRes qw(sleep time);

sub mock { Test::DQE::mock(@_) }

sub api {
    my ($path, $licence, $secret, $extra) = @_;

    my $loc = Test::DQE::location($path, licence => $licence,
        secret => $secret,
        extra => 'add_header X-DQE-Status $dqe_oauth_status always; '
                 . 'add_header X-Upstream-Status $upstream_status always; '
                 . ($extra // ''));

    return $loc;
}

my $ngx = Test::DQE::Nginx->new('retry');
my $port = $ngx->port;

my $http = "    upstream dqe_ka {\n"
    . "        server 127.0.0.1:$ENV{TEST_NGINX_DQE_PORT};\n"
    . "        keepalive 4;\n"
    . "    }\n"
    . Test::DQE::fan_server()
    . "    server {\n"
    . "        listen 127.0.0.1:$port;\n"
    . "        listen 127.0.0.1:${\ $ngx->port2} http2;\n"
    . "        client_max_body_size 2m;\n"
    . "        location = /status { dqe_oauth_status; }\n"
    . Test::DQE::burst(200)
    . api('/fresh/', 654321, 'other-pass')
    . api('/file/', 100001, 'bulk-pass')
    . api('/mem/', 100002, 'bulk-pass', 'client_body_buffer_size 2m;')
    . api('/nobuf/', 100003, 'bulk-pass', 'proxy_request_buffering off;')
    . api('/off/', 100004, 'bulk-pass', 'dqe_oauth_retry_on_401 off;')
    . api('/h2/', 100005, 'bulk-pass')
    . api('/cold/', 100006, 'bulk-pass')
    . api('/sub/', 100007, 'bulk-pass')
    . api('/coldburst/', 100008, 'bulk-pass')
    . (api('/ka/', 100009, 'bulk-pass')
       =~ s{proxy_pass [^;]+;}{proxy_pass https://dqe_ka; proxy_http_version 1.1; proxy_set_header Connection ""; proxy_ssl_name 127.0.0.1;}r)
    . "        location = /ssi {\n"
    . "            ssi on;\n"
    . "            default_type text/html;\n"
    . "            return 200 '<!--# include virtual=\"/sub/x\" -->';\n"
    . "        }\n"
    . "    }\n";

ok($ngx->start(http => $http, workers => 4), 'nginx starts, 4 workers');

sub status_of {
    my ($licence) = @_;

    my ($st, $body) = $ngx->get('/status');
    my $json = eval { JSON::PP::decode_json($body) } or return {};

    my ($set) = grep { $_->{licence} eq $licence } @{ $json->{credentials} || [] };

    return $set || {};
}

sub warns { scalar(() = $ngx->log =~ /$_[0]/g) }

# --- burst ------------------------------------------------------------------

mock('/__mock/reset');

my (undef, $body) = $ngx->get('/burst', 30);
is(scalar(() = $body =~ /"ok":true/g), 200, 'a burst of 200, cold: all 200');

like(mock('/__mock/stats?reset=counters'),
     Test::DQE::stats(token_requests => { POST => 1 }, workers_seen => 4),
     'one token request, 4 workers');

is(mock('/__mock/revoke?licence=123456'), '{"revoked":1}',
   'DQE revokes the token');

(undef, $body) = $ngx->get('/burst', 30);
is(scalar(() = $body =~ /"ok":true/g), 200,
   'a burst of 200 after the revocation: all 200');
unlike($body, qr/invalid_token/, 'no client saw the 401');

my $stats = JSON::PP::decode_json(mock('/__mock/stats?reset=counters'));
is($stats->{token_requests}{POST}, 1, 'one token request for the instance');
is($stats->{api}{200}, 200, 'the API answered 200 to 200 requests');
ok($stats->{api}{401} >= 1, "and 401 to $stats->{api}{401} (the revoked token)");

sleep 0.3;   # the workers' request counts reach the zone within 100 ms

my $set = status_of('123456');
is($set->{retries}, $stats->{api}{401},
   'each 401 sent again once: retries = the 401s');
is($set->{purges}, 1, 'one purge');
is($set->{requests}{retry}, $stats->{api}{401},
   'as many requests counted as "retry"');
my $total = 0;
$total += $_ for values %{ $set->{requests} };
is($total, 400 + $stats->{api}{401},
   'a request sent again counts twice (its first pass, then "retry"): '
   . '400 requests, ' . (400 + $stats->{api}{401}) . ' counted');
is(warns(qr/\[warn\] .*dqe_oauth: the API refused the token for .*licence "123456".*it is dropped, the request is sent again with a new one/),
   1, 'one [warn] line');

# --- fresh ------------------------------------------------------------------

is(($ngx->get('/fresh/x'))[0], 200, 'fresh: a token');

like(mock('/__mock/reject?n=1000&licence=654321'), qr/"n":1000/,
     'the API now refuses every token of the licence');
mock('/__mock/stats?reset=counters');

my ($st, $b, $head) = $ngx->get('/fresh/1');
is($st, 401, 'the 401 of the second attempt goes to the client');
like($head, qr/^X-DQE-Status: RETRY\r?$/m, '$dqe_oauth_status RETRY');
like($head, qr/^X-Upstream-Status: 401 : 401\r?$/m,
     'sent twice: $upstream_status "401 : 401"');

my @later;
my $until = time + 5;
while (time < $until) {
    my ($s, undef, $h) = $ngx->get('/fresh/n');
    my ($how) = $h =~ /^X-DQE-Status: (\S+)/m;
    my ($up) = $h =~ /^X-Upstream-Status: ([^\r\n]+)/m;
    push @later, "$s $how $up";
    sleep 0.25;
}

is_deeply([grep { $_ ne '401 HIT 401' } @later], [],
          scalar(@later) . ' more requests in 5 s: each 401, HIT, sent once');

$stats = JSON::PP::decode_json(mock('/__mock/stats?reset=counters'));
is($stats->{token_requests}{POST}, 1, 'one token request in those 5 s');
is($stats->{api}{401}, 2 + @later, 'no loop: 2 + one API call each');

$set = status_of('654321');
is("$set->{purges} $set->{retries}", '1 1', 'one purge, one retry');
is(warns(qr/\[error\] .*dqe_oauth: the API refused a token just issued for .*licence "654321".*check that the licence is allowed this API and that dqe_oauth_scope is the API's scope/),
   1, 'one [error] line: what to check');

# the same from the first request on: the token it waited for (MISS) is
# refused at once, nothing dropped, no retry

mock('/__mock/reject?n=1000&licence=100006');
mock('/__mock/stats?reset=counters');

($st, $b, $head) = $ngx->get('/cold/1');
my ($how) = $head =~ /^X-DQE-Status: (\S+)/m;
my ($up) = $head =~ /^X-Upstream-Status: ([^\r\n]+)/m;
is("$st $how $up", '401 MISS 401',
   'cold: a token fetched for the request, refused: 401 MISS, sent once');

$stats = JSON::PP::decode_json(mock('/__mock/stats?reset=counters'));
is($stats->{token_requests}{POST}, 1, 'cold: one token request');
is(status_of('100006')->{purges}, 0, 'cold: nothing dropped');

# 12 at once, all waiting for the one token, all refused: one [error]
# line a second in each worker, not one a request

mock('/__mock/reject?n=1000&licence=100008');

my @burst = map { $ngx->get_later("/coldburst/$_", 10) } 1 .. 12;
is_deeply([map { $_->() } @burst], [(401) x 12],
          'cold, 12 at once: each gets the 401 of the token it waited for');

my @lines = $ngx->log =~ /\[error\] (\d+)#\d+: .*refused a token just issued for .*licence "100008"/g;
my %pids = map { $_ => 1 } @lines;
is(scalar @lines, scalar keys %pids,
   scalar(@lines) . ' [error] lines from ' . scalar(keys %pids)
   . ' workers: one a second in each');

mock('/__mock/reject?n=0');

# --- bodies -----------------------------------------------------------------

my %len = (file => 1_000_000, mem => 100_000);

for my $where (qw(file mem)) {
    is(($ngx->get("/$where/warm"))[0], 200, "$where: a token");
}

is(mock('/__mock/revoke?licence=100001'), '{"revoked":1}', 'revoked (file)');
is(mock('/__mock/revoke?licence=100002'), '{"revoked":1}', 'revoked (mem)');

for my $where (qw(file mem)) {
    my $data = join '', map { chr(int(rand(256))) } 1 .. $len{$where};

    my ($s, $body, $h) = $ngx->request(
        "POST /$where/check HTTP/1.0\r\nHost: localhost\r\n"
        . "Content-Type: application/octet-stream\r\n"
        . "Content-Length: $len{$where}\r\n\r\n$data", 30);

    my $got = eval { JSON::PP::decode_json($body) } || {};

    is("$s " . ($got->{body_length} // '-'), "200 $len{$where}",
       "$where: 200, the upstream got $len{$where} bytes");
    is($got->{body_sha256}, sha256_hex($data), "$where: the same bytes");
    like($h, qr/^X-Upstream-Status: 401 : 200\r?$/m,
         "$where: \$upstream_status \"401 : 200\"");
    like($h, qr/^X-DQE-Status: RETRY\r?$/m, "$where: RETRY");
    unlike($h, qr/^WWW-Authenticate:/mi, "$where: none of the 401's headers");
}

like($ngx->log, qr/a client request body is buffered to a temporary file/,
     'the 1 MB body was in a temp file');

# --- no retry ---------------------------------------------------------------

for my $where (qw(nobuf off)) {
    is(($ngx->get("/$where/warm"))[0], 200, "$where: a token");
}

mock('/__mock/revoke?licence=100003');
mock('/__mock/revoke?licence=100004');

# more than arrives with the headers: nginx streams it, and keeps none

($st, $b, $head) = $ngx->request(
    "POST /nobuf/x HTTP/1.0\r\nHost: localhost\r\nContent-Length: 100000"
    . "\r\n\r\n" . ('x' x 100_000), 10);
is($st, 401, 'proxy_request_buffering off: the 401 goes to the client');
like($head, qr/^X-Upstream-Status: 401\r?$/m, 'sent once');
is(($ngx->get('/nobuf/y'))[0], 200, 'the next request gets a new token');

($st, $b, $head) = $ngx->get('/off/x');
is($st, 401, 'dqe_oauth_retry_on_401 off: the 401 goes to the client');
like($head, qr/^X-DQE-Status: HIT\r?$/m, 'HIT, not RETRY');
is(($ngx->get('/off/y'))[0], 200, 'the next request gets a new token');

is(status_of('100003')->{retries} . ' ' . status_of('100004')->{retries},
   '0 0', 'no retries counted');

# a subrequest (SSI include) is not sent again: its 401 is what it got

is(($ngx->get('/sub/warm'))[0], 200, 'sub: a token');
mock('/__mock/revoke?licence=100007');

(undef, $b) = $ngx->get('/ssi');
like($b, qr/\A\{"error":"invalid_token"\}\z/, 'an SSI include gets the 401');
is(status_of('100007')->{retries}, 0, 'no retry counted');
like(($ngx->get('/ssi'))[1], qr/\A\{"ok":true/, 'the next include a new token');

# --- an upstream{} block with keep-alive connections, HTTP/1.1 both ways ---

my @ka = $ngx->keepalive(map { "/ka/warm$_" } 1 .. 3);
is_deeply([map { $_->[0] } @ka], [200, 200, 200],
          'keep-alive upstream, a keep-alive client: 3 requests, a token');

mock('/__mock/revoke?licence=100009');

@ka = $ngx->keepalive('/ka/a', '/ka/b', '/ka/c');
is_deeply([map { my ($h) = $_->[2] =~ /^X-DQE-Status: (\S+)/m;
                 "$_->[0] " . ($h // '-') } @ka],
          ['200 RETRY', '200 HIT', '200 HIT'],
          'one HTTP/1.1 connection: the refused request sent again, the '
          . 'connection goes on');

# --- HTTP/2 -----------------------------------------------------------------

my ($h2) = $ngx->h2('/h2/warm');
is_deeply($h2, [200], 'HTTP/2: a token');

mock('/__mock/revoke?licence=100005');
mock('/__mock/stats?reset=counters');

($h2) = $ngx->h2(map { "/h2/s$_" } 1 .. 10);
is_deeply($h2, [(200) x 10], 'HTTP/2, 10 concurrent streams: all 200');

$stats = JSON::PP::decode_json(mock('/__mock/stats?reset=counters'));
is($stats->{token_requests}{POST}, 1, 'one token request');
is(status_of('100005')->{retries}, $stats->{api}{401},
   "the 401s ($stats->{api}{401}) each sent again");

ok($ngx->stop, 'quit');

Test::DQE::log_ok($ngx->log);

done_testing();
