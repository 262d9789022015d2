# Exact values of what the README promises, each read back whole: a
# change of one table row (a counter under another name, a result in
# another bucket, a constant scaled, a rounding turned) fails here.
#
#   status      the full JSON of a set after known traffic (every field),
#               the times against the clock; the histogram's limits
#   results     each cause of a failed token request in its own result,
#               under the grant it was asked with (refusals, 429, 403,
#               503, garbage, a bad field, a closed connection, a reply
#               too big, no connection, a 302, a timeout)
#   failures    consecutive_failures back to 0 after a success
#   escaping    a licence with a backslash and a quote, escaped in JSON
#               and in Prometheus's labels
#   Retry-After honoured for 429 and 503, not for 500; the header name
#               in any case; to clients, the seconds left rounded up
#   secret_file exactly one trailing "\n" or "\r\n" dropped
#   Prometheus  every sample of the text format equal to the JSON's value
#               (each set's and the zone's), none more
#   workers     a renewal stored by one worker, and a purge, reach every
#               worker's next request (their copies a second good)
#
# Plain Test::More: one worker, so that every count is this script's
# (four for the renewal).

use strict;
use warnings;

use Test::More;
use Test::DQE;
use IO::Select;
use JSON::PP ();
use POSIX ();
use Time::HiRes qw(sleep time);

sub mock { Test::DQE::mock(@_) }

my $ngx = Test::DQE::Nginx->new('exact');
my $n = 0;

sub set {
    my ($path, %o) = @_;
    return Test::DQE::location($path, licence => $o{licence} // 100700 + $n++,
                               secret => 'bulk-pass', %o);
}

my %port = map { $_ => $ENV{"TEST_NGINX_DQE_FAULT_$_"} } qw(CLOSE GARBAGE);

my $http = "    server {\n"
    . "        listen 127.0.0.1:${\ $ngx->port};\n"
    . "        location = /status { dqe_oauth_status; }\n"
    . set('/a/')
    . join('', map { set("/r$_/") } 1 .. 9)
    . set('/esc/', licence => 'a\\\\b"c', secret => 's3cr3t-pass')
    . set('/ra1/') . set('/ra2/') . set('/ra3/')
    . set('/w/') . set('/rn/', extra => 'dqe_oauth_refresh_ahead 90%;')
    . set('/st/', extra => 'dqe_oauth_refresh_ahead 90%; '
                           . 'add_header X-DQE-Status $dqe_oauth_status always;')
    . set('/k1/', port => $ENV{TEST_NGINX_DQE_FAULT_CLOSE})
    . set('/k2/', port => $ENV{TEST_NGINX_DQE_FAULT_BIG})
    . set('/k3/', port => 1)
    . set('/k4/')
    . "    }\n"
    . "    server {\n"
    . "        listen 127.0.0.1:${\ $ngx->port2};\n"
    . "        proxy_read_timeout 1s;\n"
    . set('/k5/', port => $ENV{TEST_NGINX_DQE_FAULT_SLOW})
    . set('/p0/', extra => 'dqe_oauth_retry_on_401 off;')
    . "    }\n";

# licence a\b"c: nginx's own unescaping of the configuration takes "\\"
# as "\"; written in the file as a\\b"c within no quotes

mock('/__mock/reset');
ok($ngx->start(http => $http, workers => 1), 'nginx starts, one worker');

sub json {
    my ($st, $body) = $ngx->get('/status');
    return eval { JSON::PP::decode_json($body) } || {};
}

sub set_of {
    my ($licence) = @_;
    my ($s) = grep { $_->{licence} eq $licence } @{ json()->{credentials} };
    return $s || {};
}

sub results {
    my (%nonzero) = @_;
    my %all = map { $_ => 0 } qw(success invalid_request invalid_client
        unauthorized_client unsupported_grant_type invalid_grant other_4xx
        5xx timeout connect bad_response internal);
    return { %all, %nonzero };
}

