package Test::DQE;

# Glue between a Test::Nginx::Socket suite and the mock DQE server.
#
#   use Test::Nginx::Socket 'no_plan';
#   use Test::DQE;
#
# On import it makes a TLS certificate for 127.0.0.1 with openssl, starts
# t/dqe_mock.py on free loopback ports (HTTPS for tokens and the API, plain
# HTTP for its controls) and exports, for use as $TEST_NGINX_* in blocks:
#
#   TEST_NGINX_DQE_PORT      the mock's HTTPS port (token endpoint and API)
#   TEST_NGINX_DQE_CTL_PORT  the mock's plain control port (/__mock/...)
#   TEST_NGINX_DQE_CA        the certificate to trust for it
#   TEST_NGINX_DQE_MODULE    the module .so (DQE_MODULE, or build/objs/...)
#   TEST_NGINX_FAN_PORT      a free port, for a second server{} in a block
#   TEST_NGINX_DQE_FAULT_*   mock listeners whose token requests all fail:
#                            CLOSE, RESET, GARBAGE, TRUNCATE, SLOW (3 s),
#                            BIG (a 20k reply), LONG_TOKEN (4097 bytes)
#
# and adds to every block, unless it says otherwise:
#   main_config: load_module $TEST_NGINX_DQE_MODULE;      (unless present)
#   http_config: proxy_ssl_verify on + the mock's certificate
#                                     (unless the block sets proxy_ssl_*)
#   config:      location /__mock/ proxying to the mock's control port
#                (with dqe_oauth off), so that a block's requests can reset
#                it and read its stats: GET /__mock/stats?reset=1 gives the
#                counts since the last reset and starts new ones.
#
# The mock is stopped when the test file ends.  Works the same under the
# real Test::Nginx::Socket and under the bundled subset in t/runner.

use strict;
use warnings;

use Cwd qw(getcwd);
use File::Path qw(make_path);
use IO::Socket::INET;
use POSIX ();

my ($mock_pid, $mock_fh, $owner);

# extra mock listeners whose token requests all fail one way:
# $TEST_NGINX_DQE_FAULT_CLOSE and so on

our @FAULTS = (
    [ CLOSE => 'mode=close' ],
    [ RESET => 'mode=reset' ],
    [ GARBAGE => 'mode=garbage' ],
    [ TRUNCATE => 'mode=truncate' ],
    [ SLOW => 'delay=3' ],
    [ BIG => 'body={"access_token":"TK' . ('a' x 20000)
             . '","token_type":"Bearer","expires_in":"300"}' ],
    [ LONG_TOKEN => 'body={"access_token":"TK' . ('b' x 4095)
                    . '","token_type":"Bearer","expires_in":"300"}' ],
);

# a port for nginx to listen on: below the ephemeral range (32768 and up
# on Linux), so that no outgoing connection or port-0 listener (the mock's)
# can take it between this check and nginx's bind()

sub free_port {
    for (1 .. 100) {
        my $port = 20000 + int(rand(10000));
        my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
                                      LocalPort => $port, Proto => 'tcp',
                                      Listen => 1, ReuseAddr => 1)
            or next;
        close $s;
        return $port;
    }

    die "no free port in 20000-29999";
}

sub start_mock {
    my $root = getcwd();
    my $dir = "$root/t/servroot-dqe";

    make_path($dir);

    my $cert = "$dir/cert.pem";
    my $key = "$dir/key.pem";

    if (!-s $cert || -M $cert > 0.5) {
        system("openssl req -x509 -newkey ec "
               . "-pkeyopt ec_paramgen_curve:prime256v1 -nodes "
               . "-subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 "
               . "-days 2 -keyout $key -out $cert >/dev/null 2>&1") == 0
            or die "openssl could not make a test certificate";
    }

    my @faults = map { ('--fault-listen', "127.0.0.1:0=$_->[1]") } @FAULTS;

    $mock_pid = open($mock_fh, '-|', 'python3', "$root/t/dqe_mock.py",
                     '--listen', '127.0.0.1:0', '--control', '127.0.0.1:0',
                     '--tls-cert', $cert, '--tls-key', $key, '--quiet',
                     @faults)
        or die "cannot start t/dqe_mock.py: $!";

    $owner = $$;

    my $line;
    eval {
        local $SIG{ALRM} = sub { die "timeout\n" };
        alarm 15;
        $line = <$mock_fh>;
        alarm 0;
    };

    if (!defined $line
        || $line !~ /^READY port=(\d+) control=(\d+) faults=([\d,]+)/)
    {
        die "the mock DQE server did not start";
    }

    $ENV{TEST_NGINX_DQE_PORT} = $1;
    $ENV{TEST_NGINX_DQE_CTL_PORT} = $2;
    $ENV{TEST_NGINX_DQE_CA} = $cert;

    my @ports = split /,/, $3;

    for my $f (@FAULTS) {
        $ENV{"TEST_NGINX_DQE_FAULT_$f->[0]"} = shift @ports;
    }
}

sub import {
    my $root = getcwd();

    $ENV{TEST_NGINX_DQE_MODULE} = $ENV{DQE_MODULE}
        || "$root/build/objs/ngx_http_dqe_oauth_module.so";
    $ENV{TEST_NGINX_FAN_PORT} ||= free_port();

    start_mock() unless $mock_pid;

    # scenario scripts use the mock without Test::Nginx
    if (defined &Test::Nginx::Socket::add_block_preprocessor) {
        Test::Nginx::Socket::add_block_preprocessor(\&defaults);
    }
}

sub defaults {
    my $block = shift;

    my $main = $block->main_config // '';
    if ($main !~ /load_module/) {
        $block->set_value('main_config',
                          "load_module $ENV{TEST_NGINX_DQE_MODULE};\n$main");
    }

    my $http = $block->http_config // '';
    if ($http !~ /proxy_ssl_/) {
        $block->set_value('http_config',
                          "    proxy_ssl_verify on;\n"
                          . "    proxy_ssl_trusted_certificate "
                          . "$ENV{TEST_NGINX_DQE_CA};\n$http");
    }

    my $config = $block->config // '';
    $block->set_value('config', $config
        . "\n    location /__mock/ {\n"
        . "        dqe_oauth off;\n"
        . "        proxy_pass http://127.0.0.1:$ENV{TEST_NGINX_DQE_CTL_PORT};\n"
        . "    }\n");
}

# "GET /__mock/fault?..." for a request list: fault(body => '{"x":1}', ...)

sub fault {
    my %args = @_;
    my @q;

    for my $k (sort keys %args) {
        my $v = $args{$k};
        $v =~ s/([^A-Za-z0-9_.~-])/sprintf("%%%02X", ord($1))/ge;
        push @q, "$k=$v";
    }

    return "GET /__mock/fault?" . join('&', @q);
}

END {
    if ($mock_pid && $owner && $$ == $owner) {
        kill 'TERM', $mock_pid;
        close $mock_fh;
    }
}

1;
