# Zone pressure: what a zone too small for the configured credential sets
# costs DQE, and what it tells the operator.  A 32k zone holds 40 sets.
#
#   capacity    nginx -t's [notice] gives the sets the zone holds, and
#               per megabyte, when more are configured
#   thrash      80 sets, each asked for 3 times in turn by one worker:
#               80 token requests (0.3.0: 240, every request after the
#               first round found its set evicted and fetched again)
#   no room     a set that cannot even get an entry: 502 with
#               Retry-After at once, one [alert] a second
#   not stored  a token too long for its entry and no room for it: the
#               worker that fetched it serves it (and its next
#               requests), the other's waiters get 502 and one [error]
#               with the cause "token not storable"
#   a copy      a worker's copy of a token, made from the zone and since
#               dropped (a 401), is not sent while the zone cannot store
#               the next token another worker keeps
#   keep-warm   150 sets with dqe_oauth_keep_warm: the first 40 are kept
#               warm, 40 token requests, no [alert] (0.3.0: 301 token
#               requests in 14 s and thousands of [alert] lines); they
#               renew apart, not in lockstep
#
# Plain Test::More, nginx instances of their own.

use strict;
use warnings;

use Test::More;
use Test::DQE;
use JSON::PP ();
use Time::HiRes qw(sleep);

sub mock { Test::DQE::mock(@_) }

sub sets {
    my ($n, $extra) = @_;

    return join '', map {
        "        location /c$_/ {\n"
        . "            dqe_oauth_licence " . (100000 + $_) . ";\n"
        . ($extra ? "            $extra\n" : '')
        . "            proxy_pass https://127.0.0.1:$ENV{TEST_NGINX_DQE_PORT};\n"
        . "        }\n"
    } 1 .. $n;
}

sub http {
    my ($ngx, $n, $extra) = @_;

    return "    dqe_oauth_zone tiny:32k;\n"
        . "    dqe_oauth_server  127.0.0.1:$ENV{TEST_NGINX_DQE_PORT};\n"
        . "    dqe_oauth_secret  bulk-pass;\n"
        . "    dqe_oauth_scope   client_address;\n"
        . "    server {\n"
        . "        listen 127.0.0.1:${\ $ngx->port};\n"
        . "        location = /status { dqe_oauth_status; }\n"
        . sets($n, $extra)
        . "    }\n";
}

# --- capacity ---------------------------------------------------------------

my $ngx = Test::DQE::Nginx->new('zone-pressure');

$ngx->write_conf(http => http($ngx, 80), workers => 1);
my ($ok, $err) = $ngx->test_conf(30);
ok($ok, 'nginx -t passes with 80 sets in a 32k zone');
like($err, qr/\[notice\] .*dqe_oauth_zone "tiny" \(32768 bytes\) holds about 40 credential sets \(about 2016 per megabyte\) and 80 are configured/,
     'its [notice]: 40 sets, 2016 per megabyte, 80 configured');

$ngx->write_conf(http => http($ngx, 40), workers => 1);
($ok, $err) = $ngx->test_conf(30);
unlike($err, qr/holds about/, '40 sets: no notice');

# --- thrash -----------------------------------------------------------------

ok($ngx->start(http => http($ngx, 80), workers => 1), 'nginx starts');

mock('/__mock/stats?reset=counters');

my @st;
for my $round (1 .. 3) {
    push @st, map { ($ngx->get("/c$_/r$round"))[0] } 1 .. 80;
}

is_deeply([grep { $_ != 200 } @st], [], '240 requests over 80 sets: all 200');
like(mock('/__mock/stats'), Test::DQE::stats(token_requests => { POST => 80 }),
     '80 token requests: one per set, the worker keeping its copies');

