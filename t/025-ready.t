# Readiness: dqe_oauth_status?ready answers 200 when every credential set
# kept warm holds a live token, else 503 with the sets that do not and
# why; ?ready=all asks about every set.  For load balancers and
# Kubernetes readiness probes.
#
#   - 503 while the first token request is under way (DQE answers in
#     2 s), 200 as soon as the token is there
#   - 503 while a refused licence backs off, with DQE's cause
#   - ?ready=all: a set not kept warm counts until a request gets it a
#     token
#
# Plain Test::More.

use strict;
use warnings;

use Test::More;
use Test::DQE;
use JSON::PP ();
use Time::HiRes qw(sleep time);

sub mock { Test::DQE::mock(@_) }

my $ngx = Test::DQE::Nginx->new('ready');

sub http {
    my (@sets) = @_;

    return "    server {\n"
        . "        listen 127.0.0.1:${\ $ngx->port};\n"
        . "        location = /status { dqe_oauth_status; }\n"
        . join('', map { Test::DQE::location(@$_) } @sets)
        . "    }\n";
}

sub ready {
    my ($args) = @_;

    my ($st, $body) = $ngx->get("/status?$args");
    my $json = eval { JSON::PP::decode_json($body) } || { body => $body };

    return ($st, $json);
}

mock('/__mock/reset');
mock('/__mock/fault?delay=2&count=1');

ok($ngx->start(http => http(['/a/', extra => 'dqe_oauth_keep_warm on;'],
                            ['/b/', licence => 100010,
                                    secret => 'bulk-pass'])),
   'nginx starts: one set kept warm, DQE answers in 2 s');

my ($st, $json) = ready('ready');

is($st, 503, 'ready: 503 while the first token request is under way');
is_deeply($json, { ready => JSON::PP::false, sets => 1, not_ready => [{
    server => "https://127.0.0.1:$ENV{TEST_NGINX_DQE_PORT}",
    licence => '123456', scope => 'client_address', secret => 1,
    why => 'token request under way', backoff_until => undef,
    last_error => undef }] }, 'the set, and why');

my (undef, $sbody) = $ngx->get('/status');
my ($a) = grep { $_->{licence} eq '123456' }
          @{ (eval { JSON::PP::decode_json($sbody) } || {})->{credentials}
             || [] };
is_deeply([@{ $a || {} }{qw(fetch_in_flight token_expires)}],
          [JSON::PP::true, undef],
          'the status: fetch_in_flight true, no token yet');

for (1 .. 60) {
    ($st) = ready('ready');
    last if $st == 200;
    sleep 0.1;
}

($st, $json) = ready('ready');
is($st, 200, 'ready: 200 once the token is there');
is_deeply($json, { ready => JSON::PP::true, sets => 1, not_ready => [] },
          'no set left');

($st, $json) = ready('ready=all');
is($st, 503, 'ready=all: 503, the set not kept warm has no token');
is_deeply([map { "$_->{licence} $_->{why}" } @{ $json->{not_ready} }],
          ['100010 no token'], 'that set, no token');
is($json->{sets}, 2, 'of 2 sets');

is(($ngx->get('/b/x'))[0], 200, 'a request gets it a token');
($st) = ready('ready=all');
is($st, 200, 'ready=all: 200');

is(($ngx->get('/status?ready=some'))[0], 400, 'ready=some: 400');

ok($ngx->stop, 'quit');

# a refused licence, kept warm: 503 while it backs off, with DQE's cause

ok($ngx->start(http => http(['/a/', extra => 'dqe_oauth_keep_warm on;'],
                            ['/x/', licence => 999999,
                                    extra => 'dqe_oauth_keep_warm on;'])),
   'nginx starts with an expired licence kept warm');

for (1 .. 50) {
    ($st, $json) = ready('ready');
    last if @{ $json->{not_ready} || [] } == 1
            && $json->{not_ready}[0]{backoff_until};
    sleep 0.1;
}

is($st, 503, 'ready: 503');
is(scalar @{ $json->{not_ready} }, 1, 'one set not ready (the other is)');

my $x = $json->{not_ready}[0] || {};
is("$x->{licence} $x->{why}", '999999 backing off', 'the expired licence, backing off');
like($x->{last_error},
     qr/^DQE answered 400 invalid_client \(unknown or expired licence, or wrong secret\): check dqe_oauth_licence and dqe_oauth_secret$/,
     'with the cause of the error line');
cmp_ok($x->{backoff_until}, '>', time + 5, 'until 10 s after the refusal');
cmp_ok($x->{backoff_until}, '<=', time + 10.5, 'not later');

ok($ngx->stop, 'quit');

Test::DQE::log_ok($ngx->log, qr/\[error\](?!.*licence "999999")/);

done_testing();
