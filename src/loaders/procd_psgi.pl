# mod_procd's PSGI loader, one file, core Perl only (Plack is not needed).
#
# Shipped inside mod_procd.so and written to the runtime dir by the manager,
# which starts it as: perl procd_psgi.pl (or `command=`, e.g. a perlbrew
# perl, or carton exec perl), with
#   fd 3   the group's listening socket (LISTEN_FDS=1)
#   fd 4   the status channel: we write READY; EOF means "drain and exit"
#   PROCD_APP                 the .psgi file of a mount; without it, each
#                             request's SCRIPT_FILENAME is loaded
#   PROCD_REQUEST_TIMEOUT_MS  a request running longer makes this process
#                             log its stack and exit (replaced); time
#                             blocked on Apache (sending to it, waiting for a
#                             BODY frame) does not count
#   PROCD_MAX_REQUESTS        after that many requests, write RECYCLE on fd 4 and
#                             serve on until EOF there (0: never)
# An exit in a request is a 500 and RECYCLE application-exit, not the end of
# the process under it (CORE::GLOBAL::exit, below); CORE::exit and
# POSIX::_exit still end it (Apache answers 502, the manager restarts it).
# One request at a time per process: Perl's threads are not fit for serving
# (configtest refuses threads= above 1 for perl); use processes=.
# A request that waited in the queue longer than its PROCD_QUEUE_TIMEOUT_MS
# (both in the REQUEST) was answered 503 by Apache: it is dropped unrun, with
# one line on stderr; so is one whose connection Apache has closed already,
# when that is seen (looked at past half the queue-timeout: before that
# Apache has answered nobody else, and a request whose client left is run).
# The frames and the launch contract are in src/protocol/PROTOCOL.md; the
# Python loader (procd_wsgi.py) is the reference this one mirrors.
#
# PSGI 1.1: psgi.input pulled lazily, psgi.errors to the group's log,
# psgi.streaming (delayed responses and the writer), psgix.harakiri (the
# process exits after the response; the manager starts another).

use strict;
use warnings;
use Socket qw(MSG_PEEK MSG_DONTWAIT);
use IO::Handle;
use IO::Socket::UNIX;
use IO::Select;
use POSIX ();
use Errno ();
use Time::HiRes ();
use Carp ();
use Scalar::Util ();
use File::Spec;
use Cwd ();
use overload ();

use constant {
    VERSION   => 1,
    REQUEST   => 0x01,
    BODY      => 0x02,
    HELLO     => 0x10,
    PULL      => 0x11,
    HEADERS   => 0x12,
    DATA      => 0x13,
    FLUSH     => 0x14,
    END_      => 0x15,
    ERROR     => 0x16,
    MAX_FRAME => 1 << 20,
};

$SIG{PIPE} = 'IGNORE';    # a vanished peer is an error return, not a death
STDOUT->autoflush(1);
STDERR->autoflush(1);

sub logline {
    my ($message) = @_;
    print STDERR "procd_psgi[$$]: $message\n";
}

# Client-controlled text for a log line: non-printable ASCII as \xNN.
sub printable {
    my ($text) = @_;
    $text = '' unless defined $text;
    utf8::encode($text) if utf8::is_utf8($text);
    $text =~ s/([^\x20-\x5b\x5d-\x7e])/sprintf("\\x%02x", ord $1)/ge;
    return $text;
}

sub now_ms { int(Time::HiRes::time() * 1000) }

# exit in a request (the application's, or a module's it calls) ends the
# request, not the process: the request gets a 500, the log a line, and
# this process asks to be recycled (RECYCLE application-exit), so the
# manager starts its replacement first, as for maximum-requests. Without
# this, exit ended the process under its request (Apache answered 502) and
# the manager saw a crash. As with mod_perl's exit, an eval of the
# application's own catches it; the process is recycled all the same. A
# process the application forked exits as usual. CORE::GLOBAL::exit is
# looked up when code is compiled: this comes before any application is.
our $in_request = 0;      # set while the application runs
our $exit_called;         # the status an exit in this request gave (main resets it)
my  $loader_pid = $$;
BEGIN {
    no warnings 'once';
    *CORE::GLOBAL::exit = sub (;$) {
        my $code = @_ ? $_[0] : 0;
        $code = 0 unless defined $code;
        if ($main::in_request && $$ == $loader_pid) {
            $main::exit_called = $code;
            die Procd::Exit->new($code);
        }
        CORE::exit($code);
    };
}