my (undef, $json) = $ngx->get('/status');
my ($entries) = $json =~ /"entries":(\d+)/;
is($entries, 40, 'the zone holds 40 of them');
my ($evictions, $failures) = $json =~ /"evictions":(\d+),"allocation_failures":(\d+)/;
is("$evictions $failures", '40 0',
   'round 1 evicted 40 entries for sets 41 to 80; no allocation failed');

unlike($ngx->log, qr/\[alert\]/, 'no [alert]');

ok($ngx->stop, 'quit');

# --- no room even for an entry: this worker backs the set off -----------------
#
# the 40 entries of the zone each have a token request in flight (DQE
# answers in 6 s): a 41st set cannot get an entry.  Its requests get 502
# with Retry-After at once (the worker backs it off 1 s, doubling), and
# one [alert] a second says so; once the token requests have ended, it
# gets its token.

ok($ngx->start(http => http($ngx, 41), workers => 1), 'nginx starts again');

mock('/__mock/fault?delay=6');

my $mark = length $ngx->log;
my @later = map { $ngx->get_later("/c$_/f", 15) } 1 .. 40;

for (1 .. 100) {
    last if (() = substr($ngx->log, $mark) =~ /dqe_oauth fetch for/g) >= 40;
    sleep 0.05;
}

my @got = map {
    my ($st, undef, $h) = $ngx->get("/c41/n$_");
    my ($ra) = $h =~ /^Retry-After: *(\S+)/mi;
    "$st " . ($ra // '-');
} 1 .. 3;

is_deeply(\@got, ['502 1', '502 1', '502 1'],
          'the 41st set: 502 with Retry-After: 1, three times');

(undef, $json) = $ngx->get('/status');
my ($failed) = $json =~ /"allocation_failures":(\d+)/;
is($failed, 1, 'one allocation failed: the first request\'s; the two '
   . 'others found the set backing off in this worker and tried none');

my @room = substr($ngx->log, $mark) =~ /(\[alert\] .*no room in dqe_oauth_zone for [^;]*licence "100041".*)/g;
is(scalar @room, 1, 'one [alert] for it') or diag(join "\n", @room);
my @errors = substr($ngx->log, $mark) =~ /(\[error\] .*no token for [^;]*licence "100041".*)/g;
is(scalar @errors, 0, 'and no [error] line within the same second')
    or diag($errors[0]);
like($room[0] // '', qr/every entry has a token request in flight\); this worker asks DQE again in 1000 ms; 0 more such since the last line/,
     'saying why and when it asks again');

mock('/__mock/fault?clear=1');
$_->() for @later;
sleep 1.2;

is(($ngx->get('/c41/after'))[0], 200, 'after the backoff, with room: 200');

ok($ngx->stop, 'quit');

# --- a token the zone cannot store --------------------------------------------
#
# 39 sets fill the zone with their token requests in flight (DQE answers
# in 6 s), a 40th takes the last entry; its token (1002 bytes) is too
# long to sit in the entry, and no entry can be evicted for it.  The
# worker that fetched it keeps it for its own requests (200) and says so
# in an [alert]; the other worker's requests, which waited for that
# token request, get 502 and the README's cause "token not storable".
# Two workers, "reuseport": 16 requests on connections of their own
# land on both.

my $ns = Test::DQE::Nginx->new('zone-pressure-store');

sub big_later {
    my ($path) = @_;

    pipe(my $rd, my $wr) or die "pipe: $!";

    my $pid = fork();
    die "fork: $!" unless defined $pid;

    if ($pid == 0) {
        close $rd;
        my ($st, undef, $h) = $ns->get($path, 15);
        my ($worker) = $h =~ /^X-Pid: *(\d+)/mi;
        my ($ra) = $h =~ /^Retry-After: *(\S+)/mi;
        syswrite $wr, join(' ', $st, $worker // '-', $ra // '-') . "\n";
        POSIX::_exit(0);
    }

    close $wr;

    return sub {
        waitpid($pid, 0);
        my $line = <$rd> // "0 - -\n";
        chomp $line;
        return [split / /, $line];
    };
}

ok($ns->start(http => "    dqe_oauth_zone tiny:32k;\n"
                      . "    dqe_oauth_server  127.0.0.1:$ENV{TEST_NGINX_DQE_PORT};\n"
                      . "    dqe_oauth_secret  bulk-pass;\n"
                      . "    dqe_oauth_scope   client_address;\n"
                      . "    server {\n"
                      . "        listen 127.0.0.1:${\ $ns->port} reuseport;\n"
                      . "        location = /status { dqe_oauth_status; }\n"
                      . sets(39)
                      . "        location /big/ {\n"
                      . "            dqe_oauth_server  127.0.0.1:$ENV{TEST_NGINX_DQE_FAULT_LONG_SLOW};\n"
                      . "            dqe_oauth_licence 100040;\n"
                      . "            add_header X-Pid \$pid always;\n"
                      . "            proxy_pass http://127.0.0.1:${\ $ns->port}/echo;\n"
                      . "        }\n"
                      . "        location /echo { return 200 \"ok\\n\"; }\n"
                      . "    }\n",
              workers => 2),
   'nginx starts: 40 sets in a 32k zone, two workers');

mock('/__mock/fault?delay=6');
mock('/__mock/stats?reset=counters');

$mark = length $ns->log;
@later = map { $ns->get_later("/c$_/f", 15) } 1 .. 39;

for (1 .. 100) {
    last if (() = substr($ns->log, $mark) =~ /dqe_oauth fetch for/g) >= 39;
    sleep 0.05;
}

my @big = map { big_later("/big/$_") } 1 .. 16;
my @answers = map { $_->() } @big;

my @alert = substr($ns->log, $mark) =~ /\[alert\] (\d+)#\d+: [^\n]*no room in dqe_oauth_zone for [^;]*licence "100040"([^\n]*)/g;
is(scalar @alert, 2, 'one [alert] for the set') or diag(join "\n", @alert);
my $keeper = $alert[0] // 0;
like($alert[1] // '', qr/\(its token is kept by this worker only\); this worker asks DQE again in 1000 ms; 0 more such since the last line: enlarge dqe_oauth_zone/,
     'saying that the worker that fetched it keeps it');

my %by = (keeper => [], other => []);
push @{ $by{ $_->[1] eq $keeper ? 'keeper' : 'other' } }, "$_->[0] $_->[2]"
    for @answers;

ok(@{ $by{keeper} } && @{ $by{other} },
   'both workers answered ' . scalar(@{ $by{keeper} }) . ' and '
   . scalar(@{ $by{other} }));
is_deeply([grep { $_ ne "200 -" } @{ $by{keeper} }], [],
          'in the worker that fetched the token: 200 each');
is_deeply([grep { $_ ne '502 -' } @{ $by{other} }], [],
          'in the other: 502 each, no Retry-After');

my @cause = substr($ns->log, $mark) =~ /\[error\] \d+#\d+: [^\n]*no token for [^;]*licence "100040"[^:]*: ([^\n]*?), client:/g;
is_deeply(\@cause, ['no room in the zone to keep the token: enlarge dqe_oauth_zone'],
          'one [error] line in the other worker, with the cause "token not storable"');

like(mock('/__mock/stats'), Test::DQE::stats(token_requests => { POST => 40 }),
     '40 token requests: the 39 others\' and this set\'s one');

(undef, $json) = $ns->get('/status');
my $doc = eval { JSON::PP::decode_json($json) } // {};
is($doc->{zone}{allocation_failures}, 1, 'one allocation failed: the token\'s');

(undef, $json) = $ns->get('/status?ready=all');
$doc = eval { JSON::PP::decode_json($json) } // {};
my ($bs) = grep { $_->{licence} eq '100040' } @{ $doc->{not_ready} // [] };
is(($bs->{why} // '') . ': ' . ($bs->{last_error} // ''),
   'no token: no room in the zone to keep the token: enlarge dqe_oauth_zone',
   'readiness: the set has no token in the zone, for that cause');

# then, one request after the other (the fillers still in flight): the
# worker that keeps the token serves it, a backoff of its own under way;
# the other asks DQE for one, its own to keep, once

my @next = map { big_later("/big/n$_")->() } 1 .. 12;
my %next = (keeper => [], other => []);
push @{ $next{ $_->[1] eq $keeper ? 'keeper' : 'other' } }, "$_->[0] $_->[2]"
    for @next;

is_deeply([grep { $_ ne '200 -' } @{ $next{keeper} }, @{ $next{other} }], [],
          'the next 12 requests: 200 each (' . scalar(@{ $next{keeper} })
          . ' in the worker that keeps the token)');
like(mock('/__mock/stats'), Test::DQE::stats(token_requests => { POST => 41 }),
     'the other worker asked DQE once more: 41 token requests');

mock('/__mock/fault?clear=1');
$_->() for @later;

ok($ns->stop, 'quit');

# --- a worker's copy of a dropped token is not a kept one ---------------------
#
# Both workers hold a copy of t1, made from the zone.  The API refuses
# t1: it is dropped, and the request sent again with a new token, fetched
# by that worker (F): a long one, which the zone, full of token requests
# in flight (DQE's SLOW port answers in 3 s), cannot store, so F keeps it
# (1002 bytes).  The other worker's next request must not send its copy
# of t1, dropped: it asks DQE for a token (42 bytes, stored).

my $dc = Test::DQE::Nginx->new('zone-pressure-copy');

ok($dc->start(http => "    dqe_oauth_zone tiny:32k;\n"
                      . "    dqe_oauth_server  127.0.0.1:$ENV{TEST_NGINX_DQE_PORT};\n"
                      . "    dqe_oauth_secret  bulk-pass;\n"
                      . "    dqe_oauth_scope   client_address;\n"
                      . "    server {\n"
                      . "        listen 127.0.0.1:${\ $dc->port} reuseport;\n"
                      . sets(39, "dqe_oauth_server 127.0.0.1:$ENV{TEST_NGINX_DQE_FAULT_SLOW};")
                      . "        location /x/ {\n"
                      . "            dqe_oauth_licence 100040;\n"
                      . "            add_header X-Pid \$pid always;\n"
                      . "            add_header X-DQE-Status \$dqe_oauth_status always;\n"
                      . "            proxy_pass http://127.0.0.1:${\ $dc->port}/echo;\n"
                      . "        }\n"
                      . "        location /echo { return 200 \$http_authorization; }\n"
                      . "        location /api/ {\n"
                      . "            dqe_oauth_licence 100040;\n"
                      . "            add_header X-Pid \$pid always;\n"
                      . "            add_header X-DQE-Status \$dqe_oauth_status always;\n"
                      . "            proxy_pass https://127.0.0.1:$ENV{TEST_NGINX_DQE_PORT};\n"
                      . "        }\n"
                      . "    }\n",
              workers => 2),
   'nginx starts: 40 sets in a 32k zone, two workers');

my (@warm, %warm);
for (1 .. 40) {
    push @warm, $dc->seen("/x/w$_");
    $warm{ $warm[-1][3] } = 1;
    last if keys %warm == 2;
}

is(join(' ', map { "$_->[0] $_->[1] $_->[2]" } @warm[0, 1]), '200 MISS t1 200 HIT t1',
   'warm: t1, in both workers (' . scalar(@warm) . ' requests)');

$mark = length $dc->log;
@later = map { $dc->get_later("/c$_/f", 15) } 1 .. 39;

for (1 .. 100) {
    last if (() = substr($dc->log, $mark) =~ /dqe_oauth fetch for/g) >= 39;
    sleep 0.05;
}

mock('/__mock/fault?count=1&body=' . Test::DQE::uri_escape(
    '{"access_token":"TK' . ('d' x 1000)
    . '","token_type":"Bearer","expires_in":"300"}'));
mock('/__mock/reject?n=1');

my $api = $dc->seen('/api/refused');
my $f = $api->[3];
is("$api->[0] $api->[1]", '401 RETRY',
   't1 refused by the API: sent again with a token the API does not know: 401');

my @alert2 = substr($dc->log, $mark) =~ /\[alert\] (\d+)#\d+: [^\n]*no room in dqe_oauth_zone for [^;]*licence "100040"[^(]*\(its token is kept by this worker only\)/g;
is_deeply(\@alert2, [$f], 'the worker that sent it again keeps that token');

my @next2;
for (1 .. 40) {
    push @next2, $dc->seen("/x/n$_");
    last if $next2[-1][3] != $f;
}

# the kept token is named t2 if the keeping worker answers first, else
# the other worker's new one is: read by their lengths

is_deeply([map { "$_->[0] $_->[1] $_->[4]" } grep { $_->[3] == $f } @next2],
          [('200 HIT 1002') x (@next2 - 1)],
          'the keeping worker serves the long token (' . (@next2 - 1)
          . ' requests)');
is(join(' ', @{ $next2[-1] }[0, 1, 4]) . ($next2[-1][2] eq 't1' ? ' t1' : ''),
   '200 MISS 42', 'the other worker does not send its copy of t1: it asks '
   . 'DQE for a token of its own (42 bytes, not t1)');

mock('/__mock/fault?clear=1');
$_->() for @later;

ok($dc->stop, 'quit');

# --- keep-warm beyond the zone ------------------------------------------------

my $warm = Test::DQE::Nginx->new('zone-pressure-warm');

mock('/__mock/stats?reset=counters');

ok($warm->start(http => http($warm, 150, 'dqe_oauth_keep_warm on;')),
   'nginx starts: 150 sets kept warm, a 32k zone, two workers');

like(do { open my $f, '<', $warm->root . '/logs/stderr.log'; local $/; <$f> }
     // '',
     qr/holds about 40 credential sets .* and 150 are configured.*dqe_oauth_keep_warm applies to the first sets it holds only/,
     'the [notice] says keep-warm applies to the first 40');

sleep 4;

like(mock('/__mock/stats'), Test::DQE::stats(token_requests => { POST => 40 }),
     '40 token requests in 4 s: the first 40 sets, once');

my @notice = $warm->log =~ /(\[notice\] .*credential sets, \d+ kept warm)/g;
like($notice[0] // '', qr/150 credential sets, 40 kept warm/,
     'each worker says 40 are kept warm');

# the 40 warm sets were fetched together; they renew apart, each at a
# point of its own in its window (300 s tokens: 60 s ahead of a cutoff
# at 290 s, and up to 15 s earlier): 0.3.0 renewed them all at once

my ($sst, $sjson) = $warm->get('/status');
my $sdoc = eval { JSON::PP::decode_json($sjson) } // {};
my @renews = sort { $a <=> $b }
             map { $_->{token_renews} - ($_->{token_expires} - 300) }
             grep { defined $_->{token_renews} } @{ $sdoc->{credentials} // [] };

is(scalar @renews, 40, '40 sets hold a token');
ok(@renews && $renews[0] >= 215 && $renews[-1] <= 230,
   'each renews 60 to 75 s before its cutoff ('
   . join(', ', map { sprintf '%.1f', $_ } @renews[0, -1]) . ' s after issue)');
ok(@renews && $renews[-1] - $renews[0] >= 5,
   'spread over at least 5 s of the 15 s window ('
   . sprintf('%.1f', @renews ? $renews[-1] - $renews[0] : 0) . ' s)');

my @alerts = $warm->log =~ /(\[alert\].*)/g;
is(scalar @alerts, 0, 'no [alert]') or diag($alerts[0]);

ok($warm->stop, 'quit');

Test::DQE::log_ok($warm->log);

done_testing();
