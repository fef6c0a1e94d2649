# mod_procd demo: Perl (PSGI), as user procd-demo-pl.
use strict;
use warnings;
my $app = sub {
    my ($env) = @_;
    my $user = getpwuid($>);
    return [200, ['Content-Type' => 'text/html; charset=utf-8'],
        ["<h1>Hello from PSGI</h1><p>Perl $^V, pid $$, user $user, mounted at '$env->{SCRIPT_NAME}'</p><p><a href=\"/\">back</a></p>"]];
};
$app;
