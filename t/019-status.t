# dqe_oauth_status after known traffic, in JSON and in Prometheus's text
# format (read by Debian's python3-prometheus-client, and promtool where
# installed), against what the mock served; never a secret or a token in
# it.  Then what goes with it: STALE and Retry-After, counters that
# survive a reload, dqe_oauth_secret_file, the renewal jitter, and the
# workers' copies of a token (L1) dropped by a purge in another worker.
#
# Plain Test::More, an nginx of its own with 4 workers.

use strict;
use warnings;

use Test::More;
use Test::DQE;
use JSON::PP;
use Time::HiRes qw(sleep time);

sub mock { Test::DQE::mock(@_) }

my ($version) = `cat src/ngx_http_dqe_oauth_module.h`
    =~ /NGX_HTTP_DQE_OAUTH_VERSION\s+"([^"]+)"/;

my $ngx = Test::DQE::Nginx->new('status');
my $port = $ngx->port;
my $secret_file = $ngx->root . '/conf/dqe.secret';

sub write_secret {
    my ($text, $mode) = @_;
    open my $fh, '>', $secret_file or die $!;
    print $fh $text;
    close $fh;
    chmod $mode // 0600, $secret_file;
}

# /file/: licence 654321, its secret from conf/dqe.secret

my $file_location = Test::DQE::location('/file/', licence => 654321,
                                        secret => 'unused');
$file_location =~ s/dqe_oauth_secret  unused;/dqe_oauth_secret_file dqe.secret;/;

my $http = "    log_format st '\$uri \$status \$dqe_oauth_status';\n"
    . "    server {\n"
    . "        listen 127.0.0.1:$port reuseport;\n"
    . "        access_log logs/st.log st;\n"
    . "        location = /status { dqe_oauth_status; }\n"
    . Test::DQE::location('/api/', extra => 'dqe_oauth_retry_on_401 off;')
    . Test::DQE::location('/refused/', licence => 999999)
    . Test::DQE::location('/short/', licence => 100901, secret => 'bulk-pass')
    . $file_location
    . "    }\n";

sub status_json {
    my ($st, $body) = $ngx->get('/status');
    return $st == 200 ? decode_json($body) : { error => $st };
}

sub set_of {
    my ($json, $licence) = @_;
    my ($set) = grep { $_->{licence} eq $licence } @{ $json->{credentials} };
    return $set;
}

sub outcomes {
    my ($prefix) = @_;
    open my $fh, '<', $ngx->root . '/logs/st.log' or return ();
    return map { /^\Q$prefix\E\S* \d+ (\S+)$/ ? $1 : () } <$fh>;
}

# Prometheus text read by the real parser: "name{k=v,...}" => value

sub prometheus {
    my ($text) = @_;
    open my $fh, '>', $ngx->root . '/prom.txt' or die $!;
    print $fh $text;
    close $fh;

    my $out = `/usr/bin/python3 t/prom_parse.py < ${\ $ngx->root}/prom.txt`;
    return $? == 0 ? decode_json($out) : undef;
}

write_secret("other-pass\n");
mock('/__mock/reset');

my $t0 = time;
# a server whose credentials (refused ones) its locations inherit, the
# status among them: the status itself never asks for a token

my $port2 = $ngx->port2;
my $server2 = "    server {\n"
    . "        listen 127.0.0.1:$port2;\n"
    . "        dqe_oauth_server  127.0.0.1:$ENV{TEST_NGINX_DQE_PORT};\n"
    . "        dqe_oauth_licence 999999;\n"
    . "        dqe_oauth_secret  s3cr3t-pass;\n"
    . "        dqe_oauth_scope   client_email;\n"
    . "        location = /status { dqe_oauth_status; }\n"
    . "    }\n";

ok($ngx->start(http => $http . $server2, workers => 4),
   'nginx starts, 4 workers');

# --- known traffic, then the status -----------------------------------------

my @st = map { ($ngx->get("/api/$_"))[0] } 1 .. 6;
is_deeply(\@st, [(200) x 6], '6 requests with a token');

@st = map { ($ngx->get("/refused/$_"))[0] } 1 .. 3;
is_deeply(\@st, [(502) x 3], '3 requests under a refused licence');

my $stats = decode_json(mock('/__mock/stats'));
is($stats->{token_requests}{POST}, 2, 'the mock saw 2 token requests');

my $json = status_json();
is($json->{version}, $version, "the version, $version");

my $api = set_of($json, '123456');
my $bad = set_of($json, '999999');

is_deeply($api->{requests},
          { hit => 5, miss => 1, wait => 0, renew => 0, stale => 0,
            error => 0, retry => 0 },
          'requests of 123456 at once, from 4 workers: 1 miss, 5 hits');
is_deeply([outcomes('/api/')], [qw(MISS HIT HIT HIT HIT HIT)],
          'as $dqe_oauth_status logged them');
