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
#   TEST_NGINX_DQE_MODULE    the module .so (DQE_MODULE, or build/objs/...);
#                            DQE_MODULE=static: built into the nginx binary
#   TEST_NGINX_DQE_LOAD      "load_module <the .so>;", or "" when static
#   TEST_NGINX_FAN_PORT      a free port, for a second server{} in a block
#   TEST_NGINX_DQE_FAULT_*   mock listeners whose token requests all fail:
#                            CLOSE, RESET, GARBAGE, TRUNCATE, SLOW (3 s),
#                            BIG (a 20k reply), LONG_TOKEN (4097 bytes),
#                            RETRY_503 (Retry-After: 7), RETRY_HOUR (3600),
#                            RETRY_DATE (429, a date 2 min after the start),
#                            RATE_429 (no Retry-After)
#
# and adds to every block, unless it says otherwise:
#   main_config: load_module $TEST_NGINX_DQE_MODULE;  (unless static or
#                present; before any other load_module, as Debian's
#                modules-enabled would load it before, e.g., the Lua one)
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
use HTTP::Date ();
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
    # a token too long to sit in its zone entry (1002 bytes), after 1 s
    [ LONG_SLOW => 'delay=1&body={"access_token":"TK' . ('c' x 1000)
                   . '","token_type":"Bearer","expires_in":"300"}' ],
    [ RETRY_503 => 'status=503&header=Retry-After:7' ],
    [ RETRY_HOUR => 'status=503&header=Retry-After:3600' ],
    [ RETRY_DATE => 'status=429&header=Retry-After:'
                    . uri_escape(HTTP::Date::time2str(time + 120)) ],
    [ RATE_429 => 'status=429' ],
);

