# Safety: no neighbour, clock, pid or file can corrupt, stall or mislead
# the module.  One section per defect; each check failed on 0.3.0.
#
# Plain Test::More: the script runs its own nginx (master, two workers)
# with Test::DQE::Nginx.

use strict;
use warnings;

use Test::More;
use Test::DQE;
use JSON::PP ();
use POSIX ();
use Time::HiRes qw(sleep time);

my $lua = Test::DQE::lua_loads();

sub mock { Test::DQE::mock(@_) }

my $ngx = Test::DQE::Nginx->new('safety');

# Debian's Lua module is loaded; a Lua compiled in (OpenResty) needs nothing
my $main = ($lua && $lua ne 'static')
           ? "load_module /usr/lib/nginx/modules/ndk_http_module.so;\n"
             . "load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;\n"
           : '';

# --- a neighbour pushes request headers after ours -----------------------
#
# A location of ours rebuilds the request's header list when the client
# sent an Authorization header, and in every subrequest.  Lua then adds
# two headers and reads the list back: both must be there, and no worker
# may die (0.3.0: the list's "last" pointed into a dead stack frame, the
# headers vanished, then the workers crashed).

my $lua_content = <<'LUA';
            content_by_lua_block {
                ngx.req.set_header("X-Added", "yes")
                ngx.req.set_header("X-Added-Too", "also")
                local h = ngx.req.get_headers()
                local n = 0
                for _ in pairs(h) do n = n + 1 end
                ngx.say("added=", h["x-added"], ",", h["x-added-too"],
                        " auth=", h["authorization"] and "kept" or "none")
            }
LUA

my $locations = '';

if ($lua) {
    my $loc = Test::DQE::location('/luaset/', licence => 100960,
                                  secret => 'bulk-pass');
    $loc =~ s{        proxy_pass [^;]+;\n}{$lua_content};
    $locations .= $loc . <<'LUA';
        location /capture/ {
            content_by_lua_block {
                local res = ngx.location.capture("/luaset/sub")
                ngx.print(res.status, " ", res.body)
            }
        }
LUA
}

# two locations of one credential set, with policies of their own
$locations .= "        location /echo { return 200 \$http_authorization; }\n"
    . Test::DQE::echo_location('/pol-strict/', $ngx->port, licence => 100964,
                               secret => 'bulk-pass',
                               extra => 'dqe_oauth_expiry_margin 2s; '
                                        . 'dqe_oauth_refresh_ahead 0;')
    . Test::DQE::echo_location('/pol-wide/', $ngx->port, licence => 100964,
                               secret => 'bulk-pass',
                               extra => 'dqe_oauth_expiry_margin 500ms; '
                                        . 'dqe_oauth_refresh_ahead 0;');

$locations .= Test::DQE::location('/probe/', licence => 100963,
                                  secret => 'bulk-pass')
    . Test::DQE::location('/ra19/', licence => 100961,
                                  secret => 'bulk-pass')
    . Test::DQE::location('/ra27/', licence => 100962, secret => 'bulk-pass');

# a 401 served from proxy_cache: /cachefill/ (no token) puts the 401 of
# /deny in the cache under the key "k", that /cached/ then serves
my $cached = Test::DQE::location('/cached/', licence => 100965,
                                 secret => 'bulk-pass',
                                 extra => 'add_header X-DQE-Status '
                                          . '$dqe_oauth_status always; '
                                          . 'proxy_cache c; '
                                          . 'proxy_cache_key k; '
                                          . 'proxy_cache_valid any 10m;');
