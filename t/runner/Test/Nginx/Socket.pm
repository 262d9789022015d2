package Test::Nginx::Socket;

# A small, self-contained, compatible subset of OpenResty's
# Test::Nginx::Socket (https://github.com/openresty/test-nginx).
#
# Written from scratch for this project; see t/runner/README.md for the
# supported functions, sections and environment variables.  The .t files
# of the project must run unchanged under this subset and under the real
# module, so every supported feature follows the real module's semantics
# (test names, number of emitted tests, matching rules), and the sections
# of the real module that this subset does not implement make the block
# fail loudly instead of being silently ignored.

use strict;
use warnings;

# Test::Base does the block parsing, the filters (eval, chomp, ...), the
# ONLY/SKIP/LAST handling and re-exports plan/blocks/is/ok/... -- exactly as
# it does for the real Test::Nginx::Socket, which is a Test::Base subclass.
# Its import() is inherited: `use Test::Nginx::Socket 'no_plan';` and
# `use Test::Nginx::Socket tests => N;` are handled there.
use Test::Base ();
our @ISA = ('Test::Base');

use Test::More ();
use Test::LongString ();
use HTTP::Response ();
use IO::Socket::INET ();
use IO::Select ();
use POSIX ();
use Time::HiRes ();
use File::Spec ();
use File::Path ();
use File::Temp ();
use List::Util ();
use Scalar::Util ();
use Carp ();

our $VERSION = '0.33';

# true in this bundled subset only (never set by the real module)
our $IsBundledSubset = 1;

our @EXPORT = qw(
    run_tests repeat_each workers master_on master_off
    master_process_enabled log_level no_shuffle no_long_string
    worker_connections add_block_preprocessor no_root_location
    env_to_nginx check_accum_error_log timeout server_port server_addr
    server_root html_dir bail_out
);

#---------------------------------------------------------------------------
# settings (same defaults and environment variables as the real module)
#---------------------------------------------------------------------------

our $NginxBinary          = $ENV{TEST_NGINX_BINARY} || 'nginx';
our $ServerAddr           = '127.0.0.1';
our $ServerName           = 'localhost';
our $ServerPort           = $ENV{TEST_NGINX_SERVER_PORT} || $ENV{TEST_NGINX_PORT}
                            || 1984;
our $RepeatEach           = 1;
our $Workers              = 1;
our $WorkerConnections    = 64;
our $LogLevel             = $ENV{TEST_NGINX_LOG_LEVEL} || 'debug';
our $MasterProcessEnabled = $ENV{TEST_NGINX_MASTER_PROCESS} || 'off';
our $DaemonEnabled        = 'on';
our $NoShuffle            = $ENV{TEST_NGINX_NO_SHUFFLE} || 0;
our $NoRootLocation       = 0;
our $NoLongString;
our $CheckAccumErrLog     = $ENV{TEST_NGINX_CHECK_ACCUM_ERR_LOG};
our $Timeout              = $ENV{TEST_NGINX_TIMEOUT} || 3;
our $TestNginxSleep       = $ENV{TEST_NGINX_SLEEP} || 0.015;
our $LoadModules          = $ENV{TEST_NGINX_LOAD_MODULES};
our $Verbose              = $ENV{TEST_NGINX_VERBOSE};

our $ServRoot   = File::Spec->rel2abs($ENV{TEST_NGINX_SERVROOT} || 't/servroot');
$ServRoot =~ s{/+$}{} unless $ServRoot eq '/';
$ENV{TEST_NGINX_SERVER_ROOT} = $ServRoot;

our $LogDir     = File::Spec->catfile($ServRoot, 'logs');
our $ErrLogFile = File::Spec->catfile($LogDir, 'error.log');
our $AccLogFile = File::Spec->catfile($LogDir, 'access.log');
our $HtmlDir    = File::Spec->catfile($ServRoot, 'html');
our $ConfDir    = File::Spec->catfile($ServRoot, 'conf');
our $ConfFile   = File::Spec->catfile($ConfDir, 'nginx.conf');
our $PidFile    = File::Spec->catfile($LogDir, 'nginx.pid');
our $CacheDir   = File::Spec->catfile($ServRoot, 'cache');

# a few of the real module's package variables, for code that peeks at them
{
    no warnings 'once';
    *Test::Nginx::Util::ServerPort = \$ServerPort;
    *Test::Nginx::Util::ServRoot   = \$ServRoot;
    *Test::Nginx::Util::PidFile    = \$PidFile;
    *Test::Nginx::Util::RepeatEach = \$RepeatEach;
}

our @EnvToNginx;
our @BlockPreprocessors;
our $PrevConfig;
our $ErrLogFilePos = 0;
our $RandPorts = {};
our $NginxVersion;          # canonical, e.g. 1.022001
our $NginxV;                # output of nginx -V

my $MainPid = $$;
my $WarnedEnv;

# test-mode environment variables of the real module this subset does not
# implement: running with them set would silently test something else.
my @UnsupportedEnv = qw(
    TEST_NGINX_USE_HTTP2 TEST_NGINX_USE_HTTP3 TEST_NGINX_USE_HUP
    TEST_NGINX_USE_VALGRIND TEST_NGINX_USE_STAP TEST_NGINX_USE_RR
    TEST_NGINX_CHECK_LEAK TEST_NGINX_BENCHMARK TEST_NGINX_RANDOMIZE
    TEST_NGINX_NO_NGINX_MANAGER TEST_NGINX_CLIENT_PORT
    TEST_NGINX_POSTPONE_OUTPUT TEST_NGINX_EVENT_TYPE TEST_NGINX_REUSE_PORT
    TEST_NGINX_IGNORE_MISSING_DIRECTIVES TEST_NGINX_WORKER_USER
    TEST_NGINX_LD_PRELOAD TEST_NGINX_ERROR_LOG TEST_NGINX_INIT_BY_LUA
);

