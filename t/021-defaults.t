# The defaults of the freshness directives, with tokens long enough for
# them to show: DQE's tokens live 48 s here, so that the default
# dqe_oauth_expiry_margin (10 s) is under its cap (a quarter of the
# lifetime, 12 s) and the default dqe_oauth_refresh_ahead (20% of the
# lifetime, 9.6 s) under its clamp (half the usable 38 s).
#
#   /margin/   no renewal ahead: cutoff 38 s in: HIT at 37 s, MISS at 38.3 s
#   /ahead/    all defaults: refresh point 28.4 s in, or up to 2.4 s
#              earlier (the spread this instance drew: the status says
#              which): HIT 0.8 s before it, RENEW
#              at 28.8 s (the upstream gets the current token), then HIT
#              with the new one; DQE refuses the refresh token (older than
#              its 20 s here), the renewal falls back to the licence and
#              secret, an [info] line says so
#
# Plain Test::More, an nginx of its own, about 40 s; timed as t/020 is:
# from the requests each check depends on, so that a slow machine can
# delay a check but not bring it early.

use strict;
use warnings;

use Test::More;
use Test::DQE;
use JSON::PP ();
use Time::HiRes qw(sleep time);

sub mock { Test::DQE::mock(@_) }

my $ngx = Test::DQE::Nginx->new('defaults');
my $port = $ngx->port;

my $http = "    server {\n"
    . "        listen 127.0.0.1:$port;\n"
    . "        location /echo { return 200 \$http_authorization; }\n"
    . "        location = /status { dqe_oauth_status; }\n"
    . Test::DQE::echo_location('/margin/', $port, licence => 100711,
                               secret => 'bulk-pass',
                               extra => 'dqe_oauth_refresh_ahead off;')
    . Test::DQE::echo_location('/ahead/', $port, licence => 100712,
                               secret => 'bulk-pass')
    . "    }\n";

mock('/__mock/reset');
mock('/__mock/config?ttl=48&refresh_ttl=20');

ok($ngx->start(http => $http, workers => 1), 'nginx starts, one worker');

sub at {
    my ($t) = @_;
    my $d = $t - time;
    sleep $d if $d > 0;
}

my (%tok, %done);

for my $loc (qw(margin ahead)) {
    my $got = $ngx->outcome("/$loc/1");
    like($got, qr/^200 MISS t\d+$/, "/$loc/: the first request fetches");
    $tok{$loc} = $got =~ /(t\d+)$/ ? $1 : 'none';
    $done{$loc} = time;
}

# the refresh point: 20% of 48 s before the cutoff, and this instance's
# spread, up to a quarter of that (the status tells it to the ms)

my ($st, $body) = $ngx->get('/status');
my ($expires, $renews) = $body =~ /"licence":"100712".*?"token_expires":([\d.]+),"token_renews":([\d.]+)/;
my $ahead = ($expires // 0) - ($renews // 0);
ok($ahead >= 19.6 - 0.002 && $ahead < 22.0,
   "/ahead/: renewal 10 s + 20% of 48 s (+ up to a quarter) before expiry: $ahead s");

at($done{ahead} + 48 - $ahead - 0.8);
is($ngx->outcome('/ahead/2'), "200 HIT $tok{ahead}",
   '/ahead/: 0.8 s before its refresh point: HIT');

at($done{ahead} + 28.8);
is($ngx->outcome('/ahead/3'), "200 RENEW $tok{ahead}",
   '/ahead/: 28.8 s in, past it: RENEW, with the current token');

my $got;

for (1 .. 60) {
    $got = $ngx->outcome('/ahead/4');
    last if $got ne "200 HIT $tok{ahead}";
    sleep 0.05;
}

like($got, qr/^200 HIT t\d+$/, '/ahead/: then HIT');
isnt($got =~ /(t\d+)$/ ? $1 : '', $tok{ahead}, '/ahead/: with a new token');

like($ngx->log, qr/\[info\] .*DQE refused the refresh token for .*licence "100712".*\(DQE answered 400 invalid_grant \(the refresh token was refused\)\); asking for a new token/,
     '/ahead/: got with the licence and secret, the refresh token refused');
like(mock('/__mock/stats'),
     Test::DQE::stats(refresh_requests => 1, refresh_ok => 0,
                      tokens_issued => 3),
     'one refresh request, refused; three tokens');

# counted under the grant each was asked with: the refused refresh under
# refresh_token, invalid_grant; the three tokens under client_credentials

my (undef, $gbody) = $ngx->get('/status');
my ($aset) = grep { $_->{licence} eq '100712' }
             @{ (eval { JSON::PP::decode_json($gbody) } || {})->{credentials}
                || [] };
is(join(' ', map { "$_=" . ($aset->{fetches}{refresh_token}{$_} // '-') }
                 qw(success invalid_grant)),
   'success=0 invalid_grant=1', '/ahead/: refresh_token: 1 invalid_grant');
is($aset->{fetches}{client_credentials}{success}, 2,
   '/ahead/: client_credentials: 2 successes (the first, the fallback)');

# the cutoff, exactly: with no renewal ahead, the status's renewal time
# is the cutoff, the default margin (10 s) before DQE's expiry

my (undef, $sbody) = $ngx->get('/status');
my ($mset) = grep { $_->{licence} eq '100711' }
             @{ (eval { JSON::PP::decode_json($sbody) } || {})->{credentials}
                || [] };
is(sprintf('%.3f', ($mset->{token_expires} // 0)
                   - ($mset->{token_renews} // 0)), '10.000',
   '/margin/: the cutoff 10.000 s before DQE\'s expiry (the default margin)');

# 0.8 s apart, in one worker: the worker's copy of the token made at
# 37.5 s is younger than a second at 38.3 s, and still not used past the
# cutoff

at($done{margin} + 37.5);
is($ngx->outcome('/margin/2'), "200 HIT $tok{margin}",
   '/margin/: 37.5 s in, before 10 s ahead of DQE\'s expiry: HIT');

at($done{margin} + 38.3);
$got = $ngx->outcome('/margin/3');
like($got, qr/^200 MISS t\d+$/,
     '/margin/: 38.3 s in, past it, before DQE\'s expiry (48 s): MISS');
isnt($got =~ /(t\d+)$/ ? $1 : '', $tok{margin}, '/margin/: a new token');

ok($ngx->stop, 'quit');

mock('/__mock/reset');

Test::DQE::log_ok($ngx->log, qr/\[(?:error|warn)\]/);

done_testing();
