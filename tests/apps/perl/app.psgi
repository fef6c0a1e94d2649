# The PSGI app the tests mount (tests/perl.rs): one behaviour per PATH_INFO,
# under Plack::Middleware::Lint, so that every test also checks the loader
# against the PSGI spec.
use strict;
use warnings;
use Digest::SHA;
use JSON::PP;
use POSIX ();
use Time::HiRes ();
use Plack::Request;
use Plack::Response;
use Plack::Middleware::Lint;

# A body handle that is produced while it is sent.
package SlowBody {
    sub new { my ($class, $pause, @parts) = @_; bless { pause => $pause, parts => [@parts], n => 0 }, $class }
    sub getline {
        my $self = shift;
        return undef unless @{ $self->{parts} };
        sleep $self->{pause} if $self->{n}++;
        return shift @{ $self->{parts} };
    }
    sub close { }
}

# Streams until the client goes; says in the log when close was called.
package Forever {
    sub new { my ($class, $errors) = @_; bless { errors => $errors, sent => 0 }, $class }
    sub getline {
        my $self = shift;
        select(undef, undef, undef, 0.01) if $self->{sent}++;
        return 'x' x 65536;
    }
    sub close {
        my $self = shift;
        $self->{errors}->print("forever: closed after $self->{sent} chunks\n");
    }
}

package main;

sub text {
    my ($body, $status, @headers) = @_;
    return [$status // 200, ['Content-Type' => 'text/plain', @headers], [$body]];
}

my $app = sub {
    my $env   = shift;
    my $req   = Plack::Request->new($env);
    my $path  = $env->{PATH_INFO};
    my %query = map { split /=/, $_, 2 } grep { /=/ } split /&/, $env->{QUERY_STRING};
    if ($path eq '' || $path eq '/' || $path eq '/env' || $path =~ m{^/env/}) {
        my $body = '';
        while ($env->{'psgi.input'}->read(my $buf, 8192)) { $body .= $buf }
        my %out = map { $_ => $env->{$_} } grep { !ref $env->{$_} && defined $env->{$_} } keys %$env;
        $out{body}        = $body;
        $out{multithread} = $env->{'psgi.multithread'} ? 'true' : 'false';
        $out{streaming}   = $env->{'psgi.streaming'} ? 'true' : 'false';
        $out{harakiri}    = $env->{'psgix.harakiri'} ? 'true' : 'false';
        $out{uri}         = $req->uri->as_string;
        $out{base}        = $req->base->as_string;
        return [200, ['Content-Type' => 'application/json', 'Set-Cookie' => 'a=1; Path=/', 'Set-Cookie' => 'b=2; Path=/'],
            [JSON::PP->new->ascii->canonical->encode(\%out)]];
    }
    if ($path eq '/form') {
        my $form = $req->body_parameters;
        return text(join('&', map { "$_=" . $form->get($_) } sort keys %$form));
    }
    if ($path eq '/upload') {
        my ($sha, $total, $input) = (Digest::SHA->new(256), 0, $env->{'psgi.input'});
        while (my $n = $input->read(my $buf, 65536)) { $sha->add($buf); $total += $n }
        # then_sleep=S: wait S s after the body and say how long the wait
        # really lasted (a signal could cut it short).
        if (my $s = $query{then_sleep}) {
            my $t0 = Time::HiRes::time();
            select(undef, undef, undef, $s);
            return text($sha->hexdigest . " $total " . sprintf('slept=%.2f', Time::HiRes::time() - $t0));
        }
        return text($sha->hexdigest . " $total");
    }
    if ($path eq '/lines') {
        my @lines;
        while (defined(my $l = $env->{'psgi.input'}->getline)) { push @lines, $l }
        return text(scalar(@lines) . " lines");
    }
    if ($path eq '/stream') {
        # A delayed response with the writer.
        return sub {
            my $respond = shift;
            my $writer  = $respond->([200, ['Content-Type' => 'text/plain']]);
            $writer->write("first\n");
            sleep 1;
            $writer->write("second\n");
            $writer->close;
        };
    }
    if ($path eq '/delayed') {
        # A delayed response with the whole body.
        return sub { $_[0]->([200, ['Content-Type' => 'text/plain'], ["delayed body\n"]]) };
    }
    if ($path eq '/stream-handle') {
        return [200, ['Content-Type' => 'text/plain'], SlowBody->new(1, "first\n", "second\n")];
    }
    if ($path eq '/redirect') {
        my $res = Plack::Response->new;
        $res->redirect($req->base . '/env');
        return $res->finalize;
    }
    if ($path eq '/cookies') {
        my $seen = join ';', map { "$_=" . $req->cookies->{$_} } sort keys %{ $req->cookies };
        my $res  = Plack::Response->new(200, ['Content-Type' => 'text/plain'], "cookies: $seen");
        $res->cookies->{one} = { value => '1', path => $req->script_name . '/' };
        $res->cookies->{two} = { value => '2', path => '/', httponly => 1 };
        return $res->finalize;
    }
    if ($path eq '/big') {
        my $block = join('', map { chr } 0 .. 255) x 256;    # 64 KiB
        return [200, ['Content-Type' => 'application/octet-stream'], SlowBody->new(0, ($block) x (($query{mb} // 20) * 16))];
    }
    return text("too large\n", 413) if $path eq '/reject';
    if ($path eq '/sleep') {
        select(undef, undef, undef, $query{s} // 1);
        return text("slept\n");
    }
    if ($path eq '/record') {
        # One line per request the application really ran.
        open(my $f, '>>', $ENV{RECORD_FILE}) or die "RECORD_FILE: $!\n";
        print $f (($query{id} // '?') . "\n");
        close $f;
        select(undef, undef, undef, $query{s}) if $query{s};
        return text("recorded\n");
    }
    if ($path eq '/whoami') {
        select(undef, undef, undef, $query{s}) if $query{s};
        return text("gen=$ENV{PROCD_GENERATION} pid=$$\n");
    }
    if ($path eq '/harakiri') {
        $env->{'psgix.harakiri.commit'} = 1;
        return text("pid=$$\n");
    }
    if ($path eq '/stderr') {
        print STDERR "stderr line from the perl app\n";
        print STDOUT "stdout line from the perl app\n";
        $env->{'psgi.errors'}->print("psgi.errors line from the perl app\n");
        warn "warn line from the perl app\n";
        return text("logged\n");
    }
    exit 3 if $path eq '/exit';
    if ($path eq '/exit-caught') {
        eval { exit 0 };
        return text("caught pid=$$\n");
    }
    die "boom: secret detail\n" if $path eq '/raise';
    POSIX::_exit(7) if $path eq '/die';
    return text('x', 200, 'X-Bad' => "a\r\nInjected: yes") if $path eq '/bad-header';
    return [200, ['Content-Type' => 'application/octet-stream'], Forever->new($env->{'psgi.errors'})] if $path eq '/forever';
    return text("no such test\n", 404);
};

my $linted = Plack::Middleware::Lint->wrap($app);
# What Lint refuses on purpose: a header the loader passes on for Apache to refuse.
my $dispatch = sub { $_[0]{PATH_INFO} eq '/bad-header' ? $app->($_[0]) : $linted->($_[0]) };
$dispatch;