package Procd::Exit {
    sub new { my ($class, $code) = @_; bless { code => $code }, $class }
    use overload '""' => sub { "exit($_[0]{code})" }, fallback => 1;
}

# HELLO with this process's pid, made once (a system call fewer per
# request; the loader never forks).
our $HELLO_FRAME = pack('CNCN', HELLO, 5, VERSION, $$);

# ------------------------------------------------------------- the clock --
# How long a request has run, less the time blocked on Apache (a slow
# client): request-timeout measures the application.
package Procd::Clock {
    # $limit: seconds of the application's own time before SIGALRM (0: none).
    # The alarm is armed here and moved on after every wait on Apache that
    # was long enough to matter, so that it rings only once the application's
    # own time is over: an alarm that rang early would interrupt (EINTR) what
    # the application is waiting on and end its sleep or select early.
    sub new {
        my ($class, $limit) = @_;
        my $self = bless { start => Time::HiRes::time(), excluded => 0, blocked => undef, limit => $limit }, $class;
        Time::HiRes::alarm($limit) if $limit > 0;
        return $self;
    }
    sub block { $_[0]{blocked} = Time::HiRes::time() }

    sub unblock {
        my $self = shift;
        return unless defined $self->{blocked};
        my $waited = Time::HiRes::time() - $self->{blocked};
        $self->{excluded} += $waited;
        $self->{blocked} = undef;
        $self->rearm if $waited > 0.01;
    }

    # Seconds of the application's own time left before the limit.
    sub left { $_[0]{limit} - $_[0]->running }

    sub rearm {
        my $self = shift;
        return unless $self->{limit} > 0;
        my $left = $self->left;
        Time::HiRes::alarm($left > 0.01 ? $left : 0.01);
    }

    sub running {
        my ($self) = @_;
        my $now      = Time::HiRes::time();
        my $excluded = $self->{excluded};
        $excluded += $now - $self->{blocked} if defined $self->{blocked};
        return $now - $self->{start} - $excluded;
    }
}

# ----------------------------------------------------------------- frames --
package Procd::TransportError {
    sub new { my ($class, $why) = @_; bless { why => $why }, $class }
    sub throw { die $_[0]->new($_[1]) }
    sub why { $_[0]{why} }
}

package Procd::Connection {
    sub new {
        my ($class, $sock, $clock) = @_;
        return bless {
            sock   => $sock,
            clock  => $clock,
            inbox  => '',
            outbox => '',
            # HELLO rides along with the first frame we send anyway.
            hello => $main::HELLO_FRAME,
        }, $class;
    }

    sub queue {
        my ($self, $kind, $payload) = @_;
        $payload = '' unless defined $payload;
        $self->{outbox} .= pack('CN', $kind, length $payload) . $payload;
    }

    sub queue_data {
        my ($self, $data) = @_;
        for (my $at = 0; $at < length $data; $at += main::MAX_FRAME) {
            $self->queue(main::DATA, substr($data, $at, main::MAX_FRAME));
        }
    }

    sub send_queued {
        my ($self) = @_;
        return if $self->{outbox} eq '';
        my $data = $self->{outbox};
        $self->{outbox} = '';
        if (defined $self->{hello}) {
            $data = $self->{hello} . $data;
            $self->{hello} = undef;
        }
        $self->{clock}->block;
        my $off = 0;
        while ($off < length $data) {
            my $n = syswrite($self->{sock}, $data, length($data) - $off, $off);
            if (!defined $n) {
                next if $! == Errno::EINTR();
                if ($! == Errno::EAGAIN() || $! == Errno::EWOULDBLOCK()) {
                    my $w = '';
                    vec($w, fileno($self->{sock}), 1) = 1;
                    select(undef, $w, undef, undef);
                    next;
                }
                my $why = "$!";
                $self->{clock}->unblock;
                Procd::TransportError->throw("cannot send to Apache: $why");
            }
            $off += $n;
        }
        $self->{clock}->unblock;
    }

    sub send {
        my ($self, $kind, $payload) = @_;
        $self->queue($kind, $payload);
        $self->send_queued;
    }

    sub discard { $_[0]{outbox} = '' }

    sub fill {
        my ($self, $n) = @_;
        while (length $self->{inbox} < $n) {
            $self->{clock}->block;
            my $want = $n - length $self->{inbox};
            $want = 65536 if $want < 65536;
            # What is there, without blocking; else wait in select below. A
            # read blocked on a Unix socket is woken for nothing when Apache
            # reads what we sent (the PULL before a BODY).
            my $got;
            if (defined recv($self->{sock}, my $chunk, $want, Socket::MSG_DONTWAIT())) {
                $got = length $chunk;
                $self->{inbox} .= $chunk;
            }
            my $err = $!;
            $self->{clock}->unblock;
            if (!defined $got) {
                next if $err == Errno::EINTR();
                if ($err == Errno::EAGAIN() || $err == Errno::EWOULDBLOCK()) {
                    my $r = '';
                    vec($r, fileno($self->{sock}), 1) = 1;
                    $self->{clock}->block;
                    select($r, undef, undef, undef);
                    $self->{clock}->unblock;
                    next;
                }
                Procd::TransportError->throw("cannot read from Apache: $err");
            }
            Procd::TransportError->throw('Apache closed the connection') if $got == 0;
        }
    }

    sub receive {
        my ($self) = @_;
        $self->fill(5);
        my ($kind, $length) = unpack('CN', $self->{inbox});
        Procd::TransportError->throw("frame of $length bytes from Apache") if $length > main::MAX_FRAME;
        $self->fill(5 + $length);
        my $payload = substr($self->{inbox}, 5, $length);
        substr($self->{inbox}, 0, 5 + $length, '');
        return ($kind, $payload);
    }
}

