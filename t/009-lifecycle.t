# Lifecycle scenarios Test::Nginx cannot express: "nginx -s reload" under
# load, a worker killed (-9) while its token request is in flight, and a
# steady load across ten token lifetimes (2 s each at the mock).
# Plain Test::More: this script runs nginx itself (master process, two
# workers, "reuseport" so that connections land on both) and talks HTTP.

use strict;
use warnings;

use Test::More;
use Test::DQE;
use Time::HiRes qw(sleep time);

my $ngx = Test::DQE::Nginx->new('lifecycle');
my $root = $ngx->root;
my $port = $ngx->port;

sub http {
    my ($scope) = @_;

    return <<"CONF";
    log_format soak '\$status \$dqe_oauth_status';

    server {
        listen 127.0.0.1:$port reuseport;

        location /api/ {
            dqe_oauth_server  127.0.0.1:$ENV{TEST_NGINX_DQE_PORT};
            dqe_oauth_licence 123456;
            dqe_oauth_secret  s3cr3t-pass;
            dqe_oauth_scope   $scope;
            proxy_pass https://127.0.0.1:$ENV{TEST_NGINX_DQE_PORT};
        }

        location /soak/ {
            dqe_oauth_server  127.0.0.1:$ENV{TEST_NGINX_DQE_PORT};
            dqe_oauth_licence 123456;
            dqe_oauth_secret  s3cr3t-pass;
            dqe_oauth_scope   client_civility;
            access_log logs/soak.log soak;
            proxy_pass https://127.0.0.1:$ENV{TEST_NGINX_DQE_PORT};
        }

        location /abort/ {
            dqe_oauth_server  127.0.0.1:$ENV{TEST_NGINX_DQE_PORT};
            dqe_oauth_licence 123456;
            dqe_oauth_secret  s3cr3t-pass;
            dqe_oauth_scope   client_general;
            proxy_pass https://127.0.0.1:$ENV{TEST_NGINX_DQE_PORT};
        }

        location /phone/ {
            dqe_oauth_server  127.0.0.1:$ENV{TEST_NGINX_DQE_PORT};
            dqe_oauth_licence 123456;
            dqe_oauth_secret  s3cr3t-pass;
            dqe_oauth_scope   client_phone;
            proxy_pass https://127.0.0.1:$ENV{TEST_NGINX_DQE_PORT};
        }
    }
CONF
}

sub api { $ngx->get(@_) }
sub mock { Test::DQE::mock(@_) }
sub workers { $ngx->workers }

ok($ngx->start(http => http('client_address')), 'nginx starts');

# --- reload under load keeps the cached token ---------------------------

my ($status, $body) = api('/api/warm');
is($status, 200, 'a first request gets a token');
mock('/__mock/stats?reset=counters');

my $out = "$root/load.out";
my @kids;

for my $k (1 .. 4) {
    my $pid = fork();
    die "fork: $!" unless defined $pid;

    if ($pid == 0) {
        open my $fh, '>', "$out.$k" or die $!;
        my $end = time + 2.5;
        my $i = 0;
        while (time < $end) {
            my ($st) = api("/api/load/$k/" . $i++, 10);
            print $fh "$st\n";
        }
        close $fh;
        POSIX::_exit(0);
    }

    push @kids, $pid;
}

sleep 0.8;
ok($ngx->run('-s', 'reload'), 'reload during the load');
waitpid($_, 0) for @kids;

my %count;
for my $k (1 .. 4) {
    open my $fh, '<', "$out.$k" or die $!;
    $count{$_}++ for map { chomp; $_ } <$fh>;
}

my $total = 0;
$total += $_ for values %count;

ok($total > 20, "the load made $total requests");
is_deeply([keys %count], ['200'],
          'every request during the reload got 200 ('
          . join(', ', map { "$_: $count{$_}" } sort keys %count) . ')');

($status) = api('/api/after-reload');
is($status, 200, 'a request to the new workers');

like(mock('/__mock/stats?reset=counters'),
     qr/"token_requests":\{"GET":0,"POST":0\}.*"api":\{"200":\d+,"401":0\}/,
     'no token request across the reload: the zone kept the token');

# --- a changed scope after a reload gets its own key -----------------------

ok($ngx->reload(http => http('client_email')), 'reload with another scope');

my $ok = 0;
for (1 .. 50) {
    ($status, $body) = api('/api/changed');
    if ($status == 200 && $body =~ /"scope":"client_email"/) {
        $ok = 1;
        last;
    }
    sleep 0.1;
}

ok($ok, 'the new scope is used once the new workers run');
like(mock('/__mock/stats?reset=counters'), qr/"token_requests":\{"GET":0,"POST":1\}/,
     'one token request, for the new key');

