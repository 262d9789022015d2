# dqe_oauth_keep_warm: the token is fetched when the workers start and
# renewed with no traffic at all, once for all workers; no client waits
# for DQE, not even the first.  A refused licence is logged once per
# backoff.  Reload and quit are not held up by it.
#
# Plain Test::More, an nginx of its own (master, two workers); tokens
# live 3 s at the mock, so that renewals come quickly.

use strict;
use warnings;

use Test::More;
use Test::DQE;
use Time::HiRes qw(sleep time);

sub mock { Test::DQE::mock(@_) }

sub stat_of {
    my ($stats, $key) = @_;
    my ($v) = $stats =~ /"\Q$key\E":(\d+)/;
    return $v // -1;
}

mock('/__mock/reset');
mock('/__mock/config?ttl=3');

my $ngx = Test::DQE::Nginx->new('keep-warm');

my $status = 'add_header X-DQE-Status $dqe_oauth_status always;';

my $http = "    server {\n"
    . "        listen 127.0.0.1:${\ $ngx->port};\n"
    . Test::DQE::location('/warm/', licence => 100700, secret => 'bulk-pass',
                          extra => "dqe_oauth_keep_warm on; $status")
    . Test::DQE::location('/refused/', licence => 999999,
                          extra => "dqe_oauth_keep_warm on; $status")
    . Test::DQE::location('/cold/', licence => 100701, secret => 'bulk-pass',
                          extra => $status)
    . "    }\n";

ok($ngx->start(http => $http), 'nginx starts, no request is made');

my @started;
for (1 .. 50) {
    @started = $ngx->log =~ /\[notice\] .*ngx_http_dqe_oauth_module\/\d+\.\d+\.\d+: 3 credential sets, 2 kept warm/g;
    last if @started >= 2;
    sleep 0.1;
}

is(scalar @started, 2, 'each worker logs the version when it starts');

# both keep-warm sets asked DQE (one got a token, one a refusal); then a
# moment more, in which nothing else may come

my $stats = '';
for (1 .. 50) {
    $stats = mock('/__mock/stats');
    last if stat_of($stats, 'tokens_issued') >= 1
            && stat_of($stats, 'invalid_client') >= 1;
    sleep 0.1;
}

sleep 0.5;
$stats = mock('/__mock/stats');

is(stat_of($stats, 'tokens_issued'), 1,
   'the workers got the token without any request');
like($stats, Test::DQE::stats(token_requests => { POST => 2 },
                              token_errors => { invalid_client => 1 }),
     'one token request per keep-warm credential set, for both workers; '
     . 'none for the location without keep-warm');

my @r = $ngx->keepalive('/warm/first', '/cold/first');
is($r[0][0], 200, 'the first request');
like($r[0][2], qr/^X-DQE-Status: HIT/mi, 'found the token there: HIT');
like($r[1][2], qr/^X-DQE-Status: MISS/mi,
     'without keep-warm, the first request waits: MISS');

mock('/__mock/stats?reset=counters');

sleep 7.5;       # more than two lifetimes, no request: a renewal each 1.65 s

$stats = mock('/__mock/stats?reset=counters');
my $renewals = stat_of($stats, 'refresh_ok');

ok($renewals >= 3 && $renewals <= 5,
   "$renewals renewals in 7.5 s of 3 s tokens, with no traffic");
is(stat_of($stats, 'tokens_issued'), $renewals,
   'each one token request, for both workers');

@r = $ngx->keepalive('/warm/idle');
is($r[0][0], 200, 'a request after the idle time');
like($r[0][2], qr/^X-DQE-Status: HIT/mi, 'HIT: the token was kept warm');

# the refused licence: logged once per backoff (10 s, then 20 s...)

my @warn = $ngx->log =~ /\[warn\] .*the keep-warm fetch of the token for .*licence "999999".*failed: DQE answered 400 invalid_client/g;
is(scalar @warn, 1, 'a refused licence: one [warn] in 8.5 s (backoff)');

@r = $ngx->keepalive('/refused/x');
is($r[0][0], 502, 'a request for it gets the error status at once');
like($ngx->log, qr/\[error\] .*no token for .*licence "999999".*invalid_client.*next token request in \d+ ms/,
     'and its [error] line');

ok($ngx->reload, 'reload: the old workers leave (the timer does not hold '
                 . 'them)');

@r = $ngx->keepalive('/warm/after-reload');
like($r[0][2] // '', qr/^X-DQE-Status: HIT/mi, 'the new workers: HIT');

ok($ngx->stop, 'quit');

Test::DQE::log_ok($ngx->log,
                  qr/\[error\](?!.*no token for .*licence "999999")/);

mock('/__mock/reset');

done_testing();
