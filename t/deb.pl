# make test-deb: the package of "make deb", installed into Debian's own
# nginx the Debian way (apt-get install ./the.deb: the module file in
# /usr/lib/nginx/modules, its load file linked into modules-enabled),
# used by a server in /etc/nginx/conf.d against the mock DQE server, with
# the system's nginx.conf; then purged, leaving nginx as it was.  Then the
# upgrade the README tells: the previous release's package (built from its
# commit by t/deb-previous.sh) installed and running, this one installed
# over it; a reload keeps the old module (the dynamic loader hands back
# the object already mapped), a binary upgrade (USR2, then QUIT to the old
# master) runs the new one, as the status endpoint's version shows.  Root.

use strict;
use warnings;

use Test::More;
use Test::DQE;
use Time::HiRes qw(sleep);

plan skip_all => 'needs root, to install a package' if $> != 0;

my $arch = `dpkg --print-architecture`;
chomp $arch;

my ($deb) = glob("build/deb/libnginx-mod-http-dqe-oauth_*_$arch.deb");
ok($deb, 'the package is built (make deb)') or BAIL_OUT('no package');

my $enabled = '/etc/nginx/modules-enabled/50-mod-http-dqe-oauth.conf';
my $site = '/etc/nginx/conf.d/dqe-oauth-test.conf';
my @nginx = ('/usr/sbin/nginx', '-p', '/usr/share/nginx/', '-c',
             '/etc/nginx/nginx.conf');

sub run { system(@_) == 0 }
sub quiet { system("@_ >/dev/null 2>&1") == 0 }

ok(quiet("DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ./$deb"),
   "apt-get install ./$deb");

like(`dpkg-deb -f $deb Depends`, qr/(?:^|, )libcjson1 \(>= [\d.]+\)/,
     'it depends on libcjson1 (dh_shlibdeps)');
like(`ldd /usr/lib/nginx/modules/ngx_http_dqe_oauth_module.so`,
     qr{^\s*libcjson\.so\.1 => /\S+}m, 'the module links libcjson.so.1');

ok(-f '/usr/lib/nginx/modules/ngx_http_dqe_oauth_module.so',
   'the module is in /usr/lib/nginx/modules');