# --- the full JSON of a set after known traffic ------------------------------

is(($ngx->get('/a/1'))[0], 200, 'a: MISS');
is(($ngx->get('/a/2'))[0], 200, 'a: HIT');
is(($ngx->get('/a/3'))[0], 200, 'a: HIT');

sleep 0.3;   # the request counts reach the zone within 100 ms

my $now = time;
my $a = set_of('100700');
my $dur = $a->{fetch_duration}{sum};

my %want = (
    server => "https://127.0.0.1:$ENV{TEST_NGINX_DQE_PORT}",
    licence => '100700', scope => 'client_address', secret => 1,
    requests => { hit => 2, miss => 1, wait => 0, renew => 0, stale => 0,
                  error => 0, retry => 0 },
    fetches => { client_credentials => results(success => 1),
                 refresh_token => results() },
    fetch_duration => { sum => $dur, count => 1, buckets => {
        map { $_ => ($_ eq '+Inf' || $_ >= $dur ? 1 : 0) }
            qw(0.05 0.1 0.25 0.5 1 2.5 5 10 +Inf) } },
    consecutive_failures => 0, backoff_until => undef,
    fetch_in_flight => JSON::PP::false, purges => 0, retries => 0,
);

for my $k (qw(token_expires token_renews refresh_token_expires
              last_success)) {
    $want{$k} = $a->{$k};
}

is_deeply($a, \%want, 'the set, every field: 2 hits, 1 miss, 1 success, '
          . 'the histogram\'s limits 0.05 … 10 and +Inf, nothing else');

cmp_ok(abs($a->{last_success} - $now), '<', 2, 'last_success: now');
cmp_ok(abs($a->{token_expires} - ($a->{last_success} + 300)), '<=',
       $dur + 0.002, 'token_expires: when it was asked for + 300 s');
cmp_ok(abs($a->{refresh_token_expires} - ($a->{last_success} + 600)), '<=',
       $dur + 0.002, 'refresh_token_expires: + 600 s (the mock\'s)');

my $ahead = $a->{token_expires} - $a->{token_renews};
ok($ahead >= 10 + 60 - 0.01 && $ahead <= 10 + 60 + 15 + 0.01,
   'token_renews: the margin (10 s) and 20 % of 300 s before the expiry, '
   . "spread up to a quarter of the window (15 s) earlier ($ahead)");

# the Prometheus bucket limits, exactly

my ($pst, $prom) = $ngx->get('/status?format=prometheus');
my @le = $prom =~ /^dqe_oauth_fetch_duration_seconds_bucket\{[^}]*licence="100700"[^}]*le="([^"]+)"\}/mg;
is_deeply(\@le, [qw(0.05 0.1 0.25 0.5 1 2.5 5 10 +Inf)],
          'Prometheus: the buckets 0.05 … 10, +Inf');

# --- each failure in its own result --------------------------------------------

my @causes = (
    [ 1, { status => 400, body => '{"error":"invalid_request"}' },
      'invalid_request' ],
    [ 2, { status => 400, body => '{"error":"invalid_client"}' },
      'invalid_client' ],
    [ 3, { status => 400, body => '{"error":"unauthorized_client"}' },
      'unauthorized_client' ],
    [ 4, { status => 400, body => '{"error":"unsupported_grant_type"}' },
      'unsupported_grant_type' ],
    [ 5, { status => 429 }, 'other_4xx' ],
    [ 6, { status => 403, body => 'no' }, 'other_4xx' ],
    [ 7, { status => 503 }, '5xx' ],
    [ 8, { mode => 'garbage' }, 'bad_response' ],
    [ 9, { body => '{"access_token":"x"}' }, 'bad_response' ],
);

