# make valgrind: nginx in one process (master_process off) under
# valgrind's memcheck, through every token path: a cold fetch and the
# warm path, a renewal with the refresh grant and its fallback, keep-warm,
# each failure cause (refused, 5xx with Retry-After, a closed or reset
# connection, garbage, a cut or oversized reply, a token too long, a
# strict-reader refusal, a timeout, a refused connection), the 401
# purge, a request sent again after a revocation (bodies in memory and in
# a temp file, HTTP/2), SSI set=, auth_request, HTTP/2, readiness; then
# quit.  A report with a
# frame of the module fails the run; reports in nginx core alone are
# listed, and can be suppressed in t/valgrind.supp.

use strict;
use warnings;

use Test::More;
use Test::DQE;
use Time::HiRes qw(sleep);

sub mock { Test::DQE::mock(@_) }

my $ngx = Test::DQE::Nginx->new('valgrind');
my ($port, $port2) = ($ngx->port, $ngx->port2);
my $vlog = $ngx->root . '/logs/valgrind.log';
my $n = 0;

sub ours {
    my ($path, %o) = @_;
    return Test::DQE::location($path, licence => 100960 + $n++,
                               secret => 'bulk-pass', %o);
}

sub fault_port { $ENV{"TEST_NGINX_DQE_FAULT_$_[0]"} }

# a neighbour that adds request headers after ours (Lua), where Debian's
# Lua module loads

my $lua = Test::DQE::lua_loads();
my $main = ($lua && $lua ne 'static')
           ? "load_module /usr/lib/nginx/modules/ndk_http_module.so;\n"
             . "load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;\n"
           : '';
my $lua_loc = '';

if ($lua) {
    $lua_loc = ours('/luaset/');
    $lua_loc =~ s{proxy_pass [^;]+;}{content_by_lua_block { ngx.req.set_header("X-Added", "yes") ngx.say(ngx.req.get_headers()["x-added"]) }};
}

my $http = "    server {\n"
    . "        listen 127.0.0.1:$port;\n"
    . $lua_loc
    . "        location /deny { return 401; }\n"
    . "        location = /status { dqe_oauth_status; }\n"
    . ours('/api/')
    . ours('/renew/', extra => 'dqe_oauth_refresh_ahead 60%;')
    . ours('/warm/', extra => 'dqe_oauth_keep_warm on;')
    . ours('/always401/')
    . ours('/strict/')
    . ours('/ssiapi/')
    . ours('/retry/')
    . ours('/retry2/')
    . Test::DQE::location('/refused/', licence => 999999)
    . join('', map { ours("/f_\L$_/", port => fault_port($_)) }
                   qw(CLOSE RESET GARBAGE TRUNCATE BIG LONG_TOKEN RETRY_503))
    . ours('/noconnect/', port => 1)
    . "        location /ssi/ {\n"
    . "            ssi on;\n"
    . "            default_type text/html;\n"
    . "            return 200 '<!--# include virtual=\"/ssiapi/x\" set=\"v\" -->"
    . "[<!--# echo var=\"v\" -->]';\n"
    . "        }\n"
    . "        location /front/ {\n"
    . "            auth_request /api/check;\n"
    . "            rewrite ^ /__mock/health break;\n"
    . "            proxy_pass http://127.0.0.1:$ENV{TEST_NGINX_DQE_CTL_PORT};\n"
    . "        }\n"
    . "    }\n"
    . "    server {\n"
    . "        listen 127.0.0.1:$port2 http2;\n"
    . "        proxy_read_timeout 1s;\n"
    . ours('/timeout/', port => fault_port('SLOW'))
    . ours('/h2/')
    . "    }\n";

