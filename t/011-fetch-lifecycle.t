# A token request belongs to its cache entry, not to the client whose
# request found the cache empty: it runs to its end, and serves every
# request that waited for it, whatever that client does.  And beside
# other modules (Lua, SSI, auth_request, mirror, error_page, HTTP/2) the
# module works fully, then serves the next request on the same
# connection: never an [alert], a hung connection, or a socket left at
# reload or quit.  One regression check per defect of the lifecycle issue.
#
# Plain Test::More: the script runs its own nginx (master, two workers)
# with Test::DQE::Nginx, and talks HTTP/1.1 keep-alive and HTTP/2.

use strict;
use warnings;

use Test::More;
use Test::DQE;
use Time::HiRes qw(sleep time);

my $lua = Test::DQE::lua_loads();

my $ngx = Test::DQE::Nginx->new('fetch-lifecycle');
my $port3 = Test::DQE::free_port();
my $html = $ngx->root . '/html';

mkdir $html;
open my $fh, '>', "$html/file.txt" or die $!;
print $fh "a static file\n";
close $fh;

# a location of ours for each scenario: its own credential set (the mock's
# bulk licences), so that each starts with a cold cache

my $n = 0;

sub ours {
    my ($path, $extra) = @_;

    $n++;

    return Test::DQE::location($path, licence => 100000 + $n,
                               secret => 'bulk-pass',
                               extra => 'add_header X-DQE-Status '
                                        . '$dqe_oauth_status always; '
                                        . ($extra // ''));
}

my $ctl = $ENV{TEST_NGINX_DQE_CTL_PORT};

# Debian's Lua module is loaded; a Lua compiled in (OpenResty) needs nothing
my $main = ($lua && $lua ne 'static')
           ? "load_module /usr/lib/nginx/modules/ndk_http_module.so;\n"
             . "load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;\n"
           : '';

my $locations = join '', map { ours(@$_) } (
    ['/api/'], ['/h2c/'], ['/slow/'], ['/arrive/'], ['/h2r/'], ['/reload/'],
    ['/shutdown/'], ['/quit/'],
    ['/err/', 'error_page 502 = @named;'], ['@named'],
    ['/ssiapi/'], ['/ssirenapi/', 'dqe_oauth_refresh_ahead 50%;'],
);

# the API behind /err/ does not answer: its error_page takes over
$locations =~ s{(location /err/ \{.*?proxy_pass https://)[^;]+;}
               {${1}127.0.0.1:1;}s;

if ($lua) {
    $locations .= ours('/luaapi/')
        . ours('/luarenapi/', 'dqe_oauth_refresh_ahead 50%;')
        . ours('/luaacc/', 'access_by_lua_block { '
                           . 'ngx.req.set_header("X-Lua", "1") }')
        . <<'LUA';
        location ~ ^/lua(ren)?/(.*) {
            content_by_lua_block {
                local res = ngx.location.capture("/lua" .. ngx.var[1]
                                                 .. "api/" .. ngx.var[2])
                ngx.status = res.status
                ngx.print(res.body)
            }
        }
LUA
}

my $http = <<"CONF";
    server {
        listen 127.0.0.1:${\ $ngx->port};
        listen 127.0.0.1:${\ $ngx->port2} http2;

$locations
        location ~ ^/ssi(ren)?/ {
            ssi on;
            default_type text/html;
            return 200 '<!--# include virtual="/ssi\$1api/x" set="v" -->[<!--# echo var="v" encoding="none" -->]';
        }

        location /front/ {
            auth_request /api/check;
            rewrite ^ /__mock/health break;
            proxy_pass http://127.0.0.1:$ctl;
        }

        location /mirrored/ {
            mirror /api/mirror;
            rewrite ^ /__mock/health break;
            proxy_pass http://127.0.0.1:$ctl;
        }
    }

    server {
        listen 127.0.0.1:$port3;

        # credentials for the whole server: what passes nothing upstream
        # needs no token
        dqe_oauth_server  127.0.0.1:$ENV{TEST_NGINX_DQE_PORT};
        dqe_oauth_licence 100500;
        dqe_oauth_secret  bulk-pass;
        dqe_oauth_scope   client_address;

        location /static/ {
            alias $html/;
        }

        location /ret {
            return 200 "returned\\n";
        }
    }
CONF

ok($ngx->start(main => $main, http => $http), 'nginx starts');

sub mock { Test::DQE::mock(@_) }
sub counters { mock('/__mock/stats?reset=counters') }

# --- neighbours: each works fully, then the next request on the connection

SKIP: {
    skip 'Debian\'s Lua module does not load into this nginx', 4 unless $lua;

    counters();
    my @r = $ngx->keepalive('/lua/cold', '/lua/warm');
    is_deeply([map { $_->[0] } @r], [200, 200],
              'ngx.location.capture of a location of ours, cold cache, '
              . 'then a keep-alive request');
    like($r[0][1] // '', qr/"ok":true/, 'the captured request got a token');

    @r = $ngx->keepalive('/luaacc/1', '/luaacc/2');
    is_deeply([map { $_->[0] } @r], [200, 200],
              'access_by_lua in a location of ours, then keep-alive');

    like(counters(), Test::DQE::stats(token_requests => { POST => 2 }),
         'one token request each');
}

my @r = $ngx->keepalive('/ssi/cold', '/ssi/warm');
is_deeply([map { $_->[0] } @r], [200, 200],
          'SSI include set= of a location of ours, then keep-alive');
like($r[0][1] // '', qr/\[\{"ok":true/, 'the SSI subrequest got a token');

@r = $ngx->keepalive('/front/1', '/front/2');
is_deeply([map { $_->[0] } @r], [200, 200],
          'auth_request to a location of ours, then keep-alive');

@r = $ngx->keepalive('/mirrored/1', '/mirrored/2');
is_deeply([map { $_->[0] } @r], [200, 200],
          'mirror to a location of ours, then keep-alive');

@r = $ngx->keepalive('/err/1', '/err/2');
is_deeply([map { $_->[0] } @r], [200, 200],
          'error_page to a named location of ours, then keep-alive');

my ($h2) = $ngx->h2('/h2c/1', '/h2c/2', '/h2c/3');
is_deeply($h2, [200, 200, 200],
          'HTTP/2: three streams at once on one connection, cold cache');
($h2) = $ngx->h2('/h2c/4');
is_deeply($h2, [200], 'then a new connection');

# --- static files under server-level credentials while DQE fails --------

counters();
mock('/__mock/fault?status=500');

my ($st, $body) = $ngx->get('/static/file.txt', 5, $port3);
is("$st $body", "200 a static file\n",
   'a static file under server-level credentials, DQE failing');

($st, $body) = $ngx->get('/ret', 5, $port3);
is("$st $body", "200 returned\n", 'a "return" location likewise');

mock('/__mock/fault?clear=1');
like(counters(), Test::DQE::stats(token_requests => { POST => 0 }),
     'no token request for them');

# --- a slow DQE and an impatient client ----------------------------------

mock('/__mock/fault?delay=3&count=1');

($st) = $ngx->get('/slow/a', 1);
is($st, 0, 'a client gives up before the slow token request ends');

($st, $body) = $ngx->get('/slow/b', 10);
is($st, 200, 'the next one is served by that token request');

like(counters(), Test::DQE::stats(token_requests => { POST => 1 },
                                  tokens_issued => 1),
     'one token request, one token: nothing thrown away');

# --- waiters of a token that expires on arrival --------------------------

# 3 s tokens, a 0.75 s margin: the cutoff (2.25 s) is past on arrival
# (2.5 s), DQE's expiry (3 s) is not
mock('/__mock/config?ttl=3');
mock('/__mock/fault?delay=2.5&count=1');

my @st = sort map { $_->() } map { $ngx->get_later("/arrive/$_", 15) } 1 .. 6;

is_deeply(\@st, [(200) x 6],
          '6 cold requests for a token that expires on arrival: all 200');
like(counters(), Test::DQE::stats(token_requests => { POST => 1 }),
     'served by the one token request they waited for');

mock('/__mock/config?ttl=300');

# --- HTTP/2: the connection closes right after a renewal starts ----------

mock('/__mock/config?ttl=4');

($h2) = $ngx->h2('/h2r/warm');
is_deeply($h2, [200], 'HTTP/2: a token (4 s at the mock)');

sleep 2.5;                          # past the refresh point (2.2 s)
mock('/__mock/fault?delay=1&count=1');

my $out;
($h2, $out) = $ngx->h2('/h2r/renew');
is_deeply($h2, [200], 'a request past the refresh point, then the '
                      . 'connection closes');
like($out, qr/x-dqe-status: RENEW/i, 'it started a renewal');

sleep 1.5;

($h2, $out) = $ngx->h2('/h2r/after');
is_deeply($h2, [200], 'the next request');
like($out, qr/x-dqe-status: HIT/i, 'with the renewed token');

like(counters(), Test::DQE::stats(token_requests => { POST => 2 },
                                  refresh_requests => 1, refresh_ok => 1,
                                  token_errors => { invalid_grant => 0 }),
     'the renewal ended and was kept: no second token request, no '
     . 'invalid_grant');

mock('/__mock/config?ttl=300');

# --- Lua capture and SSI set= past the refresh point ----------------------

mock('/__mock/config?ttl=2');

SKIP: {
    skip 'Debian\'s Lua module does not load into this nginx', 2 unless $lua;

    $ngx->get('/luaren/r1');
    sleep 0.9;                      # past the refresh point (50%)
    ($st) = $ngx->get('/luaren/r2');
    is($st, 200, 'ngx.location.capture past the refresh point');
    sleep 0.5;
    like(counters(), Test::DQE::stats(refresh_ok => 1),
         'the capture started a renewal, and it ended');
}

$ngx->get('/ssiren/r1');
sleep 0.9;
($st, $body) = $ngx->get('/ssiren/r2');
like("$st $body", qr/^200 \[\{"ok":true/, 'SSI set= past the refresh point');
sleep 0.5;
like(counters(), Test::DQE::stats(refresh_ok => 1),
     'the in-memory subrequest started a renewal, and it ended');

mock('/__mock/config?ttl=300');

# --- reload, then quit, with a token request in flight --------------------

mock('/__mock/fault?delay=2&count=1');

my $later = $ngx->get_later('/reload/a', 15);

sleep 0.5;
ok($ngx->reload, 'reload while a token request is in flight');
is($later->(), 200, 'the request that waited got its token');

($st) = $ngx->get('/reload/b');
is($st, 200, 'the new workers use it');
like(counters(), Test::DQE::stats(token_requests => { POST => 1 }),
     'one token request across the reload');

# worker_shutdown_timeout shorter than the token request: at the timeout
# the old worker closes its clients' connections and ends its token
# request, freeing the mark with no backoff; the new workers ask again at
# once (0.3.0: the token request kept the old worker for its whole length)

ok($ngx->reload(shutdown_timeout => '1s'), 'reload, shutdown timeout 1 s');
counters();
mock('/__mock/fault?delay=12&count=1');

$later = $ngx->get_later('/shutdown/a', 20);

sleep 0.5;
my @old = $ngx->workers;
my $reloaded = time;
ok($ngx->reload, 'reload while it is in flight: the old workers leave');
my $left = time - $reloaded;
ok($left < 6, 'within the shutdown timeout, not the token request\'s '
              . '12 s (' . sprintf('%.1f', $left) . ' s)');
is($later->(), 0, 'its waiting client is closed at the timeout');

($st) = $ngx->get('/shutdown/b');
is($st, 200, 'the new workers get a token at once');
like(counters(), Test::DQE::stats(token_requests => { POST => 2 }),
     'two token requests: the one ended, then the new workers\'');
like($ngx->log, qr/\[warn\] .*worker_shutdown_timeout ended the token request for .*licence "\d+".*; the new workers ask again/,
     'the ending is logged');
unlike($ngx->log, qr/taking over|exited on signal/,
       'no mark left behind, no worker crashed');

ok($ngx->reload(shutdown_timeout => '30s'), 'reload, shutdown timeout 30 s');

mock('/__mock/fault?delay=2&count=1');

$later = $ngx->get_later('/quit/a', 15);

sleep 0.5;
ok($ngx->stop, 'nginx -s quit while a token request is in flight: '
               . 'the master exits');
is($later->(), 200, 'the request that waited got its token first');

# --- the whole log ----------------------------------------------------------

my $log = $ngx->log;

# the one [error] expected: /err/'s API, which does not answer
Test::DQE::log_ok($log, qr/\[error\](?!.*connect\(\) failed .*"GET \/err\/)/);

done_testing();
