# Promises of the README, each asserted by what requests get, not by a
# count that another path could reproduce: per request, $dqe_oauth_status
# (X-DQE-Status) and the token the upstream received (an echo location of
# this nginx answers the Authorization header it gets; tokens are named
# t1, t2... in the order they first appear, so that none is printed).
#
#   the cache key   two locations that differ only in the secret get
#                   tokens of their own; a wrong secret is refused even
#                   once the right one has a token, and is no reason to
#                   hold the right one off; the same for the licence, the
#                   scope and the server
#   WAIT            a request that comes while another's fetch is in
#                   flight waits for it and gets its token
#   backoff         1 s doubling after a server or network error (up to
#                   30 s: a Retry-After of 16 s doubles to 30, not 32),
#                   10 s doubling after a refusal, back to 1 s after a
#                   token: the [error] lines' "next token request in N ms"
#   stale if error  a background renewal that fails while the token is
#                   before its cutoff: the next requests go on with it
#   renewal ahead   past the refresh point and before the cutoff: RENEW
#                   (the upstream gets the current token), then HIT with
#                   the new one; before the refresh point: HIT
#   expiry margin   from DQE's expiry less dqe_oauth_expiry_margin (at
#                   most a quarter of the lifetime) on, the token is not
#                   used: MISS, a new token, while DQE still takes the old
#
# Plain Test::More, an nginx of its own, about 22 s.  Tokens live 10 s
# at the mock.  Each check is timed from the requests it depends on: the time a
# request was sent bounds from below when DQE issued its token, the time
# its answer came bounds from above when the module started its clock,
# so a slow machine can delay a check (which is tolerated within the
# margins below) but never bring it too early.

use strict;
use warnings;

use Test::More;
use Test::DQE;
use Time::HiRes qw(sleep time);

sub mock { Test::DQE::mock(@_) }

my $ngx = Test::DQE::Nginx->new('promises');
my $port = $ngx->port;
my $close = $ENV{TEST_NGINX_DQE_FAULT_CLOSE};

# a location of ours whose upstream is the echo location

sub loc { Test::DQE::echo_location(shift, $port, @_) }

my %bulk = (secret => 'bulk-pass');

my $http = "    server {\n"
    . "        listen 127.0.0.1:$port;\n"
    . "        location /echo { return 200 \$http_authorization; }\n"

    # the cache key: a licence with two valid secrets (a rotation), and
    # wrong ones differing from them at the end, in the middle, at the
    # start, shorter, longer

    . loc('/key-old/', licence => 333333, secret => 's3cr3t-pass')
    . loc('/key-new/', licence => 333333, secret => 's3cr3t-pass-new')
    . loc('/wrong-last/', licence => 333333, secret => 's3cr3t-pasS')
    . loc('/wrong-middle/', licence => 333333, secret => 's3cr3t_pass')
    . loc('/wrong-first/', licence => 333333, secret => 'xs3cr3t-pass')
    . loc('/wrong-short/', licence => 333333, secret => 's3cr3t-pas')
    . loc('/wrong-long/', licence => 333333, secret => 's3cr3t-pass-newX')
    . loc('/rev-wrong/', licence => 654321, secret => 'other-passX')
    . loc('/rev-right/', licence => 654321, secret => 'other-pass')
    . loc('/lic-good/', licence => 123456)
    . loc('/lic-expired/', licence => 999999)
    . loc('/scope-granted/', licence => 222222, scope => 'client_email')
    . loc('/scope-not/', licence => 222222, scope => 'client_address')
    . loc('/server-down/', licence => 123456, port => $close)
    . loc('/wait/', licence => 100708, %bulk)

    # freshness, with 10 s tokens: renewal 4 s ahead of a cutoff 1 s
    # before DQE's expiry (at 5 s, cutoff at 9 s); the same with 40%;
    # no renewal ahead, a margin of 1 s (cutoff at 9 s); the default
    # margin, 10 s, capped at a quarter of 10 s (cutoff at 7.5 s)

    . loc('/ahead/', licence => 100701, %bulk,
          extra => 'dqe_oauth_expiry_margin 1s; dqe_oauth_refresh_ahead 4s;')
    . loc('/stale/', licence => 100702, %bulk,
          extra => 'dqe_oauth_expiry_margin 1s; dqe_oauth_refresh_ahead 40%;')
    . loc('/margin/', licence => 100703, %bulk,
          extra => 'dqe_oauth_expiry_margin 1s; dqe_oauth_refresh_ahead off;')
    . loc('/capped/', licence => 100704, %bulk,
          extra => 'dqe_oauth_refresh_ahead off;')
    . loc('/recover/', licence => 100705, %bulk,
          extra => 'dqe_oauth_expiry_margin 1s; dqe_oauth_refresh_ahead 4s;')

    # backoff: a token server that always closes the connection, and a
    # licence DQE refuses

    . loc('/flaky/', licence => 100706, %bulk, port => $close)
    . loc('/refused/', licence => 999999, scope => 'client_email')
    . loc('/cap/', licence => 100707, %bulk)
    . "    }\n";