sub uri_escape {
    my ($v) = @_;
    $v =~ s/([^A-Za-z0-9_.~-])/sprintf("%%%02X", ord($1))/ge;
    return $v;
}

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
    $ENV{TEST_NGINX_DQE_LOAD} = $ENV{TEST_NGINX_DQE_MODULE} eq 'static'
        ? '' : "load_module $ENV{TEST_NGINX_DQE_MODULE};";
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
    if ($main !~ /ngx_http_dqe_oauth_module|TEST_NGINX_DQE_LOAD/) {
        $block->set_value('main_config', "$ENV{TEST_NGINX_DQE_LOAD}\n$main");
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


# --- text for blocks: "--- config eval" / "--- http_config eval" ----------

# the standard location of ours: the mock as DQE, licence 123456, its
# secret, scope client_address; any of them, and extra directives, can be
# given: location('/api/', scope => 'client_email', extra => '...')

sub location {
    my ($path, %o) = @_;

    my $port = $o{port} // $ENV{TEST_NGINX_DQE_PORT};

    return "    location $path {\n"
        . "        dqe_oauth_server  127.0.0.1:$port;\n"
        . "        dqe_oauth_licence " . ($o{licence} // '123456') . ";\n"
        . "        dqe_oauth_secret  " . ($o{secret} // 's3cr3t-pass') . ";\n"
        . "        dqe_oauth_scope   " . ($o{scope} // 'client_address') . ";\n"
        . ($o{extra} ? "        $o{extra}\n" : '')
        . "        proxy_pass https://127.0.0.1:$ENV{TEST_NGINX_DQE_PORT};\n"
        . "    }\n";
}

# the same, its upstream an echo location of the server that listens on
# port (location /echo { return 200 $http_authorization; }), telling
# $dqe_oauth_status in X-DQE-Status: for Test::DQE::Nginx->outcome

sub echo_location {
    my ($path, $port, %o) = @_;

    my $loc = location($path, %o,
                       extra => 'add_header X-DQE-Status $dqe_oauth_status '
                                . 'always; ' . ($o{extra} // ''));
    $loc =~ s{proxy_pass [^;]+;}{proxy_pass http://127.0.0.1:$port/echo;};

    return $loc;
}

# a burst of N concurrent requests to PATH (default /api/): GET /burst
# includes them all at once (SSI), each over a connection of its own to
# the server{} of fan_server(), which listens with "reuseport" so that
# the kernel spreads them over the workers

sub burst {
    my ($n, $path) = @_;

    $path //= '/api/';

    # nginx reads at most 4k per configuration token: pages of 50
    # includes, included by /burst

    my ($conf, $top) = ('', '');

    for (my $first = 1, my $page = 0; $first <= $n; $first += 50, $page++) {
        my $last = $first + 49 > $n ? $n : $first + 49;

        $conf .= "    location = /burst$page {\n"
            . "        default_type text/html;\n"
            . "        ssi on;\n"
            . "        return 200 '"
            . join('', map { "<!--# include virtual=\"/fan/$_\" -->" }
                           $first .. $last)
            . "';\n"
            . "    }\n";

        $top .= "<!--# include virtual=\"/burst$page\" -->";
    }

    return $conf
        . "    location = /burst {\n"
        . "        default_type text/html;\n"
        . "        ssi on;\n"
        . "        return 200 '$top';\n"
        . "    }\n"
        . "    location /fan/ {\n"
        . "        proxy_pass http://127.0.0.1:$ENV{TEST_NGINX_FAN_PORT}$path;\n"
        . "    }\n";
}

# the second server{} that bursts reach; its API location tags requests
# with the worker's pid (X-Worker: the mock counts "workers_seen")

sub fan_server {
    my (%o) = @_;

    my $loc = location('/api/', %o,
                       extra => 'proxy_set_header X-Worker $pid; '
                                . ($o{extra} // ''));

    return "    server {\n"
        . "        listen 127.0.0.1:$ENV{TEST_NGINX_FAN_PORT} reuseport;\n"
        . join('', map { "    $_\n" } split /\n/, $loc)
        . "    }\n";
}

# the mock's stats, order-independent: stats(token_requests => {POST => 1},
# tokens_issued => 1) matches a stats body with those values, wherever
# they are; the other keys are not looked at

sub stats {
    my (%want) = @_;
    my $re = '';

    for my $k (sort keys %want) {
        my $v = $want{$k};

        if (ref $v eq 'HASH') {
            for my $kk (sort keys %$v) {
                $re .= "(?=.*\"\Q$k\E\":\\{[^}]*\"\Q$kk\E\":\Q$v->{$kk}\E[,}])";
            }

        } else {
            $re .= "(?=.*\"\Q$k\E\":\Q$v\E[,}])";
        }
    }

    return qr/\A$re/s;
}

# what no log may hold, in any block or scenario: an alert or worse, a
# socket left open at reload or exit, the test secret, a token outside
# nginx core's debug dumps of request headers: those of the upstream
# request (proxy, grpc, fastcgi, uwsgi, scgi), and, where a test's
# upstream is nginx itself, of what it receives and echoes

our @NO_LEAK = (
    qr/\[(?:alert|crit|emerg)\]/,
    qr/open socket #\d+ left/,
    qr/s3cr3t|other-pass|bulk-pass/,
    qr/^(?!(?i:authorization): Bearer TK|.*(?:http (?:proxy )?header|http2 header|grpc header|(?:fastcgi|uwsgi|scgi) param|http script var): "(?:(?i:authorization): |HTTP_AUTHORIZATION: )?Bearer TK).*TK[0-9a-f]{40}/,
);

sub no_leak { return @NO_LEAK }

# in a scenario script: one test per pattern of @NO_LEAK (and of @more),
# over the lines of $log; a failure lists the first lines that match

sub log_ok {
    my ($log, @more) = @_;

    my @lines = split /\n/, $log;

    for my $re (@NO_LEAK, @more) {
        my @bad = grep { /$re/ } @lines;
        Test::More::is_deeply([@bad[0 .. ($#bad < 4 ? $#bad : 4)]], [],
                              "no log line matches $re");
    }
}

# "GET /__mock/fault?..." for a request list: fault(body => '{"x":1}', ...)

sub fault {
    my %args = @_;
    my @q;

    for my $k (sort keys %args) {
        push @q, "$k=" . uri_escape($args{$k});
    }

    return "GET /__mock/fault?" . join('&', @q);
}


# --- scenario scripts (plain Test::More): an nginx of their own -----------
#
#   my $ngx = Test::DQE::Nginx->new('name');   # t/servroot-name, free ports
#   $ngx->start(http => "server { listen 127.0.0.1:${\ $ngx->port}; ... }",
#               workers => 2, main => '...');
#   my @r = $ngx->keepalive('/a', '/b');       # [status, body] each, one
#                                              # HTTP/1.1 connection
#   my ($st, $out) = $ngx->h2('/a', '/b');     # statuses, one HTTP/2 one
#   $ngx->outcome('/a');                       # "200 MISS t1", with
#                                              # Test::DQE::echo_location;
#   my $h = $ngx->outcome_later('/a'); $h->(); # the same, in a child
#   $ngx->reload(http => ...);  $ngx->stop;  $ngx->log;
#
# start and reload also take shutdown_timeout (worker_shutdown_timeout,
# default 30s), master and daemon ("on" by default); the options given
# once are kept for the next calls.  spawn(@wrapper, %options): nginx in
# the foreground under a wrapper (valgrind...), its pid returned.
#
# master process on, daemon, the module loaded (unless static), the mock's
# certificate trusted at http{} level, error_log at debug.

package Test::DQE::Nginx;

use File::Path qw(make_path remove_tree);
use IO::Socket::INET;
use Time::HiRes qw(sleep time);

sub new {
    my ($class, $name) = @_;

    my $self = bless {
        root => Cwd::getcwd() . "/t/servroot-$name",
        port => Test::DQE::free_port(),
        binary => $ENV{TEST_NGINX_BINARY} || '/usr/sbin/nginx',
    }, $class;

    $self->{port2} = Test::DQE::free_port() while !$self->{port2}
                     || $self->{port2} == $self->{port};

    remove_tree($self->{root});
    make_path("$self->{root}/conf", "$self->{root}/logs");

    return $self;
}

sub port { $_[0]{port} }
sub port2 { $_[0]{port2} }
sub root { $_[0]{root} }

sub write_conf {
    my ($self, %o) = @_;

    $self->{conf} = { %{ $self->{conf} || {} }, %o };
    my $c = $self->{conf};

    open my $fh, '>', "$self->{root}/conf/nginx.conf" or die $!;
    print $fh "$ENV{TEST_NGINX_DQE_LOAD}\n" . ($c->{main} // '') . <<"CONF";

master_process @{[ $c->{master} // 'on' ]};
worker_processes @{[ $c->{workers} // 2 ]};
daemon @{[ $c->{daemon} // 'on' ]};
pid logs/nginx.pid;
error_log logs/error.log debug;
worker_shutdown_timeout @{[ $c->{shutdown_timeout} // '30s' ]};

events {
    worker_connections @{[ $c->{connections} // 1024 ]};
}

http {
    access_log off;
    proxy_ssl_verify on;
    proxy_ssl_trusted_certificate $ENV{TEST_NGINX_DQE_CA};

$c->{http}
}
CONF
    close $fh;
}

# runs the binary with -p and -c; true on success

sub run {
    my ($self, @args) = @_;

    my $pid = fork();
    die "fork: $!" unless defined $pid;

    if ($pid == 0) {
        open STDERR, '>>', "$self->{root}/logs/stderr.log";
        # -e: what nginx says before its configuration is read goes to
        # stderr, not to a build's default error log (logs/error.log
        # under the prefix: the file the scenarios read)
        { exec $self->{binary}, '-p', "$self->{root}/", '-e', 'stderr',
               '-c', "$self->{root}/conf/nginx.conf", @args; }
        POSIX::_exit(127);
    }

    waitpid($pid, 0);

    return $? == 0;
}

# "nginx -t" of the configuration written, within $timeout seconds (a
# hang is killed): (passed, what it wrote to stderr, hung)

sub test_conf {
    my ($self, $timeout) = @_;

    my $log = "$self->{root}/logs/stderr.log";
    truncate $log, 0;

    my $pid = fork();
    die "fork: $!" unless defined $pid;

    if ($pid == 0) {
        open STDERR, '>>', $log;
        { exec $self->{binary}, '-p', "$self->{root}/", '-e', 'stderr',
               '-c', "$self->{root}/conf/nginx.conf", '-t'; }
        POSIX::_exit(127);
    }

    my $end = time + ($timeout || 10);
    my $done;

    while (time < $end) {
        $done = waitpid($pid, POSIX::WNOHANG());
        last if $done;
        sleep 0.05;
    }

    my $hung = !$done;
    my $ok = $done && $? == 0;

    if ($hung) {
        kill 'KILL', $pid;
        waitpid($pid, 0);
    }

    open my $fh, '<', $log;
    local $/;

    return ($ok, <$fh> // '', $hung);
}

sub master {
    my ($self) = @_;

    open my $fh, '<', "$self->{root}/logs/nginx.pid" or return undef;
    my $pid = <$fh>;
    chomp $pid if defined $pid;

    return $pid;
}

sub workers {
    my ($self) = @_;
    my $master = $self->master or return ();

    return grep { /^\d+$/ } split ' ', `pgrep -P $master`;
}

sub start {
    my ($self, %o) = @_;

    $self->write_conf(%o);
    $self->run or return 0;

    for (1 .. 100) {
        my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$self->{port}",
                                      Timeout => 1);
        return 1 if $s;
        sleep 0.05;
    }

    return 0;
}

sub spawn {
    my ($self, $wrapper, %o) = @_;

    $self->write_conf(master => 'off', daemon => 'off', %o);

    my $pid = fork();
    die "fork: $!" unless defined $pid;

    if ($pid == 0) {
        open STDERR, '>>', "$self->{root}/logs/stderr.log";
        { exec @$wrapper, $self->{binary}, '-p', "$self->{root}/", '-c',
               "$self->{root}/conf/nginx.conf"; }
        POSIX::_exit(127);
    }

    for (1 .. 600) {
        my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$self->{port}",
                                      Timeout => 1);
        return $pid if $s;
        sleep 0.1;
    }

    return undef;
}

# a new configuration (or the same), and the old workers gone

sub reload {
    my ($self, %o) = @_;

    my %old = map { $_ => 1 } $self->workers;

    $self->write_conf(%o);
    $self->run('-s', 'reload') or return 0;

    for (1 .. 400) {
        my @now = $self->workers;
        return 1 if @now && !grep { $old{$_} } @now;
        sleep 0.05;
    }

    return 0;
}

# "nginx -s quit", and the master gone: true if it exited by itself

sub stop {
    my ($self) = @_;

    my $master = $self->master or return 1;

    $self->run('-s', 'quit');

    for (1 .. 600) {
        return 1 unless kill 0, $master;
        sleep 0.05;
    }

    kill 'KILL', $master, $self->workers;

    return 0;
}

sub DESTROY {
    my ($self) = @_;
    my $master = $self->master;

    kill 'KILL', $master, $self->workers if $master && kill 0, $master;
}

sub log {
    my ($self) = @_;

    open my $fh, '<', "$self->{root}/logs/error.log" or return '';
    local $/;

    return <$fh>;
}

# one HTTP/1.0 GET on a connection of its own: (status, body, headers),
# status 0 when nothing or no HTTP came back within the timeout

sub get {
    my ($self, $path, $timeout, $port) = @_;

    return request($self, "GET $path HTTP/1.0\r\nHost: localhost\r\n\r\n",
                          $timeout, $port);
}

# the same for a request given whole (its headers, a body): HTTP/1.0, or
# HTTP/1.1 with "Connection: close"

sub request {
    my ($self, $raw, $timeout, $port) = @_;

    my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:"
                                              . ($port // $self->{port}),
                                  Timeout => $timeout || 15)
        or return (0, "connect: $!");

    print $s $raw;

    my $resp = '';
    eval {
        local $SIG{ALRM} = sub { die "timeout\n" };
        Time::HiRes::alarm($timeout || 15);
        while (my $n = sysread($s, my $buf, 65536)) {
            $resp .= $buf;
        }
        Time::HiRes::alarm(0);
    };
    close $s;

    my ($status) = $resp =~ m{^HTTP/1\.\d (\d+)};
    my ($head, $body) = $resp =~ /\A(.*?)\r\n\r\n(.*)\z/s;

    return ($status || 0, $body // '', $head // '');
}

# what a GET to an echo_location got: "200 HIT t3", the status,
# $dqe_oauth_status ("-": none) and the token its upstream received
# ("-": none), named t1, t2... in the order this nginx first showed
# them, so that no token is printed

sub outcome {
    my ($self, $path) = @_;

    return $self->named($self->unnamed($path));
}

# the same GET read whole: [status, $dqe_oauth_status from X-DQE-Status
# ("-": none), the token the echo upstream got, named as above ("-":
# none), the worker's pid from X-Pid (0: none), the token's length]

sub seen {
    my ($self, $path) = @_;

    my ($status, $body, $head) = $self->get($path);
    my ($how) = $head =~ /^X-DQE-Status: *(\S+)/mi;
    my ($pid) = $head =~ /^X-Pid: *(\d+)/mi;
    my ($token) = $status == 200 ? $body =~ /\ABearer (\S+)\z/ : ();
    my $name = (split / /, $self->named("$status - " . ($token // '-')))[2];

    return [$status, $how // '-', $name, $pid // 0, length($token // '')];
}

# the same GET in a child process, while the script goes on: a handle,
# called to wait for the child and get the outcome

sub outcome_later {
    my ($self, $path) = @_;

    pipe(my $rd, my $wr) or die "pipe: $!";

    my $pid = fork();
    die "fork: $!" unless defined $pid;

    if ($pid == 0) {
        close $rd;
        syswrite $wr, $self->unnamed($path) . "\n";
        POSIX::_exit(0);
    }

    close $wr;

    return sub {
        waitpid($pid, 0);
        my $line = <$rd> // "0 - -\n";
        close $rd;
        chomp $line;
        return $self->named($line);
    };
}

sub unnamed {
    my ($self, $path) = @_;

    my ($status, $body, $head) = $self->get($path);
    my ($how) = $head =~ /^X-DQE-Status: *(\S+)/mi;
    my ($token) = $status == 200 ? $body =~ /\ABearer (\S+)\z/ : ();

    return join ' ', $status, $how // '-', $token // '-';
}

sub named {
    my ($self, $line) = @_;

    my ($status, $how, $token) = split / /, $line;
    my $names = $self->{names} ||= {};

    if ($token ne '-') {
        $names->{$token} = 't' . (1 + keys %$names)
            unless exists $names->{$token};
        $token = $names->{$token};
    }

    return join ' ', $status, $how, $token;
}

# the same GET in a child process, while the script goes on: a handle,
# called to wait for the child and get the status

sub get_later {
    my ($self, $path, $timeout) = @_;

    pipe(my $rd, my $wr) or die "pipe: $!";

    my $pid = fork();
    die "fork: $!" unless defined $pid;

    if ($pid == 0) {
        close $rd;
        my ($status) = $self->get($path, $timeout);
        syswrite $wr, "$status\n";
        POSIX::_exit(0);
    }

    close $wr;

    return sub {
        waitpid($pid, 0);
        my $status = <$rd>;
        close $rd;
        chomp $status if defined $status;
        return $status // 0;
    };
}

# requests one after the other on one HTTP/1.1 keep-alive connection:
# a list of [status, body, headers]; [0, why] for a request that got no
# complete answer within the timeout (a hung connection), and none after

sub keepalive {
    my ($self, @paths) = @_;

    my $timeout = 10;
    my @out;

    my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$self->{port}",
                                  Timeout => $timeout)
        or return ([0, "connect: $!"]);

    my $buf = '';

    for my $path (@paths) {
        print $s "GET $path HTTP/1.1\r\nHost: localhost\r\n\r\n";

        my ($status, $body, $headers) = (0, 'no answer', '');
        my $end = time + $timeout;

        while (time < $end) {
            if ($buf =~ m{\AHTTP/1\.1 (\d+)[^\r]*\r\n(.*?)\r\n\r\n}s) {
                my ($st, $hdr) = ($1, $2);
                my $hlen = $+[0];

                if ($hdr =~ /^content-length:\s*(\d+)/mi) {
                    if (length($buf) >= $hlen + $1) {
                        ($status, $body, $headers)
                            = ($st, substr($buf, $hlen, $1), $hdr);
                        $buf = substr($buf, $hlen + $1);
                        last;
                    }

                } elsif ($hdr =~ /^transfer-encoding:\s*chunked/mi) {
                    my $rest = substr($buf, $hlen);
                    my $b = '';
                    my $done;
                    while ($rest =~ s/\A([0-9a-f]+)\r\n//i) {
                        my $n = hex $1;
                        if ($n == 0) {
                            if ($rest =~ s/\A\r\n//) { $done = 1 }
                            last;
                        }
                        last if length($rest) < $n + 2;
                        $b .= substr($rest, 0, $n);
                        $rest = substr($rest, $n + 2);
                    }
                    if ($done) {
                        ($status, $body, $headers, $buf)
                            = ($st, $b, $hdr, $rest);
                        last;
                    }
                }
            }

            my $rin = '';
            vec($rin, fileno($s), 1) = 1;
            last unless select(my $rout = $rin, undef, undef, 0.1) >= 0;
            next unless vec($rout, fileno($s), 1);

            my $n = sysread($s, my $chunk, 65536);
            if (!$n) {
                $body = 'connection closed';
                last;
            }
            $buf .= $chunk;
        }

        push @out, [$status, $body, $headers];
        last unless $status;
    }

    close $s;

    return @out;
}

# requests at once over one HTTP/2 connection (nghttp, prior knowledge:
# the server listens with "http2" on port2): the list of statuses, in the
# order of the paths (0 for a stream that got none), and all nghttp said

sub h2 {
    my ($self, @paths) = @_;

    my @args = ('nghttp', '-v', '-t', '10',
                map { "http://127.0.0.1:$self->{port2}$_" } @paths);

    open my $fh, '-|', @args or return ();
    local $/;
    my $out = <$fh> // '';
    close $fh;

    my (@ids, %status);

    while ($out =~ /send HEADERS frame <[^>]*stream_id=(\d+)>/g) {
        push @ids, $1;
    }

    while ($out =~ /recv \(stream_id=(\d+)\) :status: (\d+)/g) {
        $status{$1} = $2;
    }

    return ([map { $status{$_} // 0 } @ids], $out);
}

package Test::DQE;

# whether the nginx under test has Lua: 'static' when it is compiled in
# (OpenResty, --add-module), 1 when Debian's Lua module loads into it (it
# is built for Debian's nginx 1.22: other versions refuse it), else 0

sub lua_loads {
    my $binary = $ENV{TEST_NGINX_BINARY} || '/usr/sbin/nginx';
    my $dir = "/tmp/dqe-lua-check.$$";

    mkdir $dir;

    # Lua compiled into the binary (OpenResty, --add-module): no load_module
    if (open my $fh, '>', "$dir/nginx.conf") {
        print $fh "error_log /dev/null; pid $dir/nginx.pid;\n"
            . "events { }\nhttp { lua_package_path ';;'; }\n";
        close $fh;
        my $static = system("$binary -p $dir/ -c $dir/nginx.conf -t -q "
                            . ">/dev/null 2>&1") == 0;
        unlink "$dir/nginx.conf";
        if ($static) { rmdir $dir; return 'static'; }
    }

    unless (-f '/usr/lib/nginx/modules/ngx_http_lua_module.so') {
        rmdir $dir;
        return 0;
    }

    open my $fh, '>', "$dir/nginx.conf" or return 0;
    print $fh "load_module /usr/lib/nginx/modules/ndk_http_module.so;\n"
        . "load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;\n"
        . "error_log /dev/null; pid $dir/nginx.pid;\n"
        . "events { }\n";
    close $fh;

    my $ok = system("$binary -p $dir/ -c $dir/nginx.conf -t -q "
                    . ">/dev/null 2>&1") == 0;

    unlink "$dir/nginx.conf";
    rmdir $dir;

    return $ok;
}

# GET on the mock's control port: the body

sub mock {
    my ($path) = @_;

    return (Test::DQE::Nginx::get(
                { port => $ENV{TEST_NGINX_DQE_CTL_PORT} }, $path))[1];
}

END {
    if ($mock_pid && $owner && $$ == $owner) {
        kill 'TERM', $mock_pid;
        close $mock_fh;
    }
}

1;