# sections the real module understands but this subset does not implement
my %UnsupportedSection = map { $_ => 1 } qw(
    abort access_log no_access_log charset curl curl_error curl_options
    curl_protocol error_log_file http09 http2 http3 ignore_response init
    pipelined_requests post_setup_server_root quic_max_idle_timeout
    raw_request raw_request_middle_delay reload_fails request_eval
    response_body_eval response_body_filters response_body_json_sort
    server_addr_for_client server_name shutdown shutdown_error_log
    no_shutdown_error_log skip_eval skip_nginx skip_nginx2 skip_openssl
    skip_slave stap stap_out stap_out_like stap_out_unlike
    tcp_listen tcp_no_close tcp_query tcp_query_auto_timeout tcp_query_len
    tcp_reply tcp_reply_delay tcp_shutdown tcp_shutdown_delay
    todo todo_nginx udp_listen udp_query udp_reply udp_reply_delay
    user_files write_resp_body_file
);

#---------------------------------------------------------------------------
# exported configuration functions
#---------------------------------------------------------------------------

sub repeat_each (@) {
    $RepeatEach = shift if @_;
    return $RepeatEach;
}

sub workers (@) {
    if (@_) { $Workers = shift; return }
    return $Workers;
}

sub worker_connections (@) {
    if (@_) { $WorkerConnections = shift; return }
    return $WorkerConnections;
}

sub log_level (@) {
    if (@_) { $LogLevel = shift; return }
    return $LogLevel;
}

sub master_on ()  { $MasterProcessEnabled = 'on' }
sub master_off () { $MasterProcessEnabled = 'off' }

sub master_process_enabled (@) {
    if (@_) { $MasterProcessEnabled = shift() ? 'on' : 'off'; return }
    return $MasterProcessEnabled;
}

sub no_shuffle ()       { $NoShuffle = 1 }
sub no_long_string ()   { $NoLongString = 1 }
sub no_root_location () { $NoRootLocation = 1 }
sub check_accum_error_log () { $CheckAccumErrLog = 1 }

sub timeout (@) {
    if (@_) { $Timeout = shift; return }
    return $Timeout;
}

sub server_port (@) {
    if (@_) { $ServerPort = shift; return }
    return $ServerPort;
}

sub server_addr (@) {
    if (@_) { $ServerAddr = shift; return }
    return $ServerAddr;
}

sub server_root () { return $ServRoot }
sub html_dir ()    { return $HtmlDir }

sub add_block_preprocessor (&) {
    unshift @BlockPreprocessors, shift;
}

sub env_to_nginx (@) {
    Carp::croak("env_to_nginx: no arguments specified") if !@_;
    for my $v (@_) {
        if ($v !~ /^[A-Za-z_]/ || $v =~ /\n/) {
            Carp::croak("env_to_nginx: bad argument value: $v\n");
        }
        push @EnvToNginx, $v;
    }
}

sub bail_out (@) {
    stop_nginx('bail_out');
    Test::More::BAIL_OUT(join '', @_);
}

#---------------------------------------------------------------------------
# small helpers
#---------------------------------------------------------------------------

# a section's value in scalar context (Test::Base block accessors return an
# empty list in list context for absent sections)
sub _sec {
    my ($block, $section) = @_;
    return scalar $block->$section;
}

sub _builder { Test::More->builder }

sub _no_ending { _builder()->no_ending(1) }

sub _vwarn { warn @_ if $Verbose }

sub _parse_time {
    my $tm = shift;
    return undef if !defined $tm;
    if ($tm =~ s/([^_a-zA-Z])ms$/$1/) {
        $tm = $tm / 1000;
    } else {
        $tm =~ s/([^_a-zA-Z])s$/$1/;
    }
    return $tm;
}

sub _trim_summary {
    my $s = shift;
    return undef if !defined $s;
    $s =~ s/^\s+|\s+$//g;
    $s =~ s/\n/ /g;
    $s =~ s/\s{2,}/ /g;
    return $s;
}

sub _fmt_str {
    my $s = shift;
    chomp $s;
    $s =~ s/"/\\"/g;
    $s =~ s/\r/\\r/g;
    $s =~ s/\n/\\n/g;
    return $s;
}

# compare strings like the real module: Test::LongString by default,
# Test::Base's is() (diff for multi-line values) after no_long_string().
sub _is_str {
    my ($got, $expected, $desc) = @_;
    local $Test::Builder::Level = $Test::Builder::Level + 1;
    if ($NoLongString) {
        return Test::Base::is($got, $expected, $desc);
    }
    return Test::LongString::is_string($got, $expected, $desc);
}

sub _free_port {
    my $used = shift;
    for (1 .. 50) {
        my $s = IO::Socket::INET->new(LocalAddr => $ServerAddr, LocalPort => 0,
                                      Proto => 'tcp', Listen => 1)
            or next;
        my $port = $s->sockport;
        close $s;
        next if $used->{$port} || $port == $ServerPort;
        return $port;
    }
    return undef;
}

# replace $TEST_NGINX_XXX by the environment's value; bail out on undefined
# ones (like the real module).  $TEST_NGINX_RAND_PORT_N gets a free port,
# the same one for the whole block.
sub _expand_env {
    my ($text, $name) = @_;
    return $text if !defined $text || ref $text;
    $text =~ s{\$(TEST_NGINX_[_A-Z0-9]+)}{
        my $var = $1;
        my $val;
        if ($var =~ /^TEST_NGINX_RAND_PORT_[0-9]+$/) {
            if (!defined $RandPorts->{$var}) {
                my %used = map { $_ => 1 } values %$RandPorts;
                my $p = _free_port(\%used);
                bail_out("$name - Cannot find an available listening port number for $var.\n")
                    if !defined $p;
                $RandPorts->{$var} = $p;
            }
            $val = $RandPorts->{$var};
        } else {
            if (!defined $ENV{$var}) {
                bail_out("$name - No environment $var defined.\n");
            }
            $val = $ENV{$var};
        }
        $val;
    }ge;
    return $text;
}

