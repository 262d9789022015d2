# make test-deb: the package of "make deb", installed into Debian's own
# nginx the Debian way (apt-get install ./the.deb: the module file in
# /usr/lib/nginx/modules, its load file linked into modules-enabled),
# used by a server in /etc/nginx/conf.d against the mock DQE server, with
# the system's nginx.conf; then purged, leaving nginx as it was.  Root.

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

done_testing();
