# Safety: no neighbour, clock, pid or file can corrupt, stall or mislead
# the module.  One section per defect; each check failed on 0.3.0.
#
# Plain Test::More: the script runs its own nginx (master, two workers)
# with Test::DQE::Nginx.

use strict;
use warnings;

use Test::More;
use Test::DQE;
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

my $http = <<"CONF";
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

ok($ngx->stop, 'quit');

Test::DQE::log_ok($ngx->log);

done_testing();