mock('/__mock/reset');
ok($ngx->start(http => $http), 'nginx starts');

# "200 HIT t3": the status, $dqe_oauth_status and the token the upstream got

sub req { $ngx->outcome(@_) }

# a first request that fetches: the name of its token, or 'none'

sub miss {
    my ($path, $what) = @_;

    my $got = req($path);
    like($got, qr/^200 MISS t\d+$/, "$what: MISS, a token");

    return $got =~ /(t\d+)$/ ? $1 : 'none';
}

# until time t (from Time::HiRes::time)

sub at {
    my ($t) = @_;
    my $d = $t - time;
    sleep $d if $d > 0;
}

# the error log's lines matching re, polled until there are n of them

sub lines {
    my ($re, $n, $timeout) = @_;
    my @l;

    for (1 .. ($timeout // 2) * 20) {
        @l = grep { /$re/ } split /\n/, $ngx->log;
        last if @l >= $n;
        sleep 0.05;
    }

    return @l;
}

# a renewal started by the last request: requests go on with the old
# token while it is in flight (HIT, or STALE after a failed renewal),
# then get the new one

sub renewed {
    my ($path, $old) = @_;
    my $got;

    for (1 .. 60) {
        $got = req($path);
        last if $got !~ /^200 (?:HIT|STALE) \Q$old\E$/;
        sleep 0.05;
    }

    return $got;
}

# "next token request in N ms" of the [error] lines of a credential set

sub backoffs {
    my ($licence, $scope, $n) = @_;

    return map { /next token request in (\d+) ms/ ? $1 : 'none' }
           lines(qr/\[error\] .*no token for .*licence "$licence", scope "$scope"/,
                 $n);
}


# --- the cache key: the server, the licence, the scope, the secret ----------

mock('/__mock/stats?reset=counters');

my $old = miss('/key-old/1', 'licence 333333, its old secret');
my $new = miss('/key-new/1', 'the same licence, its new secret');

isnt($new, $old, 'a token of its own for each secret');
is(req('/key-old/2'), "200 HIT $old", 'the old secret: its token, cached');
is(req('/key-new/2'), "200 HIT $new", 'the new secret: its token, cached');

for my $wrong (qw(last middle first short long)) {
    is(req("/wrong-$wrong/1"), '502 ERROR -',
       "a wrong secret (differing $wrong) is refused, whatever is cached");
}

is(req('/rev-wrong/1'), '502 ERROR -', 'a wrong secret first: refused');
my $rev = miss('/rev-right/1', 'then the right one, not held off');
is(req('/rev-wrong/2'), '502 ERROR -', 'the wrong one still refused');

my $lic = miss('/lic-good/1', 'licence 123456');
is(req('/lic-expired/1'), '502 ERROR -',
   'the same secret and scope with an expired licence: refused');

miss('/scope-granted/1', 'licence 222222, the scope it has');
is(req('/scope-not/1'), '502 ERROR -', 'the same with a scope it has not');

is(req('/server-down/1'), '502 ERROR -',
   'the credentials of /lic-good/ at a token server that fails: no token');
is(req('/lic-good/2'), "200 HIT $lic", '/lic-good/ keeps its own');
is(req('/key-old/3'), "200 HIT $old", 'the old secret: still its token');
is(req('/key-new/3'), "200 HIT $new", 'the new secret: still its token');

like(mock('/__mock/stats?reset=counters'),
     Test::DQE::stats(token_requests => { POST => 14 }, tokens_issued => 5),
     'one token request per credential set, five of them good');


# --- WAIT: a fetch in flight (DQE takes a second) is waited for ------------

mock('/__mock/fault?delay=1&count=1');

my $first = $ngx->outcome_later('/wait/1');

for (1 .. 60) {
    last if mock('/__mock/stats') =~ /"token_requests":\{"GET":0,"POST":1\}/;
    sleep 0.05;
}

my $second = req('/wait/2');
$first = $first->();

like($first, qr/^200 MISS t\d+$/, '/wait/: the first request fetches: MISS');
is($second, '200 WAIT ' . ($first =~ /(t\d+)$/ ? $1 : 'none'),
   '/wait/: the second waits for it: WAIT, the same token');
like(mock('/__mock/stats?reset=counters'),
     Test::DQE::stats(token_requests => { POST => 1 }),
     '/wait/: one token request');


# --- freshness and backoff, on one clock ------------------------------------

mock('/__mock/config?ttl=10');

my $t0 = time;

my %tok;
my %done;      # when the first answer came: the module's clock began before

for my $loc (qw(ahead stale margin capped)) {
    $tok{$loc} = miss("/$loc/1", "/$loc/: the first request");
    $done{$loc} = time;
}

# recover: the first token request fails, the next one gets a token

mock('/__mock/fault?status=500&count=1');
is(req('/recover/1'), '502 ERROR -', '/recover/: DQE fails once');
$done{recover} = time;

is(req('/flaky/1'), '502 ERROR -', '/flaky/: the token server fails');
$done{flaky} = time;

is(req('/refused/1'), '502 ERROR -', '/refused/: DQE refuses the licence');
$done{refused} = time;

mock('/__mock/fault?status=503&header=Retry-After:16&count=1');
is(req('/cap/1'), '502 ERROR -', '/cap/: DQE answers 503, Retry-After: 16');
$done{cap} = time;

at($done{recover} + 1.2);
$tok{recover} = miss('/recover/2', '/recover/: after its backoff');
$done{recover} = time;

at($done{flaky} + 1.2);
is(req('/flaky/2'), '502 ERROR -', '/flaky/: after 1 s, DQE asked again');
$done{flaky} = time;

at($done{flaky} + 0.3);
is(req('/flaky/3'), '502 ERROR -', '/flaky/: during the backoff, at once');

at($done{flaky} + 2.2);
is(req('/flaky/4'), '502 ERROR -', '/flaky/: after 2 s, DQE asked again');
$done{flaky} = time;

# 3.5 s in: before every refresh point (5 s, or up to 1 s earlier: the
# spread this instance drew, up to a quarter of the 4 s ahead) and cutoff
# (7.5 s, 9 s)

at($t0 + 3.5);

for my $loc (qw(ahead stale margin capped)) {
    is(req("/$loc/2"), "200 HIT $tok{$loc}",
       "/$loc/: before its refresh point, the cached token");
}

# stale if error: past the refresh point (40% of 10 s before the cutoff,
# 5 s in), the renewal fails; its token goes on

at($done{stale} + 5.3);
mock('/__mock/fault?status=500&count=1');

is(req('/stale/3'), "200 RENEW $tok{stale}",
   '/stale/: past its refresh point, RENEW, with the current token');

my @warn = lines(qr/\[warn\] .*renewing the token for .*licence "100702"/, 1);
like($warn[0] // 'no line', qr/failed: DQE answered 500 .*; the current token is used until its cutoff, next try in 1000 ms/,
     '/stale/: the renewal failed, one [warn]: the token is kept');
my $stale_failed = time;

is(req('/stale/4'), "200 STALE $tok{stale}",
   '/stale/: the next request goes on with the token, STALE');
is(req('/stale/5'), "200 STALE $tok{stale}",
   '/stale/: and the next, no renewal during the backoff');
mock('/__mock/fault?clear=1');

# renewal ahead: past the refresh point (4 s before the cutoff), before
# the cutoff

at($done{ahead} + 5.3);

is(req('/ahead/3'), "200 RENEW $tok{ahead}",
   '/ahead/: past its refresh point, RENEW, with the current token');

my $got = renewed('/ahead/4', $tok{ahead});
like($got, qr/^200 HIT t\d+$/, '/ahead/: then HIT');
isnt($got =~ /(t\d+)$/ ? $1 : '', $tok{ahead},
     '/ahead/: with the new token, renewed before its cutoff');
$tok{ahead} = $got =~ /(t\d+)$/ ? $1 : 'none';

# the cap of the default margin: a quarter of 10 s, not more

at($t0 + 6);
is(req('/capped/3'), "200 HIT $tok{capped}",
   '/capped/: 6 s in, before its cutoff (10 s less a quarter)');

# stale if error: after the backoff (1 s), another renewal, before the
# cutoff

at($stale_failed + 1.3);
is(req('/stale/6'), "200 RENEW $tok{stale}",
   '/stale/: after the backoff, another renewal');

$got = renewed('/stale/7', $tok{stale});
like($got, qr/^200 HIT t\d+$/, '/stale/: then HIT');
isnt($got =~ /(t\d+)$/ ? $1 : '', $tok{stale}, '/stale/: with a new token');

# backoff after a token: from 1 s again.  /recover/'s renewal fails.

at($done{recover} + 5.3);
mock('/__mock/fault?status=500&count=1');

is(req('/recover/3'), "200 RENEW $tok{recover}",
   '/recover/: past its refresh point, RENEW');

@warn = lines(qr/\[warn\] .*renewing the token for .*licence "100705"/, 1);
like($warn[0] // 'no line', qr/; the current token is used until its cutoff, next try in 1000 ms/,
     '/recover/: its renewal failed: 1 s, the backoff begins again');
mock('/__mock/fault?clear=1');

at($done{flaky} + 4.2);
is(req('/flaky/5'), '502 ERROR -', '/flaky/: after 4 s, DQE asked again');

# expiry margin: the default one, capped at a quarter of 10 s: cutoff at
# 7.5 s, DQE's expiry at 10 s

at($done{capped} + 7.7);
$got = req('/capped/4');
like($got, qr/^200 MISS t\d+$/,
     '/capped/: past its cutoff, before DQE\'s expiry: MISS');
isnt($got =~ /(t\d+)$/ ? $1 : '', $tok{capped}, '/capped/: a new token');

# dqe_oauth_expiry_margin 1s: cutoff at 9 s; no renewal ahead

at($done{margin} + 8);
is(req('/margin/3'), "200 HIT $tok{margin}",
   '/margin/: 8 s in, before its cutoff, no renewal ahead: HIT');

at($done{margin} + 9.2);
$got = req('/margin/4');
like($got, qr/^200 MISS t\d+$/,
     '/margin/: past its cutoff, before DQE\'s expiry: MISS');
isnt($got =~ /(t\d+)$/ ? $1 : '', $tok{margin}, '/margin/: a new token');
is(req('/margin/5'), '200 HIT ' . ($got =~ /(t\d+)$/ ? $1 : ''),
   '/margin/: which the next request has');

is(req('/ahead/5'), "200 HIT $tok{ahead}", '/ahead/: the renewed token');

# refusals: 10 s, then 20 s

at($done{refused} + 10.2);
is(req('/refused/2'), '502 ERROR -', '/refused/: after 10 s, DQE asked again');

# after a Retry-After of 16 s, a server error: the backoff doubles, to
# its maximum

at($done{cap} + 16.2);
mock('/__mock/fault?status=500&count=1');
is(req('/cap/2'), '502 ERROR -', '/cap/: after 16 s, DQE fails again');

# the backoffs logged

is_deeply([backoffs(100706, 'client_address', 4)], [1000, 2000, 4000, 8000],
          '/flaky/: backoffs of 1, 2, 4, 8 s');
is_deeply([backoffs(999999, 'client_email', 2)], [10000, 20000],
          '/refused/: backoffs of 10, 20 s');
is_deeply([backoffs(100705, 'client_address', 1)], [1000],
          '/recover/: a backoff of 1 s');
is_deeply([backoffs(100707, 'client_address', 2)], [16000, 30000],
          '/cap/: 16 s (Retry-After), then 30 s: doubled, at most 30 s');

my @fetches = lines(qr/dqe_oauth fetch for .*licence "100706"/, 4);
is(scalar @fetches, 4,
   '/flaky/: 4 token requests, none during a backoff');

ok($ngx->stop, 'quit');

mock('/__mock/reset');

Test::DQE::log_ok($ngx->log,
                  qr/\[error\](?!.*(?:no token for|upstream prematurely closed))/);

done_testing();