# ------------------------------------------------------------ psgi.input --
# The request body, pulled from Apache only when the application reads.
package Procd::Input {
    sub new {
        my ($class, $conn, $length) = @_;
        return bless {
            conn      => $conn,
            remaining => $length,    # undef: unknown (chunked)
            buffer    => '',
            eof       => (defined $length && $length == 0) ? 1 : 0,
        }, $class;
    }

    sub _pull {
        my ($self, $want) = @_;
        return '' if $self->{eof};
        $want = $self->{remaining} if defined $self->{remaining} && $self->{remaining} < $want;
        $want = 1               if $want < 1;
        $want = main::MAX_FRAME if $want > main::MAX_FRAME;
        my $conn = $self->{conn};
        $conn->send(main::PULL, pack('N', $want));
        my ($kind, $payload) = $conn->receive;
        Procd::TransportError->throw(sprintf('expected BODY, got frame 0x%02x', $kind)) if $kind != main::BODY;
        if ($payload eq '') {
            $self->{eof} = 1;
        } elsif (defined $self->{remaining}) {
            $self->{remaining} -= length $payload;
            $self->{eof} = 1 if $self->{remaining} <= 0;
        }
        return $payload;
    }

    # read($buf, $length [, $offset]): like IO::Handle's; 0 at the end.
    sub read {
        my ($self, undef, $length, $offset) = @_;
        $offset //= 0;
        $length //= 65536;
        while (length $self->{buffer} < $length) {
            my $chunk = $self->_pull($length - length $self->{buffer});
            last if $chunk eq '';
            $self->{buffer} .= $chunk;
        }
        my $data = substr($self->{buffer}, 0, $length, '');
        $_[1] = '' unless defined $_[1];
        $_[1] .= "\0" x ($offset - length $_[1]) if $offset > length $_[1];
        substr($_[1], $offset) = $data;
        return length $data;
    }

    sub getline {
        my ($self) = @_;
        while (index($self->{buffer}, "\n") < 0) {
            my $chunk = $self->_pull(8192);
            last if $chunk eq '';
            $self->{buffer} .= $chunk;
        }
        return undef if $self->{buffer} eq '';
        my $end = index($self->{buffer}, "\n");
        $end = $end < 0 ? length $self->{buffer} : $end + 1;
        return substr($self->{buffer}, 0, $end, '');
    }

    sub getlines {
        my ($self) = @_;
        my @lines;
        while (defined(my $line = $self->getline)) { push @lines, $line }
        return @lines;
    }

    sub seek { 0 }    # not seekable: psgix.input.buffered is false
    sub close { 1 }
}