$cached =~ s{proxy_pass [^;]+;}{proxy_pass http://127.0.0.1:${\ $ngx->port}/deny;};
$locations .= $cached . <<"LOC";
        location /deny { return 401; }
        location /cachefill/ {
            proxy_cache c;
            proxy_cache_key k;
            proxy_cache_valid any 10m;
            proxy_pass http://127.0.0.1:${\ $ngx->port}/deny;
        }
LOC

my $http = <<"CONF";
    proxy_cache_path ${\ $ngx->root}/cache keys_zone=c:1m;

    server {
        listen 127.0.0.1:${\ $ngx->port};

$locations
    }
CONF

ok($ngx->start(main => $main, http => $http), 'nginx starts');

my @workers = sort $ngx->workers;

SKIP: {
    skip 'Debian\'s Lua module does not load into this nginx', 6 unless $lua;

    my @r;

    for my $i (1 .. 5) {
        push @r, join ' ', $ngx->request("GET /luaset/$i HTTP/1.0\r\n"
                                         . "Host: localhost\r\n"
                                         . "Authorization: x\r\n\r\n");
    }

    is_deeply([map { (split /\n/)[0] } @r],
              [("200 added=yes,also auth=kept") x 5],
              'a client Authorization header, then ngx.req.set_header '
              . 'twice: both headers there, 5 times');

    my ($st, $body) = $ngx->get('/luaset/plain');
    is("$st $body", "200 added=yes,also auth=kept\n",
       'no client Authorization header (ours is the only one)');

    ($st, $body) = $ngx->get('/capture/1');
    is("$st $body", "200 200 added=yes,also auth=kept\n",
       'in a subrequest (ngx.location.capture)');

    sleep 0.3;

    is_deeply([sort $ngx->workers], \@workers, 'the same workers still run');
    unlike($ngx->log, qr/exited on signal/, 'no worker died');
    like(mock('/__mock/stats'),
         Test::DQE::stats(token_requests => { POST => 1, GET => 0 }),
         'one token request for all of them');
}

# --- a 401 from proxy_cache purges nothing ------------------------------------

mock('/__mock/stats?reset=counters');
is(($ngx->get('/cachefill/1'))[0], 401, 'a 401 is cached');

my @r = map { my ($st, undef, $h) = $ngx->get("/cached/$_");
             my ($how) = $h =~ /^X-DQE-Status: *(\S+)/mi;
             "$st " . ($how // "-") } 1 .. 3;

is_deeply(\@r, ['401 MISS', '401 HIT', '401 HIT'],
          'a location of ours served the cached 401 three times: one token, '
          . 'kept');
like(mock('/__mock/stats'), Test::DQE::stats(token_requests => { POST => 1 }),
     'one token request');
unlike($ngx->log, qr/licence "100965".*(?:dropped|drops)/,
       'no purge logged for it');

# --- each location honours its own policy -----------------------------------
#
# 8 s tokens; /pol-strict/ stops using one 2 s before DQE's expiry (at
# 6 s), /pol-wide/ 0.5 s before (at 7.5 s).  6.3 s after the strict
# location's token came, the wide one still uses it, the strict one asks
# for another (0.3.0: the entry's cutoff was the fetching location's, for
# both)

mock('/__mock/config?ttl=8');

my @got = ($ngx->outcome('/pol-strict/a'));
my $came = time;
sleep 6.3;
push @got, $ngx->outcome('/pol-wide/b'), $ngx->outcome('/pol-strict/c'),
           $ngx->outcome('/pol-wide/d');
my $late = time - $came;

mock('/__mock/config?ttl=300');

SKIP: {
    skip "the machine was too slow to check the times ($late s)", 1
        if $late > 7.3;

    is_deeply(\@got, ['200 MISS t1', '200 HIT t1', '200 MISS t2', '200 HIT t2'],
              'one token, two margins: the wide location uses it past the '
              . 'strict one\'s cutoff, the strict one does not');
}

# --- waiters probe the fetch's process at most once a second --------------
#
# 60 requests wait 4 s for one token request: those in the other worker
# check that the fetching worker is alive (kill(pid, 0)) at most once a
# second for the entry, not at every poll (0.3.0: about 25 a second per
# waiter, under the zone's lock), and those in the fetching worker never

SKIP: {
    skip 'no strace', 3 unless -x '/usr/bin/strace';

    mock('/__mock/fault?delay=4&count=1');

    my @w = $ngx->workers;
    my $trace = $ngx->root . '/logs/kill.trace';
    my $strace = fork();
    die "fork: $!" unless defined $strace;

    if ($strace == 0) {
        open STDERR, '>', '/dev/null';
        { exec '/usr/bin/strace', '-f', '-e', 'trace=kill', '-o', $trace,
               map { ('-p', $_) } @w; }
        POSIX::_exit(127);
    }

    sleep 1;    # attached

    my @later = map { $ngx->get_later("/probe/$_", 15) } 1 .. 60;
    my @st = map { $_->() } @later;

    kill 'INT', $strace;
    waitpid($strace, 0);

    is_deeply([grep { $_ != 200 } @st], [], '60 waiters: all 200');

    my $log = $ngx->log;
    my ($fetcher) = $log =~ /\[debug\] (\d+)#\d+: .*dqe_oauth fetch for .*licence "100963"/;
    my %waiters;
    $waiters{$1}++ while $log =~ /\[debug\] (\d+)#\d+: \*\d+ dqe_oauth waits \d+ ms for the fetch of .*licence "100963"/g;

    open my $fh, '<', $trace;
    my @probes = grep { /kill\(\d+, 0\)/ } <$fh>;
    close $fh;

    skip 'all the waiters were in the fetching worker', 2
        unless grep { $_ != $fetcher } keys %waiters;

    my $polls = 0;
    $polls += $waiters{$_} for grep { $_ != $fetcher } keys %waiters;

    ok(@probes >= 1 && @probes <= 6,
       'probes of the fetching worker: ' . scalar(@probes)
       . " in 4 s, for $polls polls of the waiters in the other worker")
        or diag(join '', @probes[0 .. 4]);
    ok(!grep({ /^$fetcher / } @probes), 'none by the fetching worker itself');
}

# --- a Retry-After from DQE too large for an integer ---------------------
#
# saturates at the 5-minute cap (0.3.0: taken for no number at all, a
# backoff of 1 s); the client is told the seconds left, rounded up

for my $case (['/ra19/', '9223372036854775808'], ['/ra27/', '9' x 27]) {
    my ($path, $value) = @$case;

    mock("/__mock/fault?status=503&header=Retry-After:$value&count=1");

    my ($st) = $ngx->get("${path}1");
    my ($st2, undef, $head) = $ngx->get("${path}2");
    my ($ra) = $head =~ /^Retry-After: *(\S+)/mi;

    is("$st $st2 " . ($ra // '-'), '502 502 300',
       'Retry-After: ' . length($value) . ' digits: backing off 300 s');
}

mock('/__mock/fault?clear=1');

ok($ngx->stop, 'quit');

Test::DQE::log_ok($ngx->log);

# --- the status: 1,000 sets, a 4k zone name, a secret rotation -------------
#
# both formats answer 200 and parse (0.3.0: 500 past about 600 characters
# of zone name), every Prometheus series once: two sets that differ only
# in the secret are secret="1" and secret="2" (0.3.0: the same series
# twice)

my $big = Test::DQE::Nginx->new('safety-status');
my $zname = 'z' x 4000;

my $sets = join '', map {
    "        location /c$_/ { dqe_oauth_licence " . (100000 + $_) . "; "
    . "proxy_pass https://127.0.0.1:$ENV{TEST_NGINX_DQE_PORT}; }\n"
} 0 .. 999;

ok($big->start(workers => 1, http => <<"CONF"), 'nginx starts with 1,002 sets');
    dqe_oauth_zone $zname:1m;
    dqe_oauth_server  127.0.0.1:$ENV{TEST_NGINX_DQE_PORT};
    dqe_oauth_secret  bulk-pass;
    dqe_oauth_scope   client_address;
    server {
        listen 127.0.0.1:${\ $big->port};
        location = /status { dqe_oauth_status; }
$sets
${\ Test::DQE::location('/rot-old/', licence => 333333, secret => 's3cr3t-pass')}
${\ Test::DQE::location('/rot-new/', licence => 333333, secret => 's3cr3t-pass-new')}
    }
CONF

is(($big->get('/rot-old/1'))[0], 200, 'the old secret of a rotation');
is(($big->get('/rot-new/1'))[0], 200, 'and the new one: two tokens');

my ($jst, $json) = $big->get('/status', 30);
my $doc = eval { JSON::PP::decode_json($json) };
is($jst, 200, 'JSON: 200');
is(scalar @{ $doc->{credentials} // [] }, 1002, 'it parses, with 1,002 sets');
is(length($doc->{zone}{name} // ''), 4000, 'and the zone\'s 4000-character name');
is_deeply([map { "$_->{licence} $_->{secret}" }
           grep { $_->{licence} eq '333333' } @{ $doc->{credentials} // [] }],
          ['333333 1', '333333 2'], 'the rotation: secret 1 and 2');

my ($pst, $prom) = $big->get('/status?format=prometheus', 30);
is($pst, 200, 'Prometheus: 200');

open my $pf, '>', $big->root . '/prom.txt' or die $!;
print $pf $prom;
close $pf;
my $parsed = `/usr/bin/python3 t/prom_parse.py < ${\ $big->root}/prom.txt`;
is($?, 0, 'python3-prometheus-client parses it');

my %seen;
my @twice = grep { !/^#/ && $seen{ (split / /)[0] }++ } split /\n/, $prom;
is_deeply([@twice[0 .. ($#twice < 2 ? $#twice : 2)]], [],
          'no series twice');
like($prom, qr/^dqe_oauth_requests_total\{server="[^"]+",licence="333333",scope="client_address",secret="2",outcome="miss"\} 1$/m,
     'the new secret\'s set: secret="2", its own counts');

ok($big->stop, 'quit');

# --- nginx -t refuses what would hang or mislead --------------------------

my $conf = Test::DQE::Nginx->new('safety-conf');
my $fifo = $conf->root . '/conf/fifo.secret';

system('mkfifo', $fifo) == 0 or die "mkfifo: $?";
symlink('fifo.secret', $conf->root . '/conf/link.secret') or die $!;
mkdir $conf->root . '/conf/dir.secret';

sub conf_with {
    my (%o) = @_;

    my $loc = Test::DQE::location('/api/', licence => $o{licence});
    $loc =~ s{dqe_oauth_secret  \S+;}{dqe_oauth_secret_file $o{file};}
        if $o{file};

    $conf->write_conf(http => ($o{http} // '')
                              . "    server {\n"
                              . "        listen 127.0.0.1:${\ $conf->port};\n"
                              . $loc
                              . "    }\n");

    return $conf->test_conf(10);
}

for my $name ('fifo.secret', 'link.secret', 'dir.secret') {
    my ($ok, $err, $hung) = conf_with(file => $name);
    my $path = $conf->root . "/conf/$name";

    is(($hung ? 'hung' : $ok ? 'passed' : 'failed'), 'failed',
       "dqe_oauth_secret_file $name: nginx -t fails at once");
    like($err, qr/\[emerg\] .*dqe_oauth_secret_file "\Q$path\E" is not a regular file/,
         'naming the file');
}

my ($ok, $err) = conf_with(licence => "caf\xe9-\xff");
ok(!$ok, 'a licence with bytes that are not ASCII: nginx -t fails');
like($err, qr/\[emerg\] .*invalid dqe_oauth_licence "caf.-.": only visible ASCII/,
     'saying what is allowed');

($ok, $err) = conf_with(licence => "12 34");
ok(!$ok, 'a licence with a space: nginx -t fails');

($ok, $err) = conf_with(http => "    dqe_oauth_zone caf\xe9:1m;\n");
ok(!$ok, 'a zone name with bytes that are not ASCII: nginx -t fails');
like($err, qr/\[emerg\] .*invalid dqe_oauth_zone name "caf.": only visible ASCII/,
     'saying what is allowed');

($ok, $err) = conf_with(licence => '123456');
ok($ok, 'the same configuration with a good licence passes') or diag($err);

done_testing();