sub _can_run {
    my $cmd = shift;
    if ($cmd =~ m{/}) {
        return (-f $cmd && -x _) ? $cmd : undef;
    }
    for my $dir (split /:/, ($ENV{PATH} // ''), -1) {
        next if $dir eq '';
        my $abs = File::Spec->catfile($dir, $cmd);
        return $abs if -f $abs && -x _;
    }
    return undef;
}

sub _nginx_info {
    return if defined $NginxV;
    my $bin = _can_run($NginxBinary);
    if (!$bin) {
        bail_out("Cannot find the nginx executable \"$NginxBinary\" "
                 . "(set TEST_NGINX_BINARY or PATH)");
    }
    $NginxV = `'$bin' -V 2>&1`;
    if ($? != 0 || !defined $NginxV) {
        bail_out("Failed to get the version of nginx ($bin): " . ($NginxV // ''));
    }
    if ($NginxV =~ m{(?:nginx|openresty)[^/]*/(\d+)\.(\d+)\.(\d+)}s
        || $NginxV =~ m{\w+/(\d+)\.(\d+)\.(\d+)}s)
    {
        $NginxVersion = sprintf "%d.%03d%03d", $1, $2, $3;
    } else {
        bail_out("Failed to parse the output of \"nginx -V\": $NginxV\n");
    }
}

sub _tail_file {
    my ($file, $n) = @_;
    open my $in, '<', $file or return "(cannot open $file: $!)\n";
    my @lines = <$in>;
    close $in;
    @lines = @lines[-$n .. -1] if @lines > $n;
    return join '', @lines;
}

#---------------------------------------------------------------------------
# process management
#---------------------------------------------------------------------------

# Linux: become a "child subreaper" so the daemonized nginx (whose parent,
# the launcher, exits at once) is re-parented to this process instead of
# PID 1, and can be reaped here (some container/VM inits never reap).
my $Subreaper;
sub _become_subreaper {
    return if defined $Subreaper;
    $Subreaper = 0;
    return if $^O ne 'linux';
    my $nr = eval { package Test::Nginx::Socket::Syscall;
                    require 'sys/syscall.ph'; &SYS_prctl() };
    return if !$nr;
    $Subreaper = 1 if syscall($nr, 36, 1, 0, 0, 0) == 0; # PR_SET_CHILD_SUBREAPER
}

# alive and not a zombie
sub _alive {
    my $pid = shift;
    return 0 if !$pid;
    waitpid($pid, POSIX::WNOHANG()) if $Subreaper;   # reap it if it is ours
    return 0 if !kill(0, $pid);
    if (open my $st, '<', "/proc/$pid/stat") {
        my $line = <$st> // '';
        close $st;
        return 0 if $line =~ /\)\s+[ZX]\s/;
    }
    return 1;
}

sub _children_of {
    my $ppid = shift;
    my @kids;
    opendir my $dh, '/proc' or return ();
    for my $p (grep { /^\d+$/ } readdir $dh) {
        open my $st, '<', "/proc/$p/stat" or next;
        my $line = <$st> // '';
        close $st;
        push @kids, $p if $line =~ /\)\s+\S\s+(\d+)\s/ && $1 == $ppid;
    }
    closedir $dh;
    return @kids;
}

sub _read_pid {
    open my $in, '<', $PidFile or return undef;
    my $pid = do { local $/; <$in> } // '';
    close $in;
    $pid =~ s/\s+//g;
    return $pid =~ /^\d+$/ ? $pid : undef;
}

# is $pid the nginx of this server root (guards against stale pid files
# pointing at an unrelated process)?
sub _is_our_nginx {
    my $pid = shift;
    open my $in, '<', "/proc/$pid/cmdline" or return 1;   # no /proc: trust it
    my $cmd = do { local $/; <$in> } // '';
    close $in;
    $cmd =~ s/\0/ /g;
    return index($cmd, $ServRoot) >= 0 || $cmd =~ /nginx/;
}

sub _wait_gone {
    my ($secs, @pids) = @_;
    my $deadline = Time::HiRes::time() + $secs;
    while (1) {
        @pids = grep { _alive($_) } @pids;
        return 1 if !@pids;
        return 0 if Time::HiRes::time() >= $deadline;
        Time::HiRes::sleep(0.01);
    }
}

# stop the nginx whose pid is in the pid file: master (or single process)
# and its workers.  QUIT (TERM with TEST_NGINX_FAST_SHUTDOWN), then TERM,
# then KILL; every wait is bounded.
sub stop_nginx {
    my $name = shift // '';
    return if $$ != $MainPid;
    return if !-f $PidFile;
    my $pid = _read_pid();
    if (!$pid || !_alive($pid)) {
        unlink $PidFile;
        return;
    }
    if (!_is_our_nginx($pid)) {
        warn "WARNING: $name - pid file $PidFile names process $pid which "
             . "is not an nginx; not killing it\n";
        unlink $PidFile;
        return;
    }
    my @all = ($pid, _children_of($pid));
    _vwarn("stopping nginx @all\n");
    kill($ENV{TEST_NGINX_FAST_SHUTDOWN} ? 'TERM' : 'QUIT', $pid);
    my $grace = $Timeout > 1 ? $Timeout : 1;
    if (!_wait_gone($grace, @all)) {
        warn "$name - timeout when waiting for the nginx process $pid to exit\n";
        kill 'TERM', grep { _alive($_) } @all;
        if (!_wait_gone(1, @all)) {
            warn "$name - WARNING: killing the nginx process $pid with force\n";
            kill 'KILL', grep { _alive($_) } @all;
            _wait_gone(2, @all)
                or warn "$name - WARNING: nginx processes still alive: "
                        . join(' ', grep { _alive($_) } @all) . "\n";
        }
    }
    unlink $PidFile if -f $PidFile;
}

sub _port_listening {
    my $port = shift;
    my $seen_proc = 0;
    for my $f ('/proc/net/tcp', '/proc/net/tcp6') {
        open my $in, '<', $f or next;
        $seen_proc = 1;
        while (<$in>) {
            if (/^\s*\d+:\s+[0-9A-Fa-f]+:([0-9A-Fa-f]+)\s+[0-9A-Fa-f:]+\s+0A\s/) {
                if (hex($1) == $port) { close $in; return 1 }
            }
        }
        close $in;
    }
    return $seen_proc ? 0 : 1;   # cannot tell without /proc: assume yes
}

# run nginx in the foreground of a forked child (it daemonizes by itself);
# stdout to /dev/null, stderr to a temp file.  Returns (status, stderr).
sub _run_nginx_cmd {
    my ($block) = @_;
    my $bin = _can_run($NginxBinary)
        or bail_out("Cannot find the nginx executable \"$NginxBinary\"");
    my @cmd = ($bin);
    push @cmd, '-e', $ErrLogFile if $NginxVersion >= 1.019005;
    push @cmd, '-p', "$ServRoot/", '-c', $ConfFile;
    _vwarn("running: @cmd\n");

    my ($errfh, $errfile) = File::Temp::tempfile('tnginx-stderr-XXXXXX',
                                                 TMPDIR => 1, UNLINK => 1);
    my $suppress = defined _sec($block, q{suppress_stderr});
    my $pid = fork();
    if (!defined $pid) {
        bail_out("fork() failed: $!");
    }
    if ($pid == 0) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>', '/dev/null';
        open STDERR, '>', ($suppress ? '/dev/null' : $errfile);
        { exec { $cmd[0] } @cmd; }
        print STDERR "exec $cmd[0] failed: $!\n";
        POSIX::_exit(127);
    }

    my $deadline = Time::HiRes::time() + 60;
    my $status;
    while (1) {
        my $r = waitpid($pid, POSIX::WNOHANG());
        if ($r == $pid) { $status = $?; last }
        if ($r < 0) { $status = -1; last }
        if (Time::HiRes::time() > $deadline) {
            kill 'KILL', $pid;
            waitpid($pid, 0);
            $status = $?;
            print $errfh "\n(nginx did not exit within 60s and was killed)\n";
            last;
        }
        Time::HiRes::sleep(0.005);
    }
    close $errfh;
    my $stderr = '';
    if (open my $in, '<', $errfile) {
        local $/;
        $stderr = <$in> // '';
        close $in;
    }
    unlink $errfile;
    return ($status, $stderr, \@cmd);
}