is($bad->{requests}{error}, 3, 'requests of 999999: 3 errors');

is($api->{fetches}{client_credentials}{success}, 1, '1 token received');
is($bad->{fetches}{client_credentials}{invalid_client}, 1,
   '1 refused: invalid_client');
is($stats->{token_errors}{invalid_client}, 1, 'as the mock answered');

my $fetches = 0;
for my $set (@{ $json->{credentials} }) {
    $fetches += $_ for map { values %$_ } values %{ $set->{fetches} };
}
is($fetches, $stats->{token_requests}{POST},
   'token requests counted, all sets: those the mock saw');

my $h = $api->{fetch_duration};
is($h->{count}, 1, 'one duration');
is($h->{buckets}{'+Inf'}, 1, '+Inf holds it');
ok($h->{sum} > 0 && $h->{sum} < 10, "its sum, $h->{sum} s");
my @b = map { $h->{buckets}{$_} } qw(0.05 0.1 0.25 0.5 1 2.5 5 10 +Inf);
is_deeply([sort { $a <=> $b } @b], \@b, 'buckets are cumulative');

my $now = time;
ok($api->{token_expires} > $now + 280 && $api->{token_expires} < $now + 301,
   'token expiry: 300 s after the fetch');
my $ahead = $api->{token_expires} - $api->{token_renews};
ok($ahead >= 70 - 0.01 && $ahead <= 85 + 0.01,
   "renewal 10 s margin + 60 s (20%) + jitter up to 15 s before: $ahead s");
ok($api->{refresh_token_expires} > $now + 580
   && $api->{refresh_token_expires} <= $now + 601,
   'refresh token expiry: 10 min after the fetch');
ok($api->{last_success} >= $t0 - 1 && $api->{last_success} <= $now + 1,
   'last success: now');
is($api->{consecutive_failures}, 0, 'no failure since');
is($api->{backoff_until}, undef, 'no backoff');
ok(!$api->{fetch_in_flight}, 'no fetch in flight');

is($bad->{token_expires}, undef, 'refused: no token');
is($bad->{last_success}, undef, 'refused: never a success');
is($bad->{consecutive_failures}, 1, 'refused: 1 failure');
ok($bad->{backoff_until} > $now && $bad->{backoff_until} <= $now + 10.5,
   'refused: backing off 10 s');

my $unused = set_of($json, '654321');
ok($unused && $unused->{requests}{hit} == 0 && !$unused->{token_expires},
   'a set not used yet is shown, empty');

is($json->{zone}{name}, 'dqe_oauth', 'zone name');
is($json->{zone}{size}, 1048576, 'zone size');
is($json->{zone}{entries}, 2, 'zone entries: the two sets used');
ok($json->{zone}{used} > 0 && $json->{zone}{used} < 1048576, 'zone used');
is($json->{zone}{evictions} + $json->{zone}{allocation_failures}, 0,
   'no eviction, no allocation failure');

# --- the same in Prometheus's format -----------------------------------------

my @r = $ngx->keepalive('/status?format=prometheus');
is($r[0][0], 200, 'Prometheus format');
like($r[0][2], qr{Content-Type: text/plain; version=0\.0\.4}i,
     'its content type, 0.0.4');

my $text = $r[0][1];
our $m = prometheus($text);
ok($m, 'python3-prometheus-client parses it') or diag $text;

# a sample by its name and labels; the set's labels by licence

sub sample {
    my ($name, $licence, %labels) = @_;
    %labels = (%labels, licence => $licence, scope => 'client_address',
               secret => 1,
               server => "https://127.0.0.1:$ENV{TEST_NGINX_DQE_PORT}")
        if $licence;
    return $m->{"$name\{"
                . join(',', map { "$_=$labels{$_}" } sort keys %labels)
                . '}'};
}

is(sample('dqe_oauth_info', undef, version => $version), 1,
   'info: the version');
is(sample('dqe_oauth_requests_total', 123456, outcome => 'hit'), 5,
   'hit counter');
is(sample('dqe_oauth_requests_total', 123456, outcome => 'miss'), 1,
   'miss counter');
is(sample('dqe_oauth_requests_total', 999999, outcome => 'error'), 3,
   'error counter');
is(sample('dqe_oauth_fetches_total', 123456, grant => 'client_credentials',
          result => 'success'), 1, 'fetch counter: success');
is(sample('dqe_oauth_fetches_total', 999999, grant => 'client_credentials',
          result => 'invalid_client'), 1, 'fetch counter: invalid_client');
is(sample('dqe_oauth_fetch_duration_seconds_count', 123456), 1,
   'histogram count');
is(sample('dqe_oauth_fetch_duration_seconds_bucket', 123456,
          le => '+Inf'), 1, 'histogram +Inf bucket');