for my $c (@causes) {
    my ($i, $fault, $result) = @$c;

    mock(Test::DQE::fault(%$fault, count => 1) =~ s/^GET //r);
    my ($st) = $ngx->get("/r$i/x");
    is($st, 502, "/r$i/: 502");

    my $s = set_of(100700 + $i);
    is_deeply($s->{fetches},
              { client_credentials => results($result => 1),
                refresh_token => results() },
              "/r$i/: counted under client_credentials, $result");
    is($s->{consecutive_failures}, 1, "/r$i/: one consecutive failure");
}

# /k1/ 100716 closed, /k2/ 100717 too big, /k3/ 100718 no connection,
# /k4/ 100719 a 302 (a non-200 that is no error), /k5/ 100720 a timeout

my @more = (
    [ '/k1/x', 100716, 'bad_response' ],
    [ '/k2/x', 100717, 'bad_response' ],
    [ '/k3/x', 100718, 'connect' ],
    [ '/k4/x', 100719, 'other_4xx', { status => 302, body => 'moved' } ],
    [ '/k5/x', 100720, 'timeout' ],
);

for my $c (@more) {
    my ($path, $licence, $result, $fault) = @$c;

    mock(Test::DQE::fault(%$fault, count => 1) =~ s/^GET //r) if $fault;
    my ($st) = $ngx->get($path, 20, $path =~ /k5/ ? $ngx->port2 : undef);
    is($st, 502, "$path: 502");
    is_deeply(set_of($licence)->{fetches},
              { client_credentials => results($result => 1),
                refresh_token => results() },
              "$path: counted under client_credentials, $result");
}

like($ngx->log, qr/\[error\] .*licence "100719".*DQE answered 302 without a known OAuth2 error/,
     '/k4/: the 302 named in its line');

# --- consecutive_failures back to 0 after a success ---------------------------

sleep 1.1;   # /r7/'s backoff (1 s for a 5xx) is over
is(($ngx->get('/r7/again'))[0], 200, '/r7/: a token after the backoff');
my $s7 = set_of(100707);
is("$s7->{consecutive_failures} $s7->{fetches}{client_credentials}{success}"
   . " $s7->{fetches}{client_credentials}{'5xx'}", '0 1 1',
   '/r7/: consecutive_failures 0 after the success; 1 success, 1 5xx');

# --- escaping ---------------------------------------------------------------

my ($jst, $jbody) = $ngx->get('/status');
like($jbody, qr/"licence":"a\\\\b\\"c"/, 'JSON: a\\b"c as "a\\\\b\\"c"');
($pst, $prom) = $ngx->get('/status?format=prometheus');
like($prom, qr/^dqe_oauth_requests_total\{server="[^"]+",licence="a\\\\b\\"c",scope="client_address",secret="1",outcome="hit"\} 0$/m,
     'Prometheus: licence="a\\\\b\\"c", as the exposition format escapes');

# --- each outcome under its own name: 1 miss and 2 waits; 1 miss, 1
# renew, then hits ------------------------------------------------------------

# /w/ 100713, /rn/ 100714

mock(Test::DQE::fault(delay => 1, count => 1) =~ s/^GET //r);
my @w = map { $ngx->get_later("/w/$_", 10) } 1 .. 3;
is_deeply([map { $_->() } @w], [200, 200, 200], '/w/: 3 at once, DQE slow');

mock('/__mock/config?ttl=4');
is(($ngx->get('/rn/1'))[0], 200, '/rn/: a 4 s token');
mock('/__mock/config?ttl=300');
sleep 2;    # past its renewal point (halfway through its usable 3 s)
is(($ngx->get('/rn/2'))[0], 200, '/rn/: a renewal starts');
sleep 0.5;
is(($ngx->get('/rn/3'))[0], 200, '/rn/: the renewed token');
sleep 0.3;

is_deeply(set_of('100713')->{requests},
          { hit => 0, miss => 1, wait => 2, renew => 0, stale => 0,
            error => 0, retry => 0 }, '/w/: 1 miss, 2 waits');

# its one token request took DQE's 1 s and a little: counted in the
# buckets whose limits, as the README lists them, are above that

my $wd = set_of('100713')->{fetch_duration};
is_deeply($wd->{buckets},
          { map { $_ => ($_ eq '+Inf' || $_ >= $wd->{sum} ? 1 : 0) }
                qw(0.05 0.1 0.25 0.5 1 2.5 5 10 +Inf) },
          "/w/: a fetch of $wd->{sum} s in the buckets above it");
cmp_ok($wd->{sum}, '>=', 1, '(at least DQE\'s 1 s)');
is_deeply(set_of('100714')->{requests},
          { hit => 1, miss => 1, wait => 0, renew => 1, stale => 0,
            error => 0, retry => 0 }, '/rn/: 1 miss, 1 renew, 1 hit');

# --- a purge clears the backoff with the token: a renewal failed (STALE,
# backing off), then the API refuses the token: the request is sent again
# with a token fetched at once, not after the backoff ----------------------

# /st/ 100715

mock('/__mock/config?ttl=4');
is(($ngx->get('/st/1'))[0], 200, '/st/: a 4 s token');
mock('/__mock/config?ttl=300');
sleep 2;    # past its renewal point
mock(Test::DQE::fault(status => 500, count => 1) =~ s/^GET //r);
is(($ngx->get('/st/2'))[0], 200, '/st/: its renewal starts, and fails');
sleep 0.3;
my $st_set = set_of('100715');
ok($st_set->{backoff_until}, '/st/: backing off');

mock('/__mock/revoke?licence=100715');
my ($sst, undef, $shead) = $ngx->get('/st/3');
my ($show) = $shead =~ /^X-DQE-Status: (\S+)/m;
is("$sst $show", '200 RETRY',
   '/st/: the token refused: dropped with its backoff, a new one at once');

# --- Retry-After ---------------------------------------------------------------

sub retry_after {
    my ($path) = @_;
    my ($st, undef, $head) = $ngx->get($path);
    my ($ra) = $head =~ /^Retry-After: (\d+)\r?$/mi;
    return "$st " . ($ra // '-');
}

# /ra1/ 100710, /ra2/ 100711, /ra3/ 100712

mock(Test::DQE::fault(status => 503, header => 'Retry-After:7', count => 1)
     =~ s/^GET //r);
my $t503 = time;
is(retry_after('/ra1/1'), '502 7', '503 with Retry-After: 7: 7 s to clients');

mock(Test::DQE::fault(status => 500, header => 'Retry-After:7', count => 1)
     =~ s/^GET //r);
is(retry_after('/ra2/1'), '502 1',
   '500 with Retry-After: 7: not honoured, the 1 s of a server error');

mock(Test::DQE::fault(status => 429, header => 'retry-after:7', count => 1)
     =~ s/^GET //r);
is(retry_after('/ra3/1'), '502 7',
   '429 with retry-after: 7 (the name in lower case): honoured');

sleep(2.5 - (time - $t503));
is(retry_after('/ra1/2'), '502 5',
   '2.5 s later: the 4.5 s left, rounded up: 5');

# --- the default renewal ahead, exactly: 20 % of a 300 s token is 60 s -----------
#
# the renewal point moves by a draw of the instance (kept in the zone)
# and a value of the set (its digest): the same for /a/ with the default
# and, after a reload, with "dqe_oauth_refresh_ahead 60s"

(my $http60 = $http) =~ s{(location /a/ \{\n)}{$1        dqe_oauth_refresh_ahead 60s;\n};
ok($ngx->reload(http => $http60), 'reload: /a/ with dqe_oauth_refresh_ahead 60s');
my $a60 = set_of('100700');
is(sprintf('%.3f', $a60->{token_expires} - $a60->{token_renews}),
   sprintf('%.3f', $ahead),
   'its renewal point is the default\'s, to the millisecond: 20 % is 60 s');

# --- Prometheus says what the JSON says, sample for sample -----------------------

# a set with a purge and no retry (/p0/ 100721, dqe_oauth_retry_on_401 off)

is(($ngx->get('/p0/1', undef, $ngx->port2))[0], 200, '/p0/: a token');
mock('/__mock/revoke?licence=100721');
is(($ngx->get('/p0/2', undef, $ngx->port2))[0], 401, '/p0/: revoked: 401');
is(join(' ', @{ set_of('100721') }{qw(purges retries)}), '1 0',
   '/p0/: 1 purge, 0 retries');

sleep 0.3;
my ($jst2, $jtext) = $ngx->get('/status');
my ($pst2, $ptext) = $ngx->get('/status?format=prometheus');
my $j = JSON::PP::decode_json($jtext);

my %got;
for (split /\n/, $ptext) {
    next if /^#/;
    my ($name, $labels, $value) = /^dqe_oauth_(\w+)(?:\{(.*)\})? (\S+)$/
        or do { fail("a sample line: $_"); next };
    $got{"$name $labels"} = $value;
}

my %samples;
my $t = sub { defined $_[0] ? sprintf('%.3f', $_[0]) : undef };
my $esc = sub { my $v = shift; $v =~ s/(["\\])/\\$1/g; $v };

$samples{"info version=\"$j->{version}\""} = 1;

for my $c (@{ $j->{credentials} }) {
    my $l = sprintf('server="%s",licence="%s",scope="%s",secret="%d"',
                    $esc->($c->{server}), $esc->($c->{licence}),
                    $esc->($c->{scope}), $c->{secret});

    $samples{"requests_total $l,outcome=\"$_\""} = $c->{requests}{$_}
        for keys %{ $c->{requests} };

    for my $g (keys %{ $c->{fetches} }) {
        $samples{"fetches_total $l,grant=\"$g\",result=\"$_\""}
            = $c->{fetches}{$g}{$_} for keys %{ $c->{fetches}{$g} };
    }

    $samples{"fetch_duration_seconds_bucket $l,le=\"$_\""}
        = $c->{fetch_duration}{buckets}{$_}
        for keys %{ $c->{fetch_duration}{buckets} };
    $samples{"fetch_duration_seconds_sum $l"} = $t->($c->{fetch_duration}{sum});
    $samples{"fetch_duration_seconds_count $l"} = $c->{fetch_duration}{count};

    my %times = (token_expiry_timestamp_seconds => 'token_expires',
                 token_renewal_timestamp_seconds => 'token_renews',
                 refresh_token_expiry_timestamp_seconds
                     => 'refresh_token_expires',
                 last_success_timestamp_seconds => 'last_success',
                 backoff_until_timestamp_seconds => 'backoff_until');

    for my $m (keys %times) {
        my $v = $t->($c->{ $times{$m} });
        $samples{"$m $l"} = $v if defined $v;
    }

    $samples{"consecutive_failures $l"} = $c->{consecutive_failures};
    $samples{"fetch_in_flight $l"} = $c->{fetch_in_flight} ? 1 : 0;
    $samples{"purges_total $l"} = $c->{purges};
    $samples{"retries_total $l"} = $c->{retries};
}

my $z = sprintf('zone="%s"', $j->{zone}{name});
$samples{"zone_size_bytes $z"} = $j->{zone}{size};
$samples{"zone_used_bytes $z"} = $j->{zone}{used};
$samples{"zone_entries $z"} = $j->{zone}{entries};
$samples{"zone_evictions_total $z"} = $j->{zone}{evictions};
$samples{"zone_allocation_failures_total $z"} = $j->{zone}{allocation_failures};

# the times: each read turns the monotonic clock's instants into wall
# clock time afresh, and the two clocks tick apart by up to 1 ms
my $moved = 0;
for my $k (grep { /_timestamp_seconds / && defined $got{$_} } keys %samples) {
    if ($got{$k} ne $samples{$k} && abs($got{$k} - $samples{$k}) <= 0.0011) {
        $got{$k} = $samples{$k};
        $moved++;
    }
}

is_deeply(\%got, \%samples, scalar(keys %samples) . ' Prometheus samples, each '
          . "the JSON's value, none more ($moved times 1 ms apart)");

ok($ngx->stop, 'quit');

Test::DQE::log_ok($ngx->log,
    qr/\[error\](?!.*no token for|.*upstream sent no valid HTTP|.*upstream (?:prematurely closed|timed out)|.*connect\(\) failed|.*too big)/);

# --- a token request that cannot start: worker_connections 3 (the
# listening socket, the channel to the master, the client): no connection
# is left for the token request's anchor -----------------------------------

my $wc = Test::DQE::Nginx->new('exact-connections');

ok($wc->start(http => "    server {\n"
                      . "        listen 127.0.0.1:${\ $wc->port};\n"
                      . "        location = /status { dqe_oauth_status; }\n"
                      . set('/n/', licence => 100730)
                      . "    }\n",
              workers => 1, connections => 3),
   'nginx starts with worker_connections 3');

is(($wc->get('/n/x'))[0], 502, 'no connection for the token request: 502');
like($wc->log, qr/\[alert\] .*dqe_oauth: could not start a token request for server "[^"]+", licence "100730", scope "client_address": out of memory, file descriptors or worker_connections/,
     'the [alert] of the Troubleshooting table');
like($wc->log, qr/\[error\] .*dqe_oauth: no token for .*licence "100730".*: could not start the token request \(see the alert before: out of memory, file descriptors or worker_connections\)/,
     'the [error] line: the Errors table\'s cause');

sleep 0.3;
my (undef, $wbody) = $wc->get('/status');
my ($wn) = grep { $_->{licence} eq '100730' }
           @{ (eval { JSON::PP::decode_json($wbody) } || {})->{credentials}
              || [] };
is_deeply([$wn->{requests}{error}, $wn->{fetches}{client_credentials}],
          [1, results(internal => 1)],
          'counted: 1 error, the token request\'s result "internal"');

ok($wc->stop, 'quit');

# --- a renewal reaches every worker's very next request ------------------------
#
# Four workers, "reuseport": requests one after the other, each on a
# connection of its own, land on all of them.  A token of 8 s (margin
# 1 s, renewed 3 s ahead).  Its renewal, delayed 0.5 s by DQE, is under
# way while every worker reads the current token and copies it, good
# for a second.  Once the status shows the renewal stored (the token's
# expiry moved: written under the same lock as the store), no request of
# any worker carries the old token: the store drops the copies, each
# still good for about half a second.  (Reading it from the first request
# with the new token could not fail: every copy, made as the renewal
# began, ran out before any worker read the zone again.)  The tokens are
# named t1, t2 as this script first sees them.

my $rw = Test::DQE::Nginx->new('exact-workers');

ok($rw->start(http => "    server {\n"
                      . "        listen 127.0.0.1:${\ $rw->port} reuseport;\n"
                      . "        location /echo { return 200 \$http_authorization; }\n"
                      . "        location = /status { dqe_oauth_status; }\n"
                      . Test::DQE::echo_location('/rw/', $rw->port,
                            licence => 100740, secret => 'bulk-pass',
                            extra => 'dqe_oauth_expiry_margin 1s; '
                                     . 'dqe_oauth_refresh_ahead 3s; '
                                     . 'add_header X-Pid $pid always;')
                      . Test::DQE::location('/api/',
                            licence => 100740, secret => 'bulk-pass',
                            extra => 'dqe_oauth_retry_on_401 off; '
                                     . 'add_header X-DQE-Status '
                                     . '$dqe_oauth_status always;')
                      . "    }\n",
              workers => 4),
   'nginx starts, four workers');

mock('/__mock/config?ttl=8');
mock('/__mock/stats?reset=counters');

# the set's token_expires, as the status shows it now (converted from
# the monotonic clock at each read: within a millisecond from one read
# to the next; a renewal moves it by seconds)

sub expires {
    my (undef, $body) = $rw->get('/status');
    my ($s) = grep { $_->{licence} eq '100740' }
              @{ (eval { JSON::PP::decode_json($body) } || {})->{credentials}
                 || [] };
    return ($s || {})->{token_expires} // 0;
}

my @seen = ([split(/ /, $rw->outcome('/rw/first')), 0]);
my $expires1 = expires();

mock('/__mock/fault?delay=0.5&count=1');

# The status answers after 110 ms (it waits for the workers' request
# counts): a child process reads it over and over, and says when it
# first showed the renewal stored.  Meanwhile requests one after the
# other, until every worker has answered one begun after that (10 s at
# most): what Test::DQE::Nginx->seen reads of each, and when it began.

pipe(my $told, my $tell) or die "pipe: $!";
my $watcher = fork() // die "fork: $!";

if ($watcher == 0) {
    close $told;
    my $began = time;
    sleep 0.1 until expires() - $expires1 > 1 || time - $began > 10;
    syswrite $tell, sprintf("%.6f\n", time);
    POSIX::_exit(0);
}

close $tell;

my ($stored_at, @at, %since);
my $began = time;

while (time - $began < 10) {
    push @at, time;
    push @seen, $rw->seen('/rw/x');

    $stored_at //= <$told> if IO::Select->new($told)->can_read(0);

    if (defined $stored_at && $at[-1] > $stored_at) {
        $since{ $seen[-1][3] } = 1;
        last if keys %since == 4;
    }

    sleep 0.005;
}

waitpid($watcher, 0);

mock('/__mock/config?ttl=300');

my ($renew) = grep { $seen[$_][1] eq 'RENEW' } 0 .. $#seen;
$renew //= @seen;
my ($stored) = grep { $at[$_ - 1] > ($stored_at // time) } 1 .. $#seen;
$stored //= @seen;
my ($first) = grep { $seen[$_][2] eq 't2' } 0 .. $#seen;
$first //= @seen;

is_deeply([grep { $_->[0] != 200 } @seen], [], scalar(@seen) . ' requests: 200 each');
is($seen[0][1] . ' ' . $seen[0][2], 'MISS t1', 'the first: MISS, t1');
is(join(' ', map { "$_->[1] $_->[2]" } grep { $_->[1] eq 'RENEW' } @seen),
   'RENEW t1', 'one request started the renewal, and went on with t1');

my %copied = map { $_->[3] => 1 }
             grep { $_->[2] eq 't1' && $_->[1] eq 'HIT' }
             @seen[$renew + 1 .. $stored - 1];
cmp_ok(scalar keys %copied, '>=', 3,
       'while it was under way, ' . scalar(keys %copied)
       . ' workers served (and copied) t1');

my @after = @seen[$stored .. $#seen];
is(join(' ', map { $_->[2] } @after), join(' ', ('t2') x @after),
   'once the status showed it stored, the very next request of each of '
   . scalar(keys %since) . ' workers had t2 (' . scalar(@after)
   . ' requests)');
is(scalar keys %since, 4, 'all 4 workers answered since');

is_deeply([grep { $_->[2] ne 't2' } @seen[$first .. $#seen]], [],
          'and once one request had t2, every later one had it');

like(mock('/__mock/stats'),
     Test::DQE::stats(tokens_issued => 2, refresh_ok => 1),
     'DQE: 2 tokens issued, the second by the refresh grant');

# requests one after the other for $s seconds: what
# Test::DQE::Nginx->seen reads of each

sub for_a_while {
    my ($s) = @_;
    my ($began, @got) = (time);

    while (time - $began < $s) {
        push @got, $rw->seen('/rw/x');
        sleep 0.005;
    }

    return @got;
}

# the same for a purge, through a location that shares the token, goes
# to DQE's API and does not send a refused request again: the API
# refuses t2 once (it stays live at DQE), the client gets the 401, t2 is
# dropped.  Then 12 requests at once, over the workers, each of which
# had copied t2 less than a second before: one asks DQE (which answers
# in 0.5 s), the others wait for it, none sends t2.  (With the retry, its
# token request would drop the copies itself.)

my @before = for_a_while(0.3);
mock('/__mock/reject?n=1');
my ($ast, undef, $phead) = $rw->get('/api/x');
mock('/__mock/fault?delay=0.5&count=1');
my @during = map { $rw->outcome_later("/rw/w$_") } 1 .. 12;
@during = sort map { $_->() } @during;
my @purge = for_a_while(0.5);

is_deeply([grep { $_->[0] != 200 || $_->[2] ne 't2' } @before], [],
          'before: ' . scalar(@before) . ' requests, t2 each, from '
          . scalar(keys %{{ map { $_->[3] => 1 } @before }}) . ' workers');
is(join(" ", $ast, $phead =~ /^X-DQE-Status: *(\S+)/mi), '401 HIT',
   'the API refused t2: 401 passed on');
is_deeply(\@during, ['200 MISS t3', ('200 WAIT t3') x 11],
          '12 requests at once: one asked DQE for t3, 11 waited for it');
is_deeply([grep { $_->[0] != 200 || $_->[2] ne 't3' } @purge], [],
          'after: ' . scalar(@purge) . ' requests, t3 each, from '
          . scalar(keys %{{ map { $_->[3] => 1 } @purge }}) . ' workers');

ok($rw->stop, 'quit');

# --- secret_file: exactly one trailing newline dropped --------------------------

my $sf = Test::DQE::Nginx->new('exact-secret');
my $file = $sf->root . '/conf/dqe.secret';

sub with_secret {
    my ($content, $extra) = @_;

    open my $fh, '>', $file or die $!;
    print $fh $content;
    close $fh;
    chmod 0600, $file;

    my $loc = Test::DQE::location('/s/', extra => $extra);
    $loc =~ s/dqe_oauth_secret  s3cr3t-pass;/dqe_oauth_secret_file dqe.secret;/;

    return "    server {\n        listen 127.0.0.1:${\ $sf->port};\n"
        . $loc . "    }\n";
}

for my $c (["s3cr3t-pass\n", 'a "\\n"'], ["s3cr3t-pass\r\n", 'a "\\r\\n"'],
           ['s3cr3t-pass', 'no newline']) {
    my ($content, $what) = @$c;

    ok($sf->start(http => with_secret($content), workers => 1),
       "secret file ending with $what: nginx starts");
    is(($sf->get('/s/x'))[0], 200, "$what: DQE takes the secret");
    ok($sf->stop, 'quit');
}

$sf->write_conf(http => with_secret("s3cr3t-pass\n\n"), workers => 1);
my ($ok, $err) = $sf->test_conf(10);
ok(!$ok, 'a secret file ending with two "\n": one is dropped, the other '
   . 'makes it two lines: nginx -t fails');
like($err, qr/\[emerg\] .*dqe_oauth_secret_file "[^"]*dqe\.secret" must hold the secret alone on one line/,
     'naming the file: one line');

$sf->write_conf(http => with_secret("s3cr3t-pass\n",
                                    'dqe_oauth_secret other;'), workers => 1);
($ok, $err) = $sf->test_conf(10);
ok(!$ok, 'dqe_oauth_secret and dqe_oauth_secret_file in one block: '
   . 'nginx -t fails');
like($err, qr/\[emerg\] .*"dqe_oauth_secret" directive is duplicate/,
     'saying so');

done_testing();
