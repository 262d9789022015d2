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

# --- the mark's pid is this very worker's: a respawned worker ----------------
#
# One worker, killed with its token request in flight; the master starts
# another, given the dead one's pid.  That worker must not take the mark
# for its own (0.3.0 skipped the start-time check for its own pid, and
# waited out the token location's whole timeout).

my $one = Test::DQE::Nginx->new('pid-reuse-own');

ok($one->start(workers => 1,
               http => "    server {\n"
                       . "        listen 127.0.0.1:${\ $one->port};\n"
                       . Test::DQE::location('/api/', licence => 100951,
                                             secret => 'bulk-pass')
                       . "    }\n"),
   'nginx starts, one worker');

mock('/__mock/stats?reset=counters');
mock('/__mock/fault?delay=60&count=1');

my ($worker) = $one->workers;
$first = $one->get_later('/api/first', 3);

for (1 .. 100) {
    last if $one->log =~ /dqe_oauth fetch for .*licence "100951"/;
    sleep 0.05;
}

# the master forks the new worker as soon as it learns of the death: the
# next pid is set before each kill; a respawn that got another pid is
# killed in turn (it holds no mark)

my $respawned;

for (1 .. 20) {
    my ($victim) = $one->workers;
    last unless $victim;

    open my $fh, '>', '/proc/sys/kernel/ns_last_pid' or last;
    print $fh $worker - 1;
    close $fh;

    kill 'KILL', $victim;

    my @now;
    for (1 .. 100) {
        @now = $one->workers;
        last if @now && $now[0] != $victim;
        sleep 0.02;
    }

    if (@now && $now[0] == $worker) {
        $respawned = 1;
        last;
    }
}

$first->();

SKIP: {
    skip 'could not give the pid to the respawned worker', 3 unless $respawned;

    pass("the respawned worker has the dead one's pid, $worker");

    my ($st) = $one->get('/api/second', 8);
    is($st, 200, 'its next request gets a token: the mark is known stale');

    like($one->log, qr/\[warn\] .*taking over the token request for .*licence "100951".* left unfinished by process $worker\b/,
         'the take-over is logged');
}

mock('/__mock/fault?clear=1');
ok($one->stop, 'quit');

done_testing();