ok(abs(sample('dqe_oauth_token_expiry_timestamp_seconds', 123456)
       - $api->{token_expires}) < 0.01, 'token expiry as in JSON');
is(sample('dqe_oauth_consecutive_failures', 999999), 1,
   'consecutive failures');
ok(defined sample('dqe_oauth_backoff_until_timestamp_seconds', 999999),
   'backoff until, for the refused set');
ok(!defined sample('dqe_oauth_token_expiry_timestamp_seconds', 999999),
   'no token expiry where there is no token');
is(sample('dqe_oauth_zone_entries', undef, zone => 'dqe_oauth'), 2,
   'zone entries');
is(sample('dqe_oauth_zone_size_bytes', undef, zone => 'dqe_oauth'), 1048576,
   'zone size');

# the README's scrape configuration and alerts, as Prometheus reads them

sub readme_block {
    my ($first) = @_;
    open my $fh, '<', 'README.md' or die $!;
    my $text = do { local $/; <$fh> };
    my ($block) = $text =~ /^(    \Q$first\E\n(?:    .*\n|\n)*)/m or return '';
    $block =~ s/^    //mg;
    my $file = $ngx->root . "/readme.$first.yml";
    $file =~ s/[^\w.\/-]//g;
    open my $out, '>', $file or die $!;
    print $out $block;
    close $out;
    return $file;
}

SKIP: {
    skip 'promtool is not installed', 3 unless -x '/usr/bin/promtool';
    my $lint = `promtool check metrics < ${\ $ngx->root}/prom.txt 2>&1`;
    is($? >> 8, 0, 'promtool check metrics: clean') or diag $lint;

    my $rules = readme_block('groups:');
    $lint = `promtool check rules $rules 2>&1`;
    like($lint, qr/SUCCESS: 4 rules found/, "the README's 4 alerts load")
        or diag $lint;

    my $config = readme_block('scrape_configs:');
    $lint = `promtool check config --syntax-only $config 2>&1`;
    is($? >> 8, 0, "the README's scrape configuration loads") or diag $lint;
}

for my $body (encode_json($json), $text) {
    unlike($body, qr/s3cr3t-pass|other-pass|bulk-pass|TK[0-9a-f]{40}/,
           'no secret, no token in the status');
}

is(($ngx->get('/status?format=xml'))[0], 400, 'an unknown format: 400');

# --- Retry-After during a backoff ---------------------------------------------