# ------------------------------------------------- psgi.streaming writer --
package Procd::Writer {
    sub new {
        my ($class, $conn) = @_;
        return bless { conn => $conn, closed => 0 }, $class;
    }

    sub write {
        my ($self, $data) = @_;
        die "write() after close() on the PSGI writer\n" if $self->{closed};
        return unless defined $data && length $data;
        main::check_bytes($data);
        my $conn = $self->{conn};
        $conn->queue_data($data);
        $conn->queue(main::FLUSH);
        $conn->send_queued;
        return;
    }

    sub close {
        my ($self) = @_;
        return if $self->{closed};
        $self->{closed} = 1;
        my $conn = $self->{conn};
        $conn->queue(main::END_);
        $conn->send_queued;
        return;
    }

    # psgi.nonblocking is false: there is no event loop to call back.
    sub poll_cb {
        my ($self, $cb) = @_;
        $cb->($self) until $self->{closed};
        return;
    }
}

package main;

# ----------------------------------------------------------- applications --

my %script_cache;    # resolved path -> [mtime, app]
my @script_roots = map { Cwd::realpath($_) // () } grep { m{^/} } split /\n/, ($ENV{PROCD_SCRIPT_ROOTS} // '');
my @script_exts  = grep { /^\./ } split ' ', ($ENV{PROCD_SCRIPT_EXTS} // '');

sub load_psgi {
    my ($file) = @_;
    $file = File::Spec->rel2abs($file);
    my ($volume, $directory) = File::Spec->splitpath($file);
    unshift @INC, $directory unless grep { $_ eq $directory } @INC;
    (my $package = $file) =~ s/([^A-Za-z0-9_])/sprintf("_%2x", ord $1)/ge;
    # Each file in a package of its own, like Plack::Util::load_psgi.
    my $app = eval sprintf(<<'END_EVAL', $package);
package Procd::Sandbox::%s;
{
    my $app = do $file;
    if (!$app && (my $error = $@ || $!)) { die $error; }
    $app;
}
END_EVAL
    die $@ if $@;
    $app = $app->to_app if Scalar::Util::blessed($app) && $app->can('to_app');
    die "$file does not return a PSGI application (a code reference), but " . (defined $app ? $app : 'undef') . "\n"
        unless ref $app eq 'CODE' || (Scalar::Util::blessed($app) && overload::Method($app, '&{}'));
    return $app;
}

my $mounted;

sub app_for_request {
    my ($env) = @_;
    return $mounted if $mounted;
    my $path = $env->{SCRIPT_FILENAME} // '';
    # Checked and then loaded by its resolved name: a link swapped in
    # between cannot redirect the load.
    my $real = Cwd::realpath($path) // $path;
    die "refusing to load '$path': it is not under a directory where this group is named by LanguageHandler ("
        . (join(', ', @script_roots) || 'none') . ")\n"
        unless grep { my $r = $_; $r =~ s{/$}{}; $real eq $_ || index($real, "$r/") == 0 } @script_roots;
    die "refusing to load '$path': its name does not end with an extension LanguageHandler maps to this group ("
        . (join(' ', @script_exts) || 'none') . ")\n"
        unless grep { my $e = lc $_; lc($real) =~ /\Q$e\E$/ } @script_exts;
    my $mtime = (stat $real)[9] // die "cannot stat '$path': $!\n";
    my $cached = $script_cache{$real};
    if (!$cached || $cached->[0] != $mtime) {
        $cached = [$mtime, load_psgi($real)];
        $script_cache{$real} = $cached;
    }
    return $cached->[1];
}

# -------------------------------------------------------------- requests --

# Why Apache no longer waits for this request, or undef. See PROTOCOL.md.
sub abandoned {
    my ($sock, $env) = @_;
    # Apache gives a request up only at its queue deadline, so a request
    # read well before it is answered by nobody else: the look at the
    # connection (one more system call) is made only past half the
    # queue-timeout.
    my ($queued_at, $timeout) = ($env->{PROCD_QUEUED_AT_MS} // '', $env->{PROCD_QUEUE_TIMEOUT_MS} // '');
    if ($queued_at =~ /^\d+$/ && $timeout =~ /^\d+$/) {
        my $waited = now_ms() - $queued_at;
        # Apache answers 503 at the deadline and closes just after: a request
        # read in that last moment counts as too old as well.
        if ($waited >= $timeout - 5) {
            return "it waited $waited ms in the queue, longer than queue-timeout ($timeout ms): Apache answered 503";
        }
        return undef if $waited < $timeout / 2;
    }
    my $peek = '';
    my $got  = recv($sock, $peek, 1, MSG_PEEK | MSG_DONTWAIT);
    if (defined $got && $peek eq '') {
        return 'Apache closed the connection before the request started (it answered 503 after queue-timeout)';
    }
    if (!defined $got && $! != Errno::EAGAIN() && $! != Errno::EWOULDBLOCK() && $! != Errno::EINTR()) {
        return "the connection is broken: $!";
    }
    return undef;
}

sub check_bytes {
    die "the response body must be bytes, not characters above \\xff (encode it)\n"
        if utf8::is_utf8($_[0]) && !utf8::downgrade(my $copy = $_[0], 1);
}

sub encode_pairs {
    my ($pairs) = @_;
    my @bytes = map {
        my $b = defined $_ ? "$_" : '';
        utf8::encode($b) if utf8::is_utf8($b) && !utf8::downgrade($b, 1);
        $b
    } @$pairs;
    return pack('N(N/a*)*', @$pairs / 2, @bytes);
}

sub status_code {
    my ($status) = @_;
    die "invalid status '" . ($status // 'undef') . "': a response status is 200 to 599\n"
        unless defined $status && $status =~ /^\d{3}$/ && $status >= 200 && $status <= 599;
    return 0 + $status;
}

sub headers_frame {
    my ($res) = @_;
    my $code    = status_code($res->[0]);
    my $headers = $res->[1] // [];
    die "response headers must be an array reference of name, value pairs\n"
        unless ref $headers eq 'ARRAY' && @$headers % 2 == 0;
    return pack('n', $code) . encode_pairs($headers);
}

my $threads = 1;

# Serves one connection: 1 if the application asked the process to exit
# afterwards (psgix.harakiri.commit). An exit in the request sets
# $exit_called, which main turns into RECYCLE application-exit, even if
# this then dies (the 500 could not be sent).
sub handle {
    my ($conn) = @_;
    # First, so that it is still set while the request's objects (the
    # environment, the body) are freed at the end: an exit in a DESTROY
    # there is caught too (Perl turns the die into an "(in cleanup)"
    # warning) and recycles the worker like any other.
    local $in_request = 1;
    my ($kind, $payload) = $conn->receive;
    Procd::TransportError->throw('expected a version ' . VERSION . ' REQUEST')
        if $kind != REQUEST || $payload eq '' || ord($payload) != VERSION;
    my @fields = split /\0/, substr($payload, 1), -1;
    pop @fields;
    pop @fields if @fields % 2;    # a name without its value
    my %env = @fields;
    my $env = \%env;
    if (my $why = abandoned($conn->{sock}, $env)) {
        die { dropped => ($env->{REQUEST_METHOD} // '?') . ' ' . printable($env->{REQUEST_URI} // '?') . ": $why" };
    }
    delete @env{qw(PROCD_QUEUED_AT_MS PROCD_QUEUE_TIMEOUT_MS HTTP_CONTENT_TYPE HTTP_CONTENT_LENGTH)};
    my $length = $env{CONTENT_LENGTH} // '';
    my $flag   = $env{HTTPS} // '';
    my $https  = ($env{REQUEST_SCHEME} // '') eq 'https' || $flag eq '1' || lc $flag eq 'on';
    $env{SCRIPT_NAME} //= '';
    $env{PATH_INFO}   //= '';
    if ($env{SCRIPT_NAME} eq '/') {    # PSGI's rule: the root mount is ""
        $env{SCRIPT_NAME} = '';
        $env{PATH_INFO} = '/' . ($env{PATH_INFO} =~ s{^/}{}r);
    }
    # One key at a time: copying %env into a new list and back cost more
    # than the rest of the request's set-up.
    $env{'psgi.version'}         = [1, 1];
    $env{'psgi.url_scheme'}      = $https ? 'https' : 'http';
    $env{'psgi.input'}           = Procd::Input->new($conn, $length =~ /^\d+$/ ? 0 + $length : undef);
    $env{'psgi.errors'}          = \*STDERR;
    $env{'psgi.multithread'}     = '';
    $env{'psgi.multiprocess'}    = 1;
    $env{'psgi.run_once'}        = '';
    $env{'psgi.nonblocking'}     = '';
    $env{'psgi.streaming'}       = 1;
    $env{'psgix.input.buffered'} = '';
    $env{'psgix.harakiri'}       = 1;

    my $trace;
    my $sent = 0;    # HEADERS is out
    my $done = 0;    # END is out
    my $ok   = eval {
        # The stack where the application died, for the log.
        local $SIG{__DIE__} = sub {
            $trace = Carp::longmess('died') unless ref $_[0] && ref $_[0] eq 'Procd::TransportError';
        };
        my $app = app_for_request($env);
        my $res = $app->($env);
        my $respond = sub {
            my ($r) = @_;
            die "the response must be an array reference [status, headers, body?]\n" unless ref $r eq 'ARRAY';
            die "the response was already started\n" if $sent;
            $conn->queue(HEADERS, headers_frame($r));
            $sent = 1;
            if (@$r < 3) {    # streaming: the writer sends the body
                $conn->send_queued;
                return Procd::Writer->new($conn);
            }
            send_body($conn, $r->[2]);
            $conn->queue(END_);
            $conn->send_queued;
            $done = 1;
            return;
        };
        if (ref $res eq 'CODE') {
            my $writer;
            # A delayed response: the app calls the responder (here, before
            # it returns: psgi.nonblocking is false).
            $res->(sub { $writer = $respond->(@_) });
            die "the delayed response never called the responder\n" unless $sent;
            $writer->close if $writer;
            $done = 1;
        } else {
            die "the application must return an array or a code reference, not " . (defined $res ? $res : 'undef') . "\n"
                unless ref $res eq 'ARRAY' && @$res == 3;
            $respond->($res);
        }
        unless ($done) {
            $conn->queue(END_);
            $conn->send_queued;
        }
        1;
    };
    my $harakiri = $env->{'psgix.harakiri.commit'} ? 1 : 0;
    if ($ok) {
        logline("the application called exit(" . printable($exit_called) . ") in " . printable($env->{REQUEST_METHOD})
              . " " . printable($env->{REQUEST_URI}) . " and caught it in an eval; this worker is recycled")
            if defined $exit_called;
        return $harakiri;
    }
    my $err = $@;
    die $err if ref $err && (ref $err eq 'Procd::TransportError' || ref $err eq 'HASH');
    my $message = defined $err ? "$err" : 'unknown error';
    $message =~ s/\s+$//;
    # By $exit_called, not the error's class: an exit while a script
    # compiles comes back as the string "exit(3)BEGIN failed--...".
    my $what = defined $exit_called
        ? "the application called exit(" . printable($exit_called) . ") (this worker is recycled)"
        : 'application error';
    logline("$what in " . printable($env->{REQUEST_METHOD}) . " " . printable($env->{REQUEST_URI}) . ":"
          . (ref $err eq 'Procd::Exit' ? '' : "\n$message") . ($trace ? "\nstack:$trace" : ''));
    my $text = substr($message, 0, 4096);
    utf8::encode($text) if utf8::is_utf8($text);
    $conn->discard;    # what the app had produced is not sent
    # Before the headers: a 500; after them, the response is cut.
    $conn->send(ERROR, pack('N', length $text) . $text);
    return $harakiri;
}

sub send_body {
    my ($conn, $body) = @_;
    if (ref $body eq 'ARRAY') {
        # An array is sent in one go.
        for my $chunk (@$body) {
            next unless defined $chunk && length $chunk;
            check_bytes($chunk);
            $conn->queue_data($chunk);
        }
        return;
    }
    my $is_handle = ref $body eq 'GLOB' || (Scalar::Util::blessed($body) && $body->can('getline'));
    die "the body must be an array reference or a file handle, not " . (defined $body ? $body : 'undef') . "\n"
        unless $is_handle;
    # A handle is streamed, each block flushed to the client as it comes.
    my $ok = eval {
        local $/ = \65536;
        while (defined(my $chunk = $body->getline)) {
            next unless length $chunk;
            check_bytes($chunk);
            $conn->queue_data($chunk);
            $conn->queue(FLUSH);
            $conn->send_queued;
        }
        1;
    };
    my $err = $@;
    $body->close if $body->can('close') || ref $body eq 'GLOB';
    die $err unless $ok;
}

# ---------------------------------------------------------------- serving --

# The next connection on the (non-blocking) listener, or undef: Perl's own
# accept, a plain handle (IO::Socket's accept builds an object through
# several method calls per request, for nothing this loader uses).
sub take {
    my ($listener) = @_;
    my $sock;
    return accept($sock, $listener) ? $sock : undef;
}

# Seconds to wait for the manager's answer to RECYCLE before draining anyway.
use constant RECYCLE_PATIENCE => 60;

sub main {
    # Frameworks (Mojolicious, Dancer2) read it; plackup's default adds
    # development middleware, a server's is "deployment". env= may set it.
    $ENV{PLACK_ENV} //= 'deployment';
    my $timeout      = ($ENV{PROCD_REQUEST_TIMEOUT_MS} // 0) / 1000;
    my $max_requests = $ENV{PROCD_MAX_REQUESTS} // 0;
    my $listener     = IO::Socket::UNIX->new_from_fd(3, 'r')
        or do { logline("fd 3 is not the group's listening socket: $!"); exit 1 };
    $listener->blocking(0);
    open(my $status, '+<&=', 4) or do { logline("fd 4 is not the status channel: $!"); exit 1 };
    $status->autoflush(1);

    my $app_path = $ENV{PROCD_APP};
    if (defined $app_path && $app_path ne '') {
        $mounted = eval { load_psgi($app_path) };
        if (!$mounted) {
            my $err = $@ // 'unknown error';
            $err =~ s/\s+$//;
            logline("cannot load the application $app_path:\n$err");
            exit 1;
        }
    }

    syswrite($status, "READY\n");
    my ($served, $dropped, $draining, $recycle_asked) = (0, 0, 0, 0);
    my $clock;
    # request-timeout (plus 1 s): the clock's alarm. It can still ring
    # during a wait on Apache (not counted: armed again) or a few ms before
    # the limit (the waits it excluded); otherwise log the stack and exit.
    local $SIG{ALRM} = sub {
        return unless $clock && $timeout > 0;
        if ($clock->left > 0.05) {
            $clock->rearm;
            return;
        }
        logline(sprintf("request-timeout (%d s) exceeded; this process exits so that the manager replaces it. "
                . "Stacks of all threads (one here):%s", $timeout, Carp::longmess('')));
        POSIX::_exit(3);
    };
    my $select = IO::Select->new($listener, $status);
    my $status_seen = Time::HiRes::time();
    while (1) {
        my $sock;
        # Under load a connection is usually waiting already: take it before
        # asking the kernel to wait (one system call fewer), but look at the
        # status channel at least every 0.5 s.
        $sock = take($listener) if !$draining && Time::HiRes::time() - $status_seen < 0.5;
        if (!$sock && !$draining) {
            my @ready = $select->can_read(0.5);
            $status_seen = Time::HiRes::time();
            if (grep { $_ == $status } @ready) {
                my $got = sysread($status, my $buf, 64);
                if (!$got) {    # EOF (or an error): drain and exit
                    $draining = 1;
                    $select->remove($status);
                }
            }
            next unless grep { $_ == $listener } @ready;
        }
        $sock //= take($listener);
        if (!$sock) {
            exit 0 if $draining;
            next;
        }
        # Blocking already: on Linux an accepted socket does not take the
        # listener's O_NONBLOCK.
        $clock = Procd::Clock->new($timeout > 0 ? $timeout + 1 : 0);
        my $conn = Procd::Connection->new($sock, $clock);
        my $harakiri = 0;
        my $counted  = 1;
        $exit_called = undef;
        eval { $harakiri = handle($conn); 1 } or do {
            my $err = $@;
            if (ref $err eq 'HASH' && $err->{dropped}) {
                $dropped++;
                logline("request dropped unrun ($dropped so far): $err->{dropped}");
                $counted = 0;
            } elsif (ref $err eq 'Procd::TransportError') {
                logline('request abandoned: ' . $err->why);
            } else {
                logline("internal error in the loader: $err");
            }
        };
        Time::HiRes::alarm(0);
        $clock = undef;
        close $sock;
        next unless $counted;
        $served++;
        # Harakiri first: it exits now, where a recycle would wait.
        if ($harakiri) {
            logline('psgix.harakiri.commit: the application asked this process to exit; exiting');
            exit 0;
        }
        # An exit recycles even if the request then failed another way.
        my $recycle = defined $exit_called ? 'application-exit'
            : $max_requests > 0 && $served == $max_requests ? 'maximum-requests' : undef;
        if ($recycle && !$recycle_asked) {
            # The manager starts a replacement and, once it is ready,
            # closes fd 4: then this process drains. Until then it serves.
            # RECYCLE goes out once (the protocol allows one).
            $recycle_asked = Time::HiRes::time();
            $draining = 1 unless syswrite($status, "RECYCLE $recycle\n");
        }
        # A manager that does not answer RECYCLE (an older build): drain anyway.
        $draining = 1 if $recycle_asked && Time::HiRes::time() - $recycle_asked > RECYCLE_PATIENCE;
    }
}

main();