sub _start_failure {
    my ($name, $msg, $stderr, $cmd) = @_;
    Test::More::fail("$name - $msg");
    Test::More::diag("command: @$cmd\n") if $cmd;
    Test::More::diag("nginx stderr:\n" . ($stderr eq '' ? "(empty)\n" : $stderr))
        if defined $stderr;
    Test::More::diag("last lines of $ErrLogFile:\n" . _tail_file($ErrLogFile, 20));
}

# start nginx for a normal block; on failure emit one failing test with
# diagnostics and return false.
sub _start_nginx {
    my ($block) = @_;
    my $name = $block->name;

    for my $attempt (1 .. 3) {
        my ($status, $stderr, $cmd) = _run_nginx_cmd($block);

        if ($status != 0) {
            my $errlog = _tail_file($ErrLogFile, 50);
            if ($attempt < 3
                && ($stderr =~ /Address already in use/
                    || $errlog =~ /Address already in use/))
            {
                warn "$name - port $ServerPort is in use, retrying to start nginx\n";
                # the block's checks must not see the failed attempt's lines
                unlink $ErrLogFile, $AccLogFile;
                Time::HiRes::sleep(0.5);
                next;
            }
            _start_failure($name, "nginx failed to start (exit status "
                           . ($status >> 8) . ($status & 127 ? ", signal "
                           . ($status & 127) : '') . ")", $stderr, $cmd);
            return 0;
        }

        print STDERR $stderr if $stderr ne '';

        # wait (bounded) until the daemon wrote its pid and listens
        my $deadline = Time::HiRes::time() + 10;
        while (1) {
            my $pid = _read_pid();
            if ($pid) {
                if (!_alive($pid)) {
                    _start_failure($name, "nginx (pid $pid) exited right after "
                                   . "starting", undef, $cmd);
                    return 0;
                }
                last if _port_listening($ServerPort);
            }
            if (Time::HiRes::time() > $deadline) {
                _start_failure($name, "nginx did not come up (pid file and "
                               . "listening port $ServerPort) within 10s",
                               undef, $cmd);
                return 0;
            }
            Time::HiRes::sleep(0.005);
        }
        Time::HiRes::sleep($TestNginxSleep);
        return 1;
    }
    return 0;
}

#---------------------------------------------------------------------------
# server root and nginx.conf
#---------------------------------------------------------------------------

sub _setup_server_root {
    if (-d $ServRoot) {
        # remove only what we create, and refuse to wipe anything else
        # (protects against a mis-set TEST_NGINX_SERVROOT)
        File::Path::remove_tree($ConfDir, $CacheDir, $HtmlDir, $LogDir,
                                glob("$ServRoot/*_cache"),
                                glob("$ServRoot/*_temp"));
        rmdir $ServRoot
            or bail_out("Can't remove $ServRoot (not empty?): $!");
    }
    if (!-d $ServRoot) {
        File::Path::make_path($ServRoot);
    }
    for my $d ($ServRoot, $LogDir, $HtmlDir, $ConfDir) {
        next if -d $d;
        mkdir $d or bail_out("Failed to do mkdir $d: $!\n");
    }
    my $index = "$HtmlDir/index.html";
    open my $out, '>', $index
        or bail_out("Can't open $index for writing: $!\n");
    print $out '<html><head><title>It works!</title></head>'
               . '<body>It works!</body></html>';
    close $out;
}

sub _write_config_file {
    my ($block, $config) = @_;
    my $name = $block->name;

    my $http_config = _expand_env(_sec($block, q{http_config}), $name) // '';
    my $main_config = _sec($block, q{main_config}) // '';
    if ($LoadModules) {
        my @mods = map { "load_module $_;" } grep { $_ } split /\s+/, $LoadModules;
        $main_config = join ' ', @mods, $main_config if @mods;
    }
    $main_config = _expand_env($main_config, $name);
    my $post_main_config = _expand_env(_sec($block, q{post_main_config}), $name) // '';
    $config //= '';

    my @temp_paths;
    push @temp_paths, "client_body_temp_path $ServRoot/client_body_temp;"
        unless $http_config =~ /\bclient_body_temp_path\b/;
    push @temp_paths, "proxy_temp_path $ServRoot/proxy_temp;"
        unless $http_config =~ /\bproxy_temp_path\b/;
    for my $m (qw(fastcgi scgi uwsgi)) {
        push @temp_paths, "${m}_temp_path $ServRoot/${m}_temp;"
            unless $NginxV =~ /--without-http_${m}_module/;
    }

    my $env = '';
    for my $v (qw(MOCKEAGAIN_VERBOSE MOCKEAGAIN MOCKEAGAIN_WRITE_TIMEOUT_PATTERN
                  LD_PRELOAD LD_LIBRARY_PATH DYLD_INSERT_LIBRARIES
                  DYLD_FORCE_FLAT_NAMESPACE), @EnvToNginx)
    {
        my $e = $v =~ /\s/ ? "'$v'" : $v;
        $env .= "env $e;\n";
    }

    my $root_location = $NoRootLocation ? '' : <<"_EOC_";
        location / {
            root $HtmlDir;
            index index.html index.htm;
        }
_EOC_

    my $user = $> == 0 ? "user root;\n" : '';

    my $conf = <<"_EOC_";
worker_processes  $Workers;
daemon $DaemonEnabled;
master_process $MasterProcessEnabled;
error_log $ErrLogFile $LogLevel;
pid       $PidFile;
$env
$main_config

http {
    access_log $AccLogFile;
    @temp_paths

    default_type text/plain;
    keepalive_timeout  68000ms;

$http_config
    server {
        listen          $ServerPort;
        server_name     '$ServerName';
        client_max_body_size 30M;

        # Begin test case config...
$config
        # End test case config.

$root_location    }
}

$post_main_config

events {
    accept_mutex off;

    worker_connections  $WorkerConnections;
}
env ASAN_OPTIONS;
env MOCKNOEAGAIN_VERBOSE;
env MOCKNOEAGAIN;
$user
_EOC_

    open my $out, '>', $ConfFile
        or bail_out("Can't open $ConfFile for writing: $!\n");
    print $out $conf;
    close $out;
}