ok(-l $enabled, "its load file is linked into modules-enabled");
like(do { open my $f, '<', $enabled; local $/; <$f> // '' },
     qr{^load_module modules/ngx_http_dqe_oauth_module\.so;}m,
     'it loads the module');

# a server of the Debian layout: a file of conf.d, in the http{} of the
# system's nginx.conf, which loads modules-enabled/*.conf

my $port = Test::DQE::free_port();

open my $fh, '>', $site or die "$site: $!";
print $fh <<"CONF";
proxy_ssl_verify on;
proxy_ssl_trusted_certificate $ENV{TEST_NGINX_DQE_CA};

server {
    listen 127.0.0.1:$port;

@{[ Test::DQE::location('/') ]}
}
CONF
close $fh;

ok(run(@nginx, '-t', '-q'), 'nginx -t with the system configuration');

# the Troubleshooting row: a load_module line of one's own beside the
# package's load file

my $twice = Test::DQE::Nginx->new('deb-twice');
open $fh, '>', $twice->root . '/conf/nginx.conf' or die $!;
print $fh "include /etc/nginx/modules-enabled/*.conf;\n"
    . "load_module /usr/lib/nginx/modules/ngx_http_dqe_oauth_module.so;\n"
    . "error_log @{[ $twice->root ]}/logs/error.log;\n"
    . "pid @{[ $twice->root ]}/logs/nginx.pid;\n"
    . "events {}\nhttp {}\n";
close $fh;
# Debian's prefix: the load files name modules/...
my $out = `/usr/sbin/nginx -p /usr/share/nginx/ -c @{[ $twice->root ]}/conf/nginx.conf -t 2>&1`;
like($out, qr/\[emerg\] \d+#\d+: module "ngx_http_dqe_oauth_module" is already loaded in \S+\/conf\/nginx\.conf:2/,
     'a load_module line of one\'s own beside it: nginx -t says "is '
     . 'already loaded", as the README\'s Troubleshooting says');

my $running = -s '/run/nginx.pid'
              && kill(0, do { open my $p, '<', '/run/nginx.pid'; 0 + <$p> });

ok($running ? run(@nginx, '-s', 'reload') : run(@nginx),
   $running ? 'the running nginx reloads' : 'nginx starts');

my $ngx = Test::DQE::Nginx->new('deb');
$ngx->{port} = $port;

my ($st, $body);
for (1 .. 50) {
    ($st, $body) = $ngx->get('/address', 5);
    last if $st;
    sleep 0.1;
}

is($st, 200, 'a request proxied to the mock DQE server');
like($body, qr/"ok":true/, 'with a token it issued');

unlink $site;

ok($running ? run(@nginx, '-s', 'reload') : run(@nginx, '-s', 'quit'),
   $running ? 'reload without the test server' : 'nginx quits');

ok(quiet('DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq '
         . 'libnginx-mod-http-dqe-oauth'), 'apt-get purge');

ok(!-e '/usr/lib/nginx/modules/ngx_http_dqe_oauth_module.so'
   && !-e $enabled, 'the module and its load file are gone');

ok(run(@nginx, '-t', '-q'), 'nginx -t as before');

# the upgrade from the previous release

open my $pf, '<', 't/deb-previous' or die "t/deb-previous: $!";
my ($prev) = map { [ split ' ' ] } grep { !/^#/ && /\S/ } <$pf>;
my ($old) = glob("build/deb-previous/libnginx-mod-http-dqe-oauth_"
                 . "$prev->[0]_$arch.deb");
ok($old, "release $prev->[0]'s package is built (t/deb-previous.sh)")
    or BAIL_OUT('no previous package');

my ($new) = $deb =~ /_([^_]+)_\Q$arch\E\.deb$/;
isnt($new, $prev->[0], "this package ($new) is another version");

sub version {
    my ($st, $json) = $ngx->get('/dqe_status', 5);
    return $st == 200 && $json =~ /^\{"version":"([^"]+)"/ ? $1 : "($st)";
}

sub master { open my $p, '<', '/run/nginx.pid' or return 0; 0 + <$p> }

ok(quiet("DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ./$old"),
   "apt-get install ./$old");

open $fh, '>', $site or die "$site: $!";
print $fh <<"CONF";
proxy_ssl_verify on;
proxy_ssl_trusted_certificate $ENV{TEST_NGINX_DQE_CA};

server {
    listen 127.0.0.1:$port;

    location = /dqe_status { dqe_oauth_status; }

@{[ Test::DQE::location('/') ]}
}
CONF
close $fh;

ok($running ? run(@nginx, '-s', 'reload') : run(@nginx),
   "nginx runs release $prev->[0]");

my $v;
for (1 .. 50) { $v = version(); last if $v eq $prev->[0]; sleep 0.1 }
is($v, $prev->[0], "the status says $prev->[0]");

ok(quiet("DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ./$deb"),
   "apt-get install ./$deb over it");
ok(run(@nginx, '-s', 'reload'), 'nginx -s reload');

# the reload is done when the old workers are gone: the master answers
# with the same module, its workers are new
sleep 1;
is(version(), $prev->[0], "after a reload: still $prev->[0], as the README "
   . 'warns');

my $pid = master();
ok(kill('USR2', $pid), 'binary upgrade: USR2 to the master');

my $newpid;
for (1 .. 100) {
    $newpid = master();
    last if $newpid && $newpid != $pid && -e '/run/nginx.pid.oldbin';
    sleep 0.1;
}
isnt($newpid, $pid, 'a new master is up');
ok(kill('QUIT', $pid), 'QUIT to the old master');
for (1 .. 100) { last unless kill(0, $pid); sleep 0.1 }
ok(!kill(0, $pid), 'the old master is gone');

is(version(), $new, "after the binary upgrade: $new");

my ($st2, $body2) = $ngx->get('/address', 5);
is("$st2 " . ($body2 =~ /"ok":true/ ? 'ok' : $body2), '200 ok',
   'a request proxied with the new module');

unlink $site;

ok($running ? run(@nginx, '-s', 'reload') : run(@nginx, '-s', 'quit'),
   $running ? 'reload without the test server' : 'nginx quits');

ok(quiet('DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq '
         . 'libnginx-mod-http-dqe-oauth'), 'apt-get purge');
ok(run(@nginx, '-t', '-q'), 'nginx -t as before, again');

done_testing();
