# An in-flight mark cannot lie: it names its process by pid and by start
# time.  A worker is killed (-9) with its token request in flight, and its
# pid is given to another process (through /proc/sys/kernel/ns_last_pid):
# the next request takes the token request over at once, instead of
# taking the live pid for the fetch's owner until the token location's
# timeouts (3 minutes by default) have passed.
#
# Plain Test::More, an nginx of its own (master, two workers).  Needs
# root, to set the next pid; skipped otherwise.

use strict;
use warnings;

use Test::More;
use Test::DQE;
use Time::HiRes qw(sleep);

plan skip_all => 'needs root, to set /proc/sys/kernel/ns_last_pid'
    unless -w '/proc/sys/kernel/ns_last_pid';

sub mock { Test::DQE::mock(@_) }

my $ngx = Test::DQE::Nginx->new('pid-reuse');

ok($ngx->start(http => "    server {\n"
                       . "        listen 127.0.0.1:${\ $ngx->port};\n"
                       . Test::DQE::location('/api/', licence => 100950,
                                             secret => 'bulk-pass')
                       . "    }\n"),
   'nginx starts');

mock('/__mock/stats?reset=counters');
mock('/__mock/fault?delay=5&count=1');

my $first = $ngx->get_later('/api/first', 20);

my $fetcher;
for (1 .. 100) {
    ($fetcher) = $ngx->log =~ /\[debug\] (\d+)#\d+: .*dqe_oauth fetch for .*licence "100950"/;
    last if $fetcher;
    sleep 0.05;
}

ok($fetcher, 'the token request is in flight in worker ' . ($fetcher // '?'));

my @before = $ngx->workers;
ok(kill('KILL', $fetcher), 'kill -9 that worker');
$first->();

# the master starts another worker; then the dead one's pid goes to a
# process of the workers' user, started after the mark was set

my @now;
for (1 .. 100) {
    @now = $ngx->workers;
    last if @now == @before && !grep { $_ == $fetcher } @now;
    sleep 0.05;
}

my $sleeper;

for (1 .. 20) {
    open my $fh, '>', '/proc/sys/kernel/ns_last_pid' or last;
    print $fh $fetcher - 1;
    close $fh;

    $sleeper = fork();
    die "fork: $!" unless defined $sleeper;

    if ($sleeper == 0) {
        # the workers' user: a pid of another user would be seen (EPERM)
        my (undef, undef, $uid, $gid) = getpwnam('nobody');
        POSIX::setgid($gid);
        POSIX::setuid($uid);
        sleep 30;
        POSIX::_exit(0);
    }

    last if $sleeper == $fetcher;

    kill 'KILL', $sleeper;
    waitpid($sleeper, 0);
    undef $sleeper;
}

SKIP: {
    skip 'could not give the pid to another process', 3 unless $sleeper;

    is($sleeper, $fetcher, "pid $fetcher is now another process's");

    my ($st) = $ngx->get('/api/second', 15);
    is($st, 200, 'the next request gets a token: the mark is known stale');

    like($ngx->log, qr/\[warn\] .*taking over the token request for .*licence "100950".* left unfinished by process $fetcher\b/,
         'the take-over is logged');

    kill 'KILL', $sleeper;
    waitpid($sleeper, 0);
}

ok($ngx->stop, 'quit');

done_testing();
