# Every module that sends the client's headers upstream sends the token:
# fastcgi_pass with Debian's fastcgi_params (as HTTP_AUTHORIZATION),
# uwsgi_pass, scgi_pass, grpc_pass, proxy_pass with variables.  And the
# common PHP line "fastcgi_param HTTP_AUTHORIZATION $http_authorization"
# sends it empty, on purpose (the header is invisible to variables).
# The backends echo what they got (t/echo_backends.py; grpc and proxy:
# nginx itself).  A request whose token the FastCGI, uwsgi or SCGI
# backend, or gRPC's (an HTTP 401), refuses is sent again with a new
# token.
#
# Plain Test::More, an nginx of its own.

use strict;
use warnings;

use Test::More;
use Test::DQE;

# a package variable: a lexical would be closed, waiting for the backends
# to exit, when the script's scope ends, before END could stop them

our $bfh;
my $bpid = open($bfh, '-|', 'python3', 't/echo_backends.py')
    or die "cannot start t/echo_backends.py: $!";
my ($fcgi, $uwsgi, $scgi) = (<$bfh> // '') =~ /fastcgi=(\d+) uwsgi=(\d+) scgi=(\d+)/
    or die 'the echo backends did not start';

END {
    if ($bpid) {
        kill 'KILL', $bpid;
        waitpid($bpid, 0);
    }
}

my $ngx = Test::DQE::Nginx->new('other-upstreams');
my ($port, $port2) = ($ngx->port, $ngx->port2);
my $n = 0;

sub ours {
    my ($path, $pass) = @_;
    my $loc = Test::DQE::location($path, licence => 100980 + $n++,
                                  secret => 'bulk-pass');
    $loc =~ s{proxy_pass [^;]+;}{$pass};
    return $loc;
}

my $http = "    server {\n"
    . "        listen 127.0.0.1:$port;\n"
    . "        location = /echo { return 200 \$http_authorization; }\n"
    . ours('/fcgi/', "fastcgi_pass 127.0.0.1:$fcgi; "
                     . "include /etc/nginx/fastcgi_params;")
    . ours('/fcgi-php/', "fastcgi_pass 127.0.0.1:$fcgi; "
                         . "include /etc/nginx/fastcgi_params; "
                         . "fastcgi_param HTTP_AUTHORIZATION "
                         . "\$http_authorization;")
    . ours('/uwsgi/', "uwsgi_pass 127.0.0.1:$uwsgi; "
                      . "include /etc/nginx/uwsgi_params;")
    . ours('/scgi/', "scgi_pass 127.0.0.1:$scgi; "
                     . "include /etc/nginx/scgi_params;")
    . ours('/grpc/', "grpc_pass grpc://127.0.0.1:$port2;")
    . ours('/vars/', "set \$up 127.0.0.1:$port; "
                     . "proxy_pass http://\$up/echo;")
    . ours('/grpcr/', "grpc_pass grpc://127.0.0.1:$port2;")
    . "    }\n"
    . "    server {\n"
    . "        listen 127.0.0.1:$port2 http2;\n"
    . "        location / { return 200 \$http_authorization; }\n"
    . "        location /grpcr/ {\n"
    . "            proxy_pass https://127.0.0.1:$ENV{TEST_NGINX_DQE_PORT};\n"
    . "        }\n"
    . "    }\n";

ok($ngx->start(http => $http), 'nginx starts');

for my $path (qw(/fcgi/ /uwsgi/ /scgi/ /grpc/ /vars/)) {
    my ($st, $body) = $ngx->get("${path}x");
    is("$st $body" =~ s/TK[0-9a-f]{40}/TK…/r, '200 Bearer TK…',
       "$path: the backend gets the token");
}

# dqe_oauth_retry_on_401: the backend refuses the token it had (a
# revocation); the request is sent again with a new token, which it takes

my %first;

for my $path (qw(/fcgi/ /uwsgi/ /scgi/)) {
    my ($st, $body) = $ngx->get("${path}y");
    $first{$path} = $body;

    my ($st2, $body2, $head) = $ngx->get("${path}refuse/1");
    ok($st2 == 200 && $body2 =~ /\ABearer TK[0-9a-f]{40}\z/
       && $body2 ne $first{$path},
       "$path: the token refused, sent again: 200 with a new token");
    unlike($head, qr/WWW-Authenticate/i, "$path: none of the 401's headers");
}

# grpc_pass to an HTTP/2 server that asks the mock's API, which refuses a
# revoked token: an HTTP 401 over gRPC's transport, sent again

my ($gst, $gbody) = $ngx->get('/grpcr/warm');
like("$gst $gbody", qr/\A200 \{"ok":true/, '/grpcr/: a token');
is(Test::DQE::mock('/__mock/revoke?licence=100986'), '{"revoked":1}',
   '/grpcr/: DQE revokes it');
($gst, $gbody) = $ngx->get('/grpcr/again');
like("$gst $gbody", qr/\A200 \{"ok":true,"path":"\/grpcr\/again"/,
     '/grpcr/: the 401 sent again with a new token: 200');

my ($st, $body) = $ngx->get('/fcgi-php/x');
is("$st $body", '200 -',
   'fastcgi_param HTTP_AUTHORIZATION $http_authorization: empty');

ok($ngx->stop, 'quit');

Test::DQE::log_ok($ngx->log);

done_testing();