#---------------------------------------------------------------------------
# requests
#---------------------------------------------------------------------------

sub _parse_more_headers {
    my $in = shift;
    my ($out, $chunked) = ('', 0);
    for my $h (split /\n+/, $in) {
        next if $h =~ /^\s*#/;
        my ($k, $v) = split /:\s*/, $h, 2;
        $v = '' if !defined $v;
        $chunked = 1 if lc($k) eq 'transfer-encoding' && $v eq 'chunked';
        $out .= "$k: $v\r\n";
    }
    return ($out, $chunked);
}

# build the raw HTTP request from a "METHOD [URI [VERSION]]\nBODY" spec
sub _build_request {
    my ($name, $hdr, $chunked, $spec) = @_;
    $spec = '' if !defined $spec;
    my ($first, $content) = $spec =~ /\A([^\n]*\n?)(.*)\z/s;
    if (!defined $first || $first eq '') {
        bail_out("$name - Request line should be non-empty");
    }
    my ($meth, $url, $ver);
    if ($first =~ /^\s*(\S+) *(?:(\S+) *)?(?:(\S+) *)?\s*$/) {
        ($meth, $url, $ver) = ($1, $2, $3);
    } else {
        bail_out("$name - Request line is not valid. Should be "
                 . "'meth [url [version]]' but got \"$first\".");
    }
    $url = '/' if !defined $url;
    $ver = 'HTTP/1.1' if !defined $ver;
    $content = '' if !defined $content;

    my $len = '';
    if (!$chunked && $content ne '' && $hdr !~ /(?:^|\n)Content-Length:/) {
        $content =~ s/^\s+|\s+$//gs;
        $len = 'Content-Length: ' . length($content) . "\r\n";
    }
    my $headers = '';
    $headers .= "Host: $ServerName\r\n" if $hdr !~ /(?:^|\n)Host:/msi;
    $headers .= "Connection: close\r\n" if $hdr !~ /(?:^|\n)Connection/msi;
    return "$meth $url $ver\r\n$headers$hdr$len\r\n$content";
}

