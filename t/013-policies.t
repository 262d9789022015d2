# Bounded policies: a path whose upstream always answers 401 costs at most
# one token request each 10 s (and none with dqe_oauth_purge_on_401 off;
# another status, 403, purges nothing);
# a renewal ahead longer than half a token's usable life is clamped, with
# one [warn]; refusals during a backoff write at most one [error] line a
# second per credential set, saying how many were left out.
#
# Plain Test::More, an nginx of its own: the counts are over whole logs.

use strict;
use warnings;

use Test::More;
use Test::DQE;
use Time::HiRes qw(sleep);

sub mock { Test::DQE::mock(@_) }

my $ngx = Test::DQE::Nginx->new('policies');
my $port = $ngx->port;

# /deny answers 401 to anything: an upstream that refuses every token;
# /forbid 403

my $http = "    server {\n"
    . "        listen 127.0.0.1:$port;\n"
    . "        location /deny { return 401; }\n"
    . "        location /forbid { return 403; }\n"
    . Test::DQE::location('/always401/', licence => 100801,
                          secret => 'bulk-pass')
    . Test::DQE::location('/nopurge/', licence => 100802,
                          secret => 'bulk-pass',
                          extra => 'dqe_oauth_purge_on_401 off;')
    . Test::DQE::location('/short/', licence => 100803, secret => 'bulk-pass',
                          extra => 'dqe_oauth_refresh_ahead 10s;')
    . Test::DQE::location('/refused/', licence => 999999)
    . Test::DQE::location('/forbidden/', licence => 100804,
                          secret => 'bulk-pass')
    . "    }\n";

$http =~ s{(location /(?:always401|nopurge)/ \{.*?proxy_pass )[^;]+;}
          {${1}http://127.0.0.1:$port/deny;}gs;
$http =~ s{(location /forbidden/ \{.*?proxy_pass )[^;]+;}
          {${1}http://127.0.0.1:$port/forbid;}s;

mock('/__mock/reset');
ok($ngx->start(http => $http), 'nginx starts');

# --- 401 purge, bounded ------------------------------------------------------

my @st = map { ($ngx->get("/always401/$_"))[0] } 1 .. 20;
is_deeply(\@st, [(401) x 20], '20 requests to an upstream that answers 401');

like(mock('/__mock/stats?reset=counters'),
     Test::DQE::stats(token_requests => { POST => 2 }),
     'two token requests: the first token, and one after a purge');

my @purged = $ngx->log =~ /\[warn\] .*the API refused the token for .*licence "100801"/g;
is(scalar @purged, 1, 'one purge in 10 s, one [warn]');

# with dqe_oauth_retry_on_401 (the default): the first request's token,
# fetched for it, refused: passed on; the second's sent again once with
# the token after the purge, refused too: passed on

like($ngx->log, qr/\[error\] .*the API refused a token just issued for .*licence "100801".*check that the licence is allowed this API/,
     'an [error] line: a token just issued refused, what to check');

@st = map { ($ngx->get("/nopurge/$_"))[0] } 1 .. 20;
is_deeply(\@st, [(401) x 20], 'the same with dqe_oauth_purge_on_401 off');

like(mock('/__mock/stats?reset=counters'),
     Test::DQE::stats(token_requests => { POST => 1 }),
     'one token request: never purged');
unlike($ngx->log, qr/the API refused the token for .*licence "100802"/,
       'no purge line');

@st = map { ($ngx->get("/forbidden/$_"))[0] } 1 .. 5;
is_deeply(\@st, [(403) x 5], 'an upstream that answers 403');

like(mock('/__mock/stats?reset=counters'),
     Test::DQE::stats(token_requests => { POST => 1 }),
     'one token request: only a 401 drops the token');

# --- a renewal ahead longer than short tokens ------------------------------

mock('/__mock/config?ttl=5');

for my $i (1 .. 10) {
    $ngx->get("/short/$i");
    sleep 0.1;
}

like(mock('/__mock/stats?reset=counters'),
     Test::DQE::stats(token_requests => { POST => 1 }),
     '10 requests in a second with 5 s tokens and a 10 s renewal ahead: '
     . 'one token request, not one each');

my @warn = $ngx->log =~ /\[warn\] .*dqe_oauth_refresh_ahead for .*licence "100803".* is more than half of the token's lifetime less the expiry margin \(DQE gives 5 s\): renewals start halfway/g;
is(scalar @warn, 1, 'one [warn] says so');

mock('/__mock/config?ttl=300');

# --- refusals during a backoff: one [error] a second -----------------------

@st = map { ($ngx->get("/refused/$_"))[0] } 1 .. 6;
is_deeply(\@st, [(502) x 6], 'a refused licence: 6 requests, 6 errors');

my @lines = $ngx->log =~ /(\[error\] .*no token for .*licence "999999".*)/g;
is(scalar @lines, 1, 'one [error] line for them');

sleep 1.1;

($st[0]) = $ngx->get('/refused/7');
is($st[0], 502, 'a second later, another');

@lines = $ngx->log =~ /(\[error\] .*no token for .*licence "999999".*)/g;
is(scalar @lines, 2, 'its own [error] line');
like($lines[-1] // '', qr/invalid_client .*; next token request in \d+ ms; 5 more refused since the last line/,
     'saying how many were left out');

@st = map { ($ngx->get("/refused/again$_"))[0] } 1 .. 3;
sleep 1.1;
($st[0]) = $ngx->get('/refused/8');

@lines = $ngx->log =~ /(\[error\] .*no token for .*licence "999999".*)/g;
is(scalar @lines, 3, 'a second later, a third line');
like($lines[-1] // '', qr/; 3 more refused since the last line/,
     'the count starts again after each line: 3, not 8');

like(mock('/__mock/stats?reset=counters'),
     Test::DQE::stats(token_requests => { POST => 1 }),
     'DQE was asked once: the others were refused during the backoff');

ok($ngx->stop, 'quit');

Test::DQE::log_ok($ngx->log,
                  qr/\[error\](?!.*no token for .*licence "999999"|.*refused a token just issued for .*licence "100801")/);

done_testing();
