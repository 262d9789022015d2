# Lifecycle scenarios Test::Nginx cannot express: "nginx -s reload" under
# load, a worker killed (-9) while its token request is in flight, and a
# steady load across ten token lifetimes (2 s each at the mock).
# Plain Test::More: this script runs nginx itself (master process, two
# workers, "reuseport" so that connections land on both) and talks HTTP.

use strict;
use warnings;

use Test::More;
use Test::DQE;
use Cwd qw(getcwd);
use File::Path qw(make_path remove_tree);
use IO::Socket::INET;
use Time::HiRes qw(sleep time alarm);

my $nginx = $ENV{TEST_NGINX_BINARY} || '/usr/sbin/nginx';
my $root = getcwd() . '/t/servroot-lifecycle';
my $port = Test::DQE::free_port();
my ($dqe, $ctl, $ca) = @ENV{qw(TEST_NGINX_DQE_PORT
    TEST_NGINX_DQE_CTL_PORT TEST_NGINX_DQE_CA)};

sub write_conf {
    my ($scope) = @_;

    open my $fh, '>', "$root/conf/nginx.conf" or die $!;
    print $fh <<"CONF";
$ENV{TEST_NGINX_DQE_LOAD}
master_process on;
worker_processes 2;
daemon on;
pid logs/nginx.pid;
error_log logs/error.log debug;

events {
    worker_connections 1024;
}

http {
    access_log off;
    log_format soak '\$status \$dqe_oauth_status';
    proxy_ssl_verify on;
    proxy_ssl_trusted_certificate $ca;

    server {
        listen 127.0.0.1:$port reuseport;

        location /api/ {
            dqe_oauth_server  127.0.0.1:$dqe;
            dqe_oauth_licence 123456;
            dqe_oauth_secret  s3cr3t-pass;
            dqe_oauth_scope   $scope;
            proxy_pass https://127.0.0.1:$dqe;
        }

        location /soak/ {
            dqe_oauth_server  127.0.0.1:$dqe;
            dqe_oauth_licence 123456;
            dqe_oauth_secret  s3cr3t-pass;
            dqe_oauth_scope   client_civility;
            access_log logs/soak.log soak;
            proxy_pass https://127.0.0.1:$dqe;
        }

        location /abort/ {
            dqe_oauth_server  127.0.0.1:$dqe;
            dqe_oauth_licence 123456;
            dqe_oauth_secret  s3cr3t-pass;
            dqe_oauth_scope   client_general;
            proxy_pass https://127.0.0.1:$dqe;
        }

        location /phone/ {
            dqe_oauth_server  127.0.0.1:$dqe;
            dqe_oauth_licence 123456;
            dqe_oauth_secret  s3cr3t-pass;
            dqe_oauth_scope   client_phone;
            proxy_pass https://127.0.0.1:$dqe;
        }
    }
}
CONF
    close $fh;
}

sub nginx {
    my $pid = fork();
    die "fork: $!" unless defined $pid;

    if ($pid == 0) {
        open STDERR, '>', '/dev/null';
        { exec $nginx, '-p', "$root/", '-c', "$root/conf/nginx.conf", @_ }
        POSIX::_exit(127);
    }

    waitpid($pid, 0);

    return $? == 0;
}

# one HTTP/1.0 GET; returns (status, body), status 0 on failure

sub get {
    my ($hostport, $path, $timeout) = @_;

    my $s = IO::Socket::INET->new(PeerAddr => $hostport,
                                  Timeout => $timeout || 15)
        or return (0, "connect: $!");

    print $s "GET $path HTTP/1.0\r\nHost: localhost\r\n\r\n";

    my $resp = '';
    eval {
        local $SIG{ALRM} = sub { die "timeout\n" };
        alarm($timeout || 15);
        while (my $n = sysread($s, my $buf, 65536)) {
            $resp .= $buf;
        }
        alarm 0;
    };
    close $s;

    my ($status) = $resp =~ m{^HTTP/1\.\d (\d+)};
    my ($body) = $resp =~ /\r\n\r\n(.*)\z/s;

    return ($status || 0, $body // '');
}

sub api { get("127.0.0.1:$port", @_) }
sub mock { (get("127.0.0.1:$ctl", @_))[1] }

sub workers {
    my $master = `cat $root/logs/nginx.pid`;
    chomp $master;
    my @pids = split ' ', `pgrep -P $master`;
    return @pids;
}

remove_tree($root);
make_path("$root/conf", "$root/logs");
write_conf('client_address');

ok(nginx(), 'nginx starts');

END {
    nginx('-s', 'stop') if -f "$root/logs/nginx.pid";
}

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
ok(nginx('-s', 'reload'), 'reload during the load');
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

write_conf('client_email');
ok(nginx('-s', 'reload'), 'reload with another scope');

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

my $log = do { local (@ARGV, $/) = "$root/logs/error.log"; <> };
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

$log = do { local (@ARGV, $/) = "$root/logs/error.log"; <> };
unlike($log, qr/\[error\] .*no token for .*scope "client_general"/,
       'the abort is not taken for a failure of DQE');
like(mock('/__mock/stats?reset=counters'),
     qr/"token_requests":\{"GET":0,"POST":1\}.*"tokens_issued":1,/,
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