$http =~ s{(location /always401/ \{.*?proxy_pass )[^;]+;}
          {${1}http://127.0.0.1:$port/deny;}s;

mock('/__mock/reset');
mock('/__mock/config?ttl=2');

# --keep-debuginfo: nginx unloads the module at exit, before the leak
# check; without it the module's frames of a leak are "???" and pass for
# nginx core's
my @valgrind = ('valgrind', '--tool=memcheck', '--num-callers=40',
                '--keep-debuginfo=yes',
                '--error-limit=no', '--leak-check=full',
                '--show-leak-kinds=definite', '--track-origins=yes',
                "--suppressions=t/valgrind.supp", "--log-file=$vlog");

my $pid = $ngx->spawn(\@valgrind, main => $main, http => $http,
                      workers => 1);
ok($pid, 'nginx runs under valgrind');

my %want = (
    '/api/1' => 200, '/api/2' => 200, '/warm/1' => 200,
    '/always401/1' => 401, '/always401/2' => 401,
    '/refused/1' => 502, '/refused/2' => 502,
    '/f_close/1' => 502, '/f_reset/1' => 502, '/f_garbage/1' => 502,
    '/f_truncate/1' => 502, '/f_big/1' => 502, '/f_long_token/1' => 502,
    '/f_retry_503/1' => 502, '/noconnect/1' => 502,
    '/ssi/1' => 200, '/front/1' => 200,
);

for my $path (sort keys %want) {
    my ($st) = $ngx->get($path, 60);
    is($st, $want{$path}, "$path: $want{$path}");
}

SKIP: {
    skip 'Debian\'s Lua module does not load into this nginx', 2 unless $lua;

    my ($st, $body) = $ngx->request("GET /luaset/1 HTTP/1.0\r\n"
                                    . "Authorization: x\r\n\r\n", 60);
    is("$st $body", "200 yes\n",
       'a client Authorization, then ngx.req.set_header');
    ($st, $body) = $ngx->get('/luaset/2', 60);
    is("$st $body", "200 yes\n", 'the same without it');
}

mock(Test::DQE::fault(body => '{"access_token":"a\u0000b",'
                              . '"token_type":"Bearer","expires_in":"300"}',
                      count => 1) =~ s/^GET //r);
my ($st) = $ngx->get('/strict/1', 60);
is($st, 502, 'a refused reply: 502');

# renewals: with the refresh grant, then refused (refresh_ttl 0): fallback

$ngx->get('/renew/1', 60);
sleep 1.2;
($st) = $ngx->get('/renew/2', 60);
is($st, 200, 'a renewal starts');
sleep 1;
mock('/__mock/config?refresh_ttl=0');
($st) = $ngx->get('/renew/3', 60);
is($st, 200, 'another, whose refresh token is refused');
sleep 1.5;
mock('/__mock/config?refresh_ttl=600');

# a revocation: each request below is sent again with a new token

is_deeply(($ngx->h2('/h2/0'))[0], [200], 'a token for /h2/');
is(($ngx->get('/retry/warm', 60))[0], 200, 'a token for /retry/');
is(($ngx->get('/retry2/warm', 60))[0], 200, 'a token for /retry2/');
mock('/__mock/revoke');

# two sets: a set drops at most one token each 10 s

for my $c (['/retry/', 1000], ['/retry2/', 200_000]) {
    my ($path, $len) = @$c;
    my ($rst, $rbody) = $ngx->request(
        "POST ${path}x HTTP/1.0\r\nHost: localhost\r\n"
        . "Content-Length: $len\r\n\r\n" . ('b' x $len), 60);
    like("$rst $rbody", qr/\A200 .*"body_length":$len/,
         "a POST of $len bytes, its token revoked: sent again, 200");
}

my ($h2) = $ngx->h2('/h2/1', '/h2/2', '/timeout/1');
is_deeply($h2, [200, 200, 502],
          'HTTP/2 (sent again: its token was revoked), and a token request '
          . 'that times out');

sleep 1;

# the status, both formats, once every path above has counted

my ($json_st, $json) = $ngx->get('/status', 60);
my ($prom_st, $prom) = $ngx->get('/status?format=prometheus', 60);
is_deeply([$json_st, $prom_st], [200, 200], 'the status, JSON and Prometheus');
like($json, qr/"invalid_client":1/, 'it counted the refused licence');
like($prom, qr/^dqe_oauth_zone_entries\{zone="dqe_oauth"\} \d+$/m,
     'and the zone');
like($json, qr/"retries":[1-9]/, 'and the retries');

my ($ready_st) = $ngx->get('/status?ready=all', 60);
is($ready_st, 503, 'readiness: 503, some sets have no token');

kill 'QUIT', $pid;
waitpid($pid, 0);
is($? >> 8, 0, 'nginx quits');

mock('/__mock/config?ttl=300');

# the reports: one block each, "==PID== ..." lines up to a blank one

open my $fh, '<', $vlog or die "$vlog: $!";
my @blocks = split /^==\d+==\s*\n/m, do { local $/; <$fh> };
close $fh;

my @reports = grep { /^==\d+== (?:Invalid|Conditional|Use of|Syscall|Source and destination|Mismatched|[\d,]+ (?:\([^)]*\) )?bytes in [\d,]+ blocks are definitely)/m } @blocks;
my @ours = grep { /ngx_http_dqe_oauth_/ } @reports;

diag("valgrind reports in nginx core alone: " . scalar(@reports - @ours))
    if @reports > @ours;

is(scalar @ours, 0, 'no valgrind report with a frame of the module')
    or diag(join "\n", @ours[0 .. ($#ours < 4 ? $#ours : 4)]);

my ($summary) = do { open my $f, '<', $vlog; local $/; <$f> }
                =~ /(ERROR SUMMARY: .*)/;
diag("valgrind: " . ($summary // 'no summary'));

done_testing();