@r = $ngx->keepalive('/refused/again');
is($r[0][0], 502, 'refused again, during the backoff');
my ($retry) = $r[0][2] =~ /^Retry-After: (\d+)\r?$/mi;
ok(defined $retry && $retry >= 1 && $retry <= 10,
   'with Retry-After: the seconds left of 10 (' . ($retry // 'none') . ')');

@r = $ngx->keepalive('/api/fine');
unlike($r[0][2], qr/Retry-After/i, 'no Retry-After on a success');

# --- counters survive a reload ------------------------------------------------

ok($ngx->reload, 'reload');
$api = set_of(status_json(), '123456');
is($api->{requests}{hit}, 6, 'after the reload: the 6 hits still counted');
is($api->{fetches}{client_credentials}{success}, 1,
   'and the one token request');
is(($ngx->get('/api/after'))[0], 200, 'a request after the reload');
is(set_of(status_json(), '123456')->{requests}{hit}, 7, 'counted on');

# --- STALE: a renewal fails, the token is still good -------------------------

mock('/__mock/config?ttl=8');    # margin 2 s, renewal from 4.4 s (jitter)
is(($ngx->get('/short/1'))[0], 200, 'an 8 s token');
mock('/__mock/config?ttl=300');
mock('/__mock/fault?status=500');
sleep 4.8;
is(($ngx->get('/short/2'))[0], 200, 'past its renewal point: 200');
sleep 0.3;
is(($ngx->get('/short/3'))[0], 200, 'the renewal failed: 200 still');
mock('/__mock/fault?clear=1');
is_deeply([outcomes('/short/')], [qw(MISS RENEW STALE)],
          '$dqe_oauth_status: MISS, RENEW, then STALE');
my $short = set_of(status_json(), '100901');
is($short->{requests}{stale}, 1, 'the status counts it');
is($short->{fetches}{refresh_token}{'5xx'}, 1,
   'the renewal: the refresh grant, answered 500');
is($short->{consecutive_failures}, 1, 'one failure since the token');

# --- dqe_oauth_secret_file ----------------------------------------------------

is(($ngx->get('/file/1'))[0], 200, 'a secret from a file');

my $dump = `${\ $ngx->{binary}} -p ${\ $ngx->root}/ -c ${\ $ngx->root}/conf/nginx.conf -T 2>&1`;
like($dump, qr/dqe_oauth_secret_file dqe\.secret;/, 'nginx -T shows the file');
unlike($dump, qr/other-pass/, 'and not the secret');

sub conf_test {
    truncate $ngx->root . '/logs/stderr.log', 0;
    my $ok = $ngx->run('-t');
    open my $fh, '<', $ngx->root . '/logs/stderr.log';
    local $/;
    return ($ok, <$fh> // '');
}

write_secret("other-pass\n", 0644);
my ($ok, $err) = conf_test();
ok($ok, 'a secret file any user can read: accepted');
like($err, qr/\[warn\].*dqe_oauth_secret_file "\Q$secret_file\E" can be read by any user/,
     'with a [warn] naming it');

write_secret("\n");
($ok, $err) = conf_test();
ok(!$ok, 'an empty secret file: nginx -t fails');
like($err, qr/\[emerg\].*dqe_oauth_secret_file "\Q$secret_file\E" is empty/,
     'naming the file');

unlink $secret_file;
($ok, $err) = conf_test();
ok(!$ok, 'a missing secret file: nginx -t fails');
like($err, qr/\[emerg\].*dqe_oauth_secret_file "\Q$secret_file\E" cannot be read/,
     'naming the file');

# a wrong secret, then the right one: only that set fetches anew

write_secret("wrong-pass\n");
ok($ngx->reload, 'reload with a wrong secret in the file');
mock('/__mock/stats?reset=counters');
is(($ngx->get('/file/2'))[0], 502, 'refused');
is(($ngx->get('/api/2'))[0], 200, 'the other set still served');

write_secret("other-pass\r\n");
ok($ngx->reload, 'reload with the secret fixed (and a CRLF)');
is(($ngx->get('/file/3'))[0], 200, 'served again');
is(($ngx->get('/api/3'))[0], 200, 'the other set still served');
like(mock('/__mock/stats?reset=counters'),
     Test::DQE::stats(token_requests => { POST => 1 }),
     '1 token request: the wrong secret\'s; none for the other set');
is_deeply([outcomes('/file/')], [qw(MISS ERROR HIT)],
          'the changed set: its own entry per secret, the first one kept');
is_deeply([(outcomes('/api/'))[-2, -1]], [qw(HIT HIT)],
          'the other set: HIT across both reloads');

# --- jitter: two instances started together renew apart ---------------------

my $twin = Test::DQE::Nginx->new('status-twin');
(my $twin_http = $http) =~ s/127\.0\.0\.1:$port/127.0.0.1:${\ $twin->port}/;
$twin_http =~ s/\Q$file_location\E//;
ok($twin->start(http => $twin_http, workers => 1), 'a second instance');
is(($twin->get('/api/twin'))[0], 200, 'its own token');
my ($st2, $body2) = $twin->get('/status');
my $twin_api = set_of(decode_json($body2), '123456');
my $twin_ahead = $twin_api->{token_expires} - $twin_api->{token_renews};
ok($twin_ahead >= 70 - 0.01 && $twin_ahead <= 85 + 0.01,
   "its renewal in the same window: $twin_ahead s");
isnt(sprintf('%.3f', $twin_ahead), sprintf('%.3f', $ahead),
     'at another point of it (drawn once per instance)');
$twin->stop;

# --- a purge in one worker reaches every worker's copy ------------------------

# each worker's copy holds for a second from when it was made: the
# requests after the revocation follow the warm ones at once, the checks
# wait (a mutant that bumps no generation on a purge shows only while
# the copies are young)

my @warm = map { ($ngx->get("/api/warm$_"))[0] } 1 .. 20;
mock('/__mock/revoke');
@st = map { ($ngx->get("/api/after-revoke$_"))[0] } 1 .. 20;

is_deeply(\@warm, [(200) x 20], 'every worker has the token');
is_deeply([(outcomes('/api/warm'))], [('HIT') x 20], 'all hits');
is_deeply(\@st, [401, (200) x 19],
          'the API refused the token once: purged for all 4 workers at once');
is(set_of(status_json(), '123456')->{purges}, 1, 'one purge counted');
is(set_of(status_json(), '123456')->{retries}, 0,
   'no retry (dqe_oauth_retry_on_401 off here: the purge alone reaches '
   . 'every worker; with a retry the new token would)');

my ($st3, $body3) = $ngx->get('/status', undef, $port2);
is($st3, 200, 'the status under server-level credentials: no token needed');
my $json3 = eval { decode_json($body3) } // {};
my ($email) = grep { $_->{scope} eq 'client_email' }
               @{ $json3->{credentials} // [] };
is_deeply($email && [@{ $email->{requests} }{qw(miss error)},
                     $email->{fetches}{client_credentials}{invalid_client}],
          [0, 0, 0], 'its credential set: no request, no token request');

ok($ngx->stop, 'nginx stops');
Test::DQE::log_ok($ngx->log);

done_testing();
