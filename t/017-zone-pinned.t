# A dead worker's in-flight marks do not pin the zone: the workers are
# killed (-9) while many token requests are in flight, so that every
# entry of a small zone is marked by a process that is gone; then new
# credential sets come, and evict those entries, with no "no room" alert.
#
# Plain Test::More, an nginx of its own (master, two workers, a 32k zone).

use strict;
use warnings;

use Test::More;
use Test::DQE;
use Time::HiRes qw(sleep);

sub mock { Test::DQE::mock(@_) }

my $keys = 150;                     # more than a 32k zone holds

my $ngx = Test::DQE::Nginx->new('zone-pinned');

my $http = "    dqe_oauth_zone tokens:32k;\n"
    . "    server {\n"
    . "        listen 127.0.0.1:${\ $ngx->port};\n"
    . join('', map { Test::DQE::location("/k$_/", licence => 100000 + $_,
                                         secret => 'bulk-pass') }
                   1 .. 2 * $keys)
    . "    }\n";

ok($ngx->start(http => $http), 'nginx starts');

mock('/__mock/fault?delay=10');

my @later = map { $ngx->get_later("/k$_/x", 5) } 1 .. $keys;

sleep 2;                            # all in flight, the zone full of marks

my @workers = $ngx->workers;
kill 'KILL', @workers;
$_->() for @later;

mock('/__mock/fault?clear=1');

my @now;
for (1 .. 100) {
    @now = $ngx->workers;
    last if @now == @workers && !grep { my $w = $_; grep { $_ == $w } @workers } @now;
    sleep 0.05;
}

my $mark = length $ngx->log;

sleep 1.1;                          # the dead marks are a second old

my @st = map { ($ngx->get("/k$_/y", 10))[0] } $keys + 1 .. 2 * $keys;

is_deeply([grep { $_ != 200 } @st], [],
          "$keys new credential sets after the kill: all 200");

my $after = substr($ngx->log, $mark);
unlike($after, qr/\[alert\] .*no room/,
       'no "no room" alert: the dead marks were evicted');

ok($ngx->stop, 'quit');

done_testing();
