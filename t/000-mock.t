# The mock DQE server on its own, against DQE's contract (DQE's page on
# its token endpoint, as t/dqe_mock.md sums it up): every row, GET and
# POST, the refresh flow, the protected API, the controls and counters.
# Plain HTTP here, so that no TLS client is needed; nginx talks to it over
# TLS in the other files.

use strict;
use warnings;

use Test::More;
use HTTP::Tiny;
use Time::HiRes qw(sleep);
use Cwd qw(getcwd);

my $pid = open(my $fh, '-|', 'python3', getcwd() . '/t/dqe_mock.py',
               '--listen', '127.0.0.1:0', '--quiet', '--refresh-ttl', '2')
    or die "cannot start the mock: $!";

my $ready = <$fh>;
my ($port) = ($ready // '') =~ /^READY port=(\d+)/ or die "mock not ready";

END {
    # before the pipe is closed, which waits for the mock to exit
    kill 'TERM', $pid if $pid;
    close $fh;
}

my $http = HTTP::Tiny->new(timeout => 10);
my $base = "http://127.0.0.1:$port";
my $token_url = "$base/oauth/access_token/";

sub post {
    my ($form) = @_;
    return $http->request('POST', $token_url, {
        headers => { 'Content-Type' => 'application/x-www-form-urlencoded' },
        content => $form,
    });
}

sub get { $http->get($base . shift) }

sub error_of {
    my ($res) = @_;
    return ($res->{content} =~ /"error":\s*"(\w+)"/)[0] // '';
}

my $good = 'client_id=123456&client_secret=s3cr3t-pass&scope=client_address';

# --- success, POST and GET ------------------------------------------------

my $res = post($good);
is($res->{status}, 200, 'POST with the three fields: 200');
like($res->{content},
     qr/^\{"access_token":"TK[0-9a-f]{40}","token_type":"Bearer","expires_in":"300","refresh_token":"\*TK[0-9a-f]{40}"\}$/,
     'the reply has DQE\'s shape, expires_in as a string');

my ($token) = $res->{content} =~ /"access_token":"(TK[0-9a-f]+)"/;
my ($refresh) = $res->{content} =~ /"refresh_token":"(\*TK[0-9a-f]+)"/;

$res = get("/oauth/access_token/?$good");
is($res->{status}, 200, 'GET with the same fields as a query string: 200');

for my $secret ('s3cr3t-pass', 's3cr3t-pass-new') {
    $res = post("client_id=333333&client_secret=$secret&scope=client_address");
    is($res->{status}, 200, "licence 333333 (a rotation): $secret is valid");
}

# --- every error row of DQE's page ---------------------------------------

my @rows = (
    ['client_secret=abcd&scope=client_address', 400, 'invalid_request',
     'missing client_id'],
    ['client_secret=abcd&scope=client_address&client_id=', 400,
     'invalid_request', 'empty client_id'],
    ['client_secret=abcd&scope=client_address&client_id=000001', 400,
     'invalid_client', 'unknown licence'],
    ['client_secret=s3cr3t-pass&scope=client_address&client_id=999999', 400,
     'invalid_client', 'expired licence'],
    ['client_secret=wrong&scope=client_address&client_id=123456', 400,
     'invalid_client', 'wrong secret'],
    ['client_secret=s3cr3t-pass&scope=client_address&client_id=222222', 400,
     'unauthorized_client', 'licence not allowed the scope'],
    ['client_secret=s3cr3t-pass-ne&scope=client_address&client_id=333333',
     400, 'invalid_client', 'a licence of two secrets, neither given'],
    ['client_secret=s3cr3t-pass&scope=client&client_id=123456', 400,
     'unsupported_grant_type', 'unknown scope'],
    ['scope=client_address&client_id=123456', 400, 'invalid_request',
     'missing client_secret'],
    ['client_secret=&scope=client_address&client_id=123456', 400,
     'invalid_request', 'empty client_secret'],
    ['client_secret=abcd&client_id=123456', 400, 'invalid_request',
     'missing scope'],
    ['client_secret=abcd&scope=&client_id=123456', 400, 'invalid_request',
     'empty scope'],
    ['client_scret=abcd&scope=client_address&client_id=123456', 500, '',
     'parameter typo'],
);

for my $row (@rows) {
    my ($q, $status, $error, $name) = @$row;

    for my $method ('GET', 'POST') {
        $res = $method eq 'GET' ? get("/oauth/access_token/?$q") : post($q);
        is($res->{status}, $status, "$method $name: $status");
        is(error_of($res), $error, "$method $name: error \"$error\"")
            if $error;
    }
}

# --- the protected API ----------------------------------------------------

$res = $http->get("$base/api/address",
                  { headers => { Authorization => "Bearer $token" } });
is($res->{status}, 200, 'the API takes a live token it issued');

$res = $http->get("$base/api/address",
                  { headers => { Authorization => 'Bearer TKforged' } });
is($res->{status}, 401, 'and refuses another');

$res = $http->get("$base/api/address");
is($res->{status}, 401, 'and a request without a token');

# --- the refresh flow -------------------------------------------------------

$res = post("access_token=$token&refresh_token=%2A" . substr($refresh, 1)
            . "&scope=refresh_token");
is($res->{status}, 200, 'refresh: a new pair');
my ($token2) = $res->{content} =~ /"access_token":"(TK[0-9a-f]+)"/;
isnt($token2, $token, 'with a new access token');

$res = post("access_token=$token&refresh_token=%2A" . substr($refresh, 1)
            . "&scope=refresh_token");
is(error_of($res), 'invalid_grant', 'a refresh token is used once');

($refresh) = post($good)->{content} =~ /"refresh_token":"(\*TK[0-9a-f]+)"/;
sleep 2.2;
$res = post("access_token=x&refresh_token=%2A" . substr($refresh, 1)
            . "&scope=refresh_token");
is(error_of($res), 'invalid_grant', 'an expired refresh token is refused');

# --- controls and counters --------------------------------------------------

like(get('/__mock/stats')->{content},
     qr/"token_requests":\{"GET":\d+,"POST":\d+\}/, 'stats count by method');

get('/__mock/reset');
like(get('/__mock/stats')->{content},
     qr/"token_requests":\{"GET":0,"POST":0\}.*"tokens_issued":0/,
     'reset zeroes the counters');

get('/__mock/config?ttl=1&expires_in=number');
like(post($good)->{content}, qr/"expires_in":1[,}]/,
     'config: lifetime and a numeric expires_in');

($token) = post($good)->{content} =~ /"access_token":"(TK[0-9a-f]+)"/;
sleep 1.2;
is($http->get("$base/api/x",
              { headers => { Authorization => "Bearer $token" } })->{status},
   401, 'a token dies with its lifetime');

get('/__mock/reset');
($token) = post($good)->{content} =~ /"access_token":"(TK[0-9a-f]+)"/;
like(get('/__mock/revoke')->{content}, qr/"revoked":1/, 'revoke');
is($http->get("$base/api/x",
              { headers => { Authorization => "Bearer $token" } })->{status},
   401, 'a revoked token is refused');

get('/__mock/fault?status=503&body=down&count=1');
$res = post($good);
is("$res->{status} $res->{content}", '503 down', 'fault: status and body');
is(post($good)->{status}, 200, 'count=1: once only');

like(get('/__mock/stats?reset=1')->{content},
     qr/"token_requests":\{"GET":0,"POST":3\}.*"token_faults":1/,
     'stats?reset=1 answers the counts');
like(get('/__mock/stats')->{content}, qr/"token_requests":\{"GET":0,"POST":0\}/,
     'and resets them');

done_testing();