sub _requests_from_block {
    my ($block) = @_;
    my $name = $block->name;
    my $request = _sec($block, q{request});
    my $more = _sec($block, q{more_headers});
    $more = '' if !defined $more;

    my $hdr_for = sub {
        my $i = shift;
        if (ref $more eq 'ARRAY') {
            my $h = $more->[$i];
            bail_out("--- more_headers lacks data for the "
                     . ($i ? "${i}th " : '') . "request") if !defined $h;
            return _parse_more_headers($h);
        }
        return _parse_more_headers($more);
    };

    if (ref $request eq 'ARRAY') {
        my @out;
        for my $i (0 .. $#$request) {
            push @out, _build_request($name, $hdr_for->($i), $request->[$i]);
        }
        return \@out;
    }
    if (ref $request) {
        bail_out("$name - invalid ---request : MUST be string or array of requests");
    }
    if (defined $request) {
        1 while $request =~ s/\A(?:\s*#[^\n]+\s+|\s+)//;
    }
    return [ _build_request($name, $hdr_for->(0), $request) ];
}

# send one request on its own connection; the timeout is an inactivity
# timeout (between two I/O events), like the real module's.
sub _send_request {
    my ($raw, $timeout, $name) = @_;
    my $head_req = $raw =~ /^\s*HEAD\s+/ ? 1 : 0;
    local $SIG{PIPE} = 'IGNORE';

    my $sock;
    my $deadline = Time::HiRes::time() + 5;
    my $wait = 0.01;
    while (1) {
        $sock = IO::Socket::INET->new(PeerAddr => $ServerAddr,
                                      PeerPort => $ServerPort,
                                      Proto => 'tcp',
                                      Timeout => $timeout);
        last if $sock;
        my $err = $!;
        if (Time::HiRes::time() >= $deadline) {
            _no_ending();
            Test::More::fail("$name - Can't connect to $ServerAddr:$ServerPort: "
                             . "$err (aborted)\n");
            return (undef, $head_req);
        }
        Time::HiRes::sleep($wait);
        $wait *= 2 if $wait < 0.5;
    }
    $sock->blocking(0);

    my $resp = '';
    my $off = 0;
    my $writing = length($raw) > 0;
    my $sel = IO::Select->new($sock);
    while (1) {
        $! = 0;
        my ($r, $w) = IO::Select->select($sel, ($writing ? $sel : undef),
                                         undef, $timeout);
        if (!$r && !$w) {
            next if $!{EINTR};
            _no_ending();
            Test::More::fail("ERROR: client socket timed out - $name\n");
            last;
        }
        if ($r && @$r) {
            my $n = sysread($sock, my $buf, 16384);
            if (!defined $n) {
                next if $!{EAGAIN} || $!{EWOULDBLOCK} || $!{EINTR};
                warn "WARNING: $name - HTTP response read failure: $!\n";
                last;
            }
            last if $n == 0;
            $resp .= $buf;
        }
        if ($writing && $w && @$w) {
            my $n = syswrite($sock, $raw, length($raw) - $off, $off);
            if (!defined $n) {
                next if $!{EAGAIN} || $!{EWOULDBLOCK} || $!{EINTR};
                my $err = "write failed: $!";
                warn "$err\n";
                $resp = $err if $resp eq '';
                last;
            }
            $off += $n;
            $writing = 0 if $off >= length $raw;
        }
    }
    close $sock;
    return ($resp, $head_req);
}

sub _parse_response {
    my ($name, $raw, $head_req) = @_;
    my $raw_headers = $raw =~ /(.*?\r\n)\r\n/s ? $1 : '';
    my $res = HTTP::Response->parse($raw);
    my $code = $res->code;
    if (defined $code && $code !~ /^\d+$/) {
        $res->code(undef);
        $code = undef;
    }
    return ($res, $raw_headers) if $code && ($code == 304 || $code == 101);

    my $enc = $res->header('Transfer-Encoding');
    my $len = $res->header('Content-Length');
    my @trailers = $res->header('Trailer');
    my $left;

    my $bad = sub {
        _no_ending();
        Test::More::fail("$name - $_[0]");
        return ();
    };

    if (defined $enc && $enc eq 'chunked') {
        my $body = $res->content // '';
        my $decoded = '';
        pos($body) = 0;
        while (1) {
            if (!@trailers && $body =~ /\G0[ \t]*\r\n\r\n/gc) {
                $left = substr($body, pos($body)) if pos($body) < length $body;
                last;
            }
            if (@trailers && $body =~ /\G0[ \t]*\r\n/gc) {
                for my $t (@trailers) {
                    $body =~ /\G\Q$t\E: [^\n]*\r\n/gc
                        or return $bad->("invalid trailer data received "
                                         . "(expected $t).");
                }
                $body =~ /\G\r\n/gc
                    or return $bad->("invalid chunked data received (expected CRLF).");
                $left = substr($body, pos($body)) if pos($body) < length $body;
                last;
            }
            if ($body =~ /\G[ \t]*([A-Fa-f0-9]+)[ \t]*\r\n/gc) {
                my $size = hex $1;
                my $p = pos($body);
                if (length($body) - $p < $size) {
                    return $bad->("invalid chunked data received "
                                  . "(not enought octets for the data section)");
                }
                $decoded .= substr($body, $p, $size);
                pos($body) = $p + $size;
                $body =~ /\G\r\n/gc
                    or return $bad->("invalid chunked data received (expected CRLF).");
                next;
            }
            if ($body =~ /\G(.+)/gcs) {
                return $bad->("invalid chunked body received: $1");
            }
            return $bad->("no last chunk found - $body");
        }
        $res->content($decoded);

    } elsif (defined $len && $len ne '' && $len =~ /^\d+$/) {
        my $body = $res->content // '';
        if (length $body < $len) {
            warn "WARNING: $name - response body truncated: $len expected, "
                 . "but got " . length($body) . "\n" if !$head_req;
        } elsif (length $body > $len) {
            $left = substr($body, $len);
            $res->content(substr($body, 0, $len));
        }
    }
    return ($res, $raw_headers, $left);
}

#---------------------------------------------------------------------------
# checks
#---------------------------------------------------------------------------

sub _indexed {
    my ($name, $value, $idx, $need_array) = @_;
    if ($need_array) {
        return $value->[$idx] if ref $value eq 'ARRAY';
        bail_out("$name - You asked for many requests, the expected results "
                 . "should be arrays as well.");
    }
    return $value->[0] if ref $value eq 'ARRAY';
    return $value;
}

sub _check_error_code {
    my ($block, $res, $idx, $need_array) = @_;
    my $name = $block->name;
    my $code = ($res && $res->code) || '';
    if (defined _sec($block, q{error_code_like})) {
        my $pat = _indexed($name, _sec($block, q{error_code_like}), $idx, $need_array);
        Test::More::like($code, qr/$pat/sm, "$name - status code ok");
    } elsif (defined _sec($block, q{error_code})) {
        Test::Base::is($code, _indexed($name, _sec($block, q{error_code}), $idx, $need_array),
                       "$name - status code ok");
    } else {
        Test::Base::is($code, 200, "$name - status code ok");
    }
}

sub _check_raw_response_headers {
    my ($block, $raw_headers, $idx, $need_array) = @_;
    my $name = $block->name;
    if (defined _sec($block, q{raw_response_headers_like})) {
        my $pat = _indexed($name, _sec($block, q{raw_response_headers_like}), $idx, $need_array);
        Test::More::like($raw_headers, qr/$pat/s, "$name - raw resp headers like");
    }
    if (defined _sec($block, q{raw_response_headers_unlike})) {
        my $pat = _indexed($name, _sec($block, q{raw_response_headers_unlike}), $idx, $need_array);
        Test::More::unlike($raw_headers, qr/$pat/s, "$name - raw resp headers unlike");
    }
}

# "Name: value" lines, "!Name" for absent headers; later duplicates win
sub _parse_header_spec {
    my $s = shift;
    my (@order, %h);
    for my $line (split /\n/, $s // '') {
        $line =~ s/^\s+|\s+$//g;
        my $neg = $line =~ s/^!\s*//;
        my ($k, $v);
        if ($neg) {
            $k = $line;
        } else {
            ($k, $v) = split /\s*:\s*/, $line, 2;
            next if !defined $k;    # blank line
        }
        push @order, $k if !exists $h{$k};
        $h{$k} = $v;
    }
    return (\@order, \%h);
}

sub _check_response_headers {
    my ($block, $res, $raw_headers, $idx, $need_array) = @_;
    my $name = $block->name;
    if (defined _sec($block, q{response_headers})) {
        my ($order, $h) = _parse_header_spec(
            _indexed($name, _sec($block, q{response_headers}), $idx, $need_array));
        for my $key (@$order) {
            my $val = $h->{$key};
            if (!defined $val) {
                Test::More::unlike($raw_headers, qr/^\s*\Q$key\E\s*:/ms,
                    "$name - header $key not present in the raw headers");
                next;
            }
            $val =~ s/\$ServerPort(?:ForClient)?\b/$ServerPort/g;
            my $actual = $res ? $res->header($key) : undef;
            $actual = '' if !defined $actual;
            Test::Base::is($actual, $val, "$name - header $key ok");
        }
    } elsif (defined _sec($block, q{response_headers_like})) {
        my ($order, $h) = _parse_header_spec(
            _indexed($name, _sec($block, q{response_headers_like}), $idx, $need_array));
        for my $key (@$order) {
            my $val = $h->{$key} // '';
            my $actual = $res ? $res->header($key) : undef;
            $actual = '' if !defined $actual;
            Test::More::like($actual, qr/^$val$/, "$name - header $key like ok");
        }
    }
}

sub _check_response_body {
    my ($block, $res, $idx, $rep, $need_array) = @_;
    my $name = $block->name;
    my $content = $res ? $res->content : undef;
    if (defined $content) {
        $content =~ s/^TE: deflate,gzip;q=0\.3\r\n//gms;
        $content =~ s/^Connection: TE, close\r\n//gms;
    }

    if (defined _sec($block, q{response_body})) {
        my $expected = _indexed($name, _sec($block, q{response_body}), $idx, $need_array);
        if (defined $expected && !ref $expected) {
            $expected =~ s/\$ServerPort(?:ForClient)?\b/$ServerPort/g;
            $expected = _expand_env($expected, $name);
        }
        if (ref $expected) {
            Test::More::like($content, $expected,
                "$name - response_body - like (repeated req $rep, req $idx)");
        } else {
            _is_str($content, $expected,
                "$name - response_body - response is expected "
                . "(repeated req $rep, req $idx)");
        }

    } elsif (defined _sec($block, q{response_body_like})
             || defined _sec($block, q{response_body_unlike}))
    {
        my ($pats, $type) = defined _sec($block, q{response_body_like})
            ? (_sec($block, q{response_body_like}), 'like')
            : (_sec($block, q{response_body_unlike}), 'unlike');
        my $pat = _indexed($name, $pats, $idx, $need_array);
        $pat =~ s/\$ServerPort(?:ForClient)?\b/$ServerPort/g if defined $pat && !ref $pat;
        $pat = '' if !defined $pat;
        my $summary = _trim_summary($content) // '';
        my $desc = "$name - response_body_$type - response is expected ($summary)";
        if ($type eq 'like') {
            Test::More::like($content, qr/$pat/s, $desc);
        } else {
            Test::More::unlike($content, qr/$pat/s, $desc);
        }
    }
}

sub _error_log_data {
    # give nginx a moment for log-phase output after the connection closed
    Time::HiRes::sleep($TestNginxSleep * 3);
    open my $in, '<', $ErrLogFile or return [];
    if (!$CheckAccumErrLog && $ErrLogFilePos > 0) {
        seek $in, $ErrLogFilePos, 0;
    }
    my @lines = <$in>;
    $ErrLogFilePos = tell($in) if !$CheckAccumErrLog;
    close $in;
    return \@lines;
}

sub _pattern_list {
    my $pats = shift;
    if (!ref $pats) {
        chomp $pats;
        return [ split /\n+/, $pats ];
    }
    return [ $pats ] if ref $pats eq 'Regexp';
    return [ @$pats ];
}

sub _line_matches {
    my ($line, $pat) = @_;
    return ref $pat ? scalar($line =~ $pat) : index($line, $pat) >= 0;
}

sub _value_contains {
    my ($val, $str) = @_;
    return 0 if !defined $val;
    if (ref $val eq 'ARRAY') {
        for (@$val) { return 1 if _value_contains($_, $str) }
        return 0;
    }
    return index("$val", $str) >= 0;
}

sub _check_error_log {
    my ($block, $rep) = @_;
    my $name = $block->name;
    my $lines = _error_log_data();
    my %warn_level = map { $_ => 1 } qw(alert crit emerg);

    # grep_error_log / grep_error_log_out
    my $grep = _sec($block, q{grep_error_log});
    if (!defined $grep && defined _sec($block, q{grep_error_log_out})) {
        bail_out("$name - No --- grep_error_log defined but --- "
                 . "grep_error_log_out is defined");
    }
    $grep = $grep->[$rep] if ref $grep eq 'ARRAY';
    if (defined $grep) {
        my $expected = _sec($block, q{grep_error_log_out});
        if (!defined $expected) {
            bail_out("$name - No --- grep_error_log_out defined but --- "
                     . "grep_error_log is defined");
        }
        $expected = _expand_env($expected, $name);
        $expected = $expected->[$rep] if ref $expected eq 'ARRAY';
        my $out = '';
        for my $line (@$lines) {
            my $m;
            if (ref $grep) {
                $m = substr($line, $-[0], $+[0] - $-[0]) if $line =~ $grep;
            } elsif (index($line, $grep) >= 0) {
                $m = $grep;
            }
            $out .= "$m\n" if defined $m && $m !~ /\n/;
        }
        if (ref $expected eq 'Regexp') {
            Test::More::like($out, $expected, "$name - grep_error_log_out (req $rep)");
        } else {
            _is_str($out, $expected, "$name - grep_error_log_out (req $rep)");
        }
    }

    if (defined _sec($block, q{error_log})) {
        my $raw = _sec($block, q{error_log});
        for my $lvl (keys %warn_level) {
            delete $warn_level{$lvl} if _value_contains($raw, "[$lvl");
        }
        my $pats = _pattern_list($raw);
        for my $line (@$lines) {
            for my $pat (@$pats) {
                next if !defined $pat;
                if (_line_matches($line, $pat)) {
                    Test::More::pass("$name - pattern \"$pat\" matches a line "
                                     . "in error.log (req $rep)");
                    undef $pat;
                }
            }
        }
        for my $pat (@$pats) {
            next if !defined $pat;
            Test::More::fail("$name - pattern \"$pat\" should match a line in "
                             . "error.log (req $rep)");
        }
    }

    if (defined _sec($block, q{no_error_log})) {
        my $raw = _sec($block, q{no_error_log});
        for my $lvl (keys %warn_level) {
            delete $warn_level{$lvl} if _value_contains($raw, "[$lvl");
        }
        my $pats = _pattern_list($raw);
        my %found;
        for my $i (0 .. $#$lines) {
            my $line = $lines->[$i];
            for my $pat (@$pats) {
                next if !defined $pat;
                next if !_line_matches($line, $pat);
                _no_ending() if $found{$pat}++;
                my $ln = _fmt_str($line);
                my $p = _fmt_str("$pat");
                my $last = List::Util::min($i + 10, $#$lines);
                my $more = join '', @{$lines}[$i + 1 .. $last - 1];
                Test::More::fail("$name - pattern \"$p\" should not match any "
                                 . "line in error.log but matches line \"$ln\" "
                                 . "(req $rep)\n$more");
            }
        }
        for my $pat (@$pats) {
            next if !defined $pat || $found{$pat};
            my $p = _fmt_str("$pat");
            Test::More::pass("$name - pattern \"$p\" does not match a line in "
                             . "error.log (req $rep)");
        }
    }

    for my $line (@$lines) {
        for my $lvl (sort keys %warn_level) {
            if (index($line, "[$lvl]") >= 0) {
                warn "WARNING: $name - " . _fmt_str($line) . "\n";
            }
        }
    }
    for my $line (@$lines) {
        if ($line =~ /\bAssertion .*?failed\b/) {
            _no_ending();
            (my $l = $line) =~ s/\n\z//;
            Test::More::fail("$name - $l\n");
        }
    }
}

#---------------------------------------------------------------------------
# running blocks
#---------------------------------------------------------------------------

my %InternalKey = map { $_ => 1 } qw(
    name description seq_num is_filtered blocks_object original_values
);

sub _unsupported {
    my ($block) = @_;
    my @bad = sort grep { $UnsupportedSection{$_} }
              grep { !$InternalKey{$_} && !/^_/ } keys %$block;
    my @msgs = map { "section '--- $_'" } @bad;
    my $req = _sec($block, q{request});
    if (ref $req eq 'ARRAY' && grep { ref $_ } @$req) {
        push @msgs, "requests given as packets ('--- request eval' with "
                    . "nested arrays/hashes)";
    }
    return @msgs;
}

sub _run_must_die {
    my ($block, $must_die) = @_;
    my $name = $block->name;
    for my $i (0 .. $RepeatEach - 1) {
        my ($status, $stderr) = _run_nginx_cmd($block);
        print STDERR $stderr if $stderr ne '';
        my $exit = $status >> 8;
        if ($status == -1 || ($exit == 127 && $stderr =~ /^exec .* failed/m)) {
            Test::More::fail("$name - failed to execute the nginx command line");
        } elsif ($status & 127) {
            Test::More::fail("$name - nginx core dumped");
        } elsif (Scalar::Util::looks_like_number($must_die)) {
            Test::More::is($must_die, $exit, "$name - die with the expected exit code");
        } else {
            Test::More::isnt($status, 0, "$name - die as expected");
        }

        _check_error_log($block, $i);

        if ($status == 0) {
            warn "WARNING: $name - nginx must die but it does not; killing it (req $i)\n";
            my $deadline = Time::HiRes::time() + 2;
            Time::HiRes::sleep(0.01) while !-f $PidFile && Time::HiRes::time() < $deadline;
            stop_nginx($name);
        }
    }
}

sub _run_block {
    my ($block) = @_;
    my $name = $block->name;
    $RandPorts = {};

    if (my @bad = _unsupported($block)) {
        Test::More::fail("$name - not supported by the bundled Test::Nginx::Socket "
                         . "subset (t/runner/README.md): " . join(', ', @bad));
        return;
    }

    my $config = _expand_env(_sec($block, q{config}), $name);

    local $LogLevel = $LogLevel;
    $LogLevel = _sec($block, q{log_level}) if _sec($block, q{log_level});

    if (defined $config) {
        $PrevConfig = $config;
        stop_nginx($name);
        _setup_server_root();
        _write_config_file($block, $config);
        $ErrLogFilePos = 0;

        if (defined _sec($block, q{must_die})) {
            _run_must_die($block, _sec($block, q{must_die}));
            return;
        }
        _start_nginx($block) or return;

    } elsif (!defined $PrevConfig) {
        bail_out("$name - No '--- config' section specified and could not "
                 . "get previous one.");
    }
    # else: like the real module, reuse the server of the previous block

    my $timeout = _parse_time(_sec($block, q{timeout}));
    $timeout = $Timeout if !defined $timeout;

    $ErrLogFilePos = 0;
    for my $rep (0 .. $RepeatEach - 1) {
        my $reqs = _requests_from_block($block);
        bail_out("$name - request empty") if !@$reqs;
        my $need_array = @$reqs > 1;

        for my $idx (0 .. $#$reqs) {
            _vwarn("request: [$reqs->[$idx]]\n");
            my ($raw, $head) = _send_request($reqs->[$idx], $timeout, $name);
            $raw = '' if !defined $raw;
            _vwarn("response: [$raw]\n");
            my ($res, $raw_headers, $left) = _parse_response($name, $raw, $head);
            $raw_headers = '' if !defined $raw_headers;
            if (defined $left && $left ne '') {
                (my $l = $left) =~ s/([\0-\037\200-\377])/sprintf('\x{%02x}', ord $1)/eg;
                warn "WARNING: $name - unexpected extra bytes after last chunk "
                     . "in response: \"$l\"\n";
            }

            _check_error_code($block, $res, $idx, $need_array);
            _check_raw_response_headers($block, $raw_headers, $idx, $need_array);
            _check_response_headers($block, $res, $raw_headers, $idx, $need_array);
            _check_response_body($block, $res, $idx, $rep, $need_array);

            if ($idx < $#$reqs) {
                Time::HiRes::sleep(_sec($block, q{wait})) if _sec($block, q{wait});
                _check_error_log($block, $rep);
            }
        }
        Time::HiRes::sleep(_sec($block, q{wait})) if _sec($block, q{wait});
        _check_error_log($block, $rep);
    }
}

sub run_tests () {
    srand($$ + Time::HiRes::time() * 1000000);
    if (!$WarnedEnv) {
        $WarnedEnv = 1;
        for my $v (@UnsupportedEnv) {
            warn "WARNING: $v is set but not supported by the bundled "
                 . "Test::Nginx::Socket subset; ignored\n" if $ENV{$v};
        }
    }
    _nginx_info();
    _become_subreaper();
    $ENV{TEST_NGINX_SERVER_PORT} = $ServerPort
        if !defined $ENV{TEST_NGINX_SERVER_PORT};

    my @blocks = Test::Base::blocks();
    @blocks = List::Util::shuffle(@blocks) if !$NoShuffle;
    for my $block (@blocks) {
        $_->($block) for @BlockPreprocessors;
        $block->set_value('name', "$0 " . $block->name);
        _run_block($block);
    }
}

END {
    if ($$ == $MainPid) {
        local $?;
        stop_nginx('END') if !$ENV{TEST_NGINX_NO_CLEAN};
    }
}

1;