# --- kill -9 of the worker whose token request is in flight ----------------

mock('/__mock/fault?delay=3&count=1');

my $victim = fork();
die "fork: $!" unless defined $victim;

if ($victim == 0) {
    api('/phone/first', 10);
    POSIX::_exit(0);
}

my $fetcher;
for (1 .. 100) {
    open my $fh, '<', "$root/logs/error.log" or die $!;
    while (<$fh>) {
        if (/^\S+ \S+ \[debug\] (\d+)#\d+: .*dqe_oauth fetch for .*client_phone/) {
            $fetcher = $1;
        }
    }
    close $fh;
    last if $fetcher;
    sleep 0.05;
}

ok($fetcher, "the token request is in flight in worker " . ($fetcher // '?'));
ok(kill('KILL', $fetcher), 'kill -9 that worker') if $fetcher;
waitpid($victim, 0);

# the others must not wait for a fetch that will never end

my @st;
for my $i (1 .. 4) {
    ($status, $body) = api("/phone/after/$i", 20);
    push @st, $status;
}

is_deeply(\@st, [200, 200, 200, 200],
          'requests after the kill get a token (mark of the dead worker '
          . 'taken over)');

like(mock('/__mock/stats?reset=counters'),
     qr/"token_requests":\{"GET":0,"POST":2\}/,
     'two token requests: the killed one and the take-over');

my $log = $ngx->log;
like($log, qr/\[warn\] .*dqe_oauth: taking over the token request for .*scope "client_phone" left unfinished by process $fetcher\b/,
     'the take-over is logged');
unlike($log, qr/s3cr3t/, 'no secret in the debug log');

# --- a client that leaves during the fetch: the fetch goes on -------------

mock('/__mock/stats?reset=counters');
mock('/__mock/fault?delay=2&count=1');

($status) = api('/abort/first', 0.5);
is($status, 0, 'a client gives up while its token request is in flight');

sleep 0.3;
($status) = api('/abort/second', 10);
is($status, 200, 'the next request gets the token of that fetch');

$log = $ngx->log;
unlike($log, qr/\[error\] .*no token for .*scope "client_general"/,
       'the abort is not taken for a failure of DQE');
# (tokens_issued is not looked at: the token request that the kill -9
# above left at the mock may end in this count)
like(mock('/__mock/stats?reset=counters'),
     qr/"token_requests":\{"GET":0,"POST":1\}/,
     'one token request: the fetch outlived the client that started it');

# --- steady load across ten token lifetimes -------------------------------

like(mock('/__mock/config?ttl=2'), qr/"ttl":\s*2/, 'tokens live 2 s');

($status) = api('/soak/warm');
is($status, 200, 'the first request fetches a token');
mock('/__mock/stats?reset=counters');

@kids = ();

for my $k (1 .. 4) {
    my $pid = fork();
    die "fork: $!" unless defined $pid;

    if ($pid == 0) {
        open my $fh, '>', "$out.soak.$k" or die $!;
        my $end = time + 20;
        my $i = 0;
        while (time < $end) {
            my ($st) = api("/soak/$k/" . $i++, 10);
            print $fh "$st\n";
            sleep 0.05;
        }
        close $fh;
        POSIX::_exit(0);
    }

    push @kids, $pid;
}

waitpid($_, 0) for @kids;

%count = ();
for my $k (1 .. 4) {
    open my $fh, '<', "$out.soak.$k" or die $!;
    $count{$_}++ for map { chomp; $_ } <$fh>;
}

is_deeply([keys %count], ['200'],
          'every request of the soak got 200 ('
          . join(', ', map { "$_: $count{$_}" } sort keys %count) . ')');

my %outcome;
open my $fh, '<', "$root/logs/soak.log" or die $!;
my @lines = <$fh>;
close $fh;
shift @lines;                       # the warm-up request
$outcome{(split ' ', $_)[1]}++ for @lines;

my $seen = join ', ', map { "$_: $outcome{$_}" } sort keys %outcome;

ok(!$outcome{MISS} && !$outcome{WAIT} && !$outcome{ERROR},
   "no request waited for the token endpoint ($seen)");

my $renewals = $outcome{RENEW} || 0;
my $stats = mock('/__mock/stats?reset=1');
my ($posts) = $stats =~ /"token_requests":\{"GET":0,"POST":(\d+)\}/;

ok($renewals >= 10 && $renewals <= 22,
   "$renewals background renewals in 20 s of 2 s tokens, not per worker");
is($posts, $renewals, 'one token request per renewal');
like($stats, qr/"api":\{"200":\d+,"401":0\}/, 'the API saw no 401');

done_testing();
