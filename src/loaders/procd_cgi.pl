#!/usr/bin/perl
# mod_procd's CGI launcher: one per `language=cgi` group, running as the
# group's user, it runs one CGI script per request (RFC 3875), so that
# neither the root manager nor suexec forks on Apache's request path.
#
# The launch contract (src/protocol/PROTOCOL.md, "CGI launcher"):
#   fd 3   the group's listening Unix socket: accept on it
#   fd 4   the status channel: we write READY; EOF means "drain and exit"
#   fd 1,2 a pipe to the manager: each line goes to the group's error log
#   PROCD_SCRIPT_ROOTS        directories (one a line) scripts may be run from
#   PROCD_SCRIPT_EXTS         extensions a script's name may end with
#   PROCD_REQUEST_TIMEOUT_MS  a script running longer is killed with its
#                             process group
#
# Per connection: Apache sends one REQUEST frame (type 0x01, u32 length,
# u8 version 1, then NAME\0VALUE\0 pairs: the CGI environment), then the
# request body, CONTENT_LENGTH bytes, then shuts its side down. The
# launcher checks the script, forks, and the child runs it with the
# connection as stdin and stdout and the group's log as stderr, in a
# process group of its own. Apache reads the script's output until EOF.
# Core Perl only.

use strict;
use warnings;
use Cwd ();
use Errno ();
use IO::Handle;
use IO::Select;
use IO::Socket::UNIX;
use POSIX ();
use Time::HiRes ();

use constant {
    REQUEST   => 0x01,
    VERSION   => 1,
    MAX_FRAME => 1 << 20,
    # How long a connection may take to send its REQUEST frame.
    FRAME_TIMEOUT => 10,
};

STDERR->autoflush(1);
STDOUT->autoflush(1);
$SIG{PIPE} = 'IGNORE';

sub logline { my ($text) = @_; $text =~ s/[\x00-\x08\x0b-\x1f\x7f]/?/g; print STDERR "cgi launcher: $text\n" }

my @roots = map { Cwd::realpath($_) // () } grep { m{^/} } split /\n/, ($ENV{PROCD_SCRIPT_ROOTS} // '');
my @exts  = grep { /^\./ } split ' ', ($ENV{PROCD_SCRIPT_EXTS} // '');
my $timeout = ($ENV{PROCD_REQUEST_TIMEOUT_MS} // 0) / 1000;

# What every script inherits: the group's environment without ours.
my %base_env = map { $_ => $ENV{$_} } grep { !/^(PROCD_|LISTEN_)/ } keys %ENV;

# Reads exactly $n bytes from $sock within the deadline; undef on failure.
sub read_exact {
    my ($sock, $n, $deadline) = @_;
    my $buf = '';
    while (length $buf < $n) {
        my $left = $deadline - Time::HiRes::time();
        return undef if $left <= 0;
        my $r = '';
        vec($r, fileno($sock), 1) = 1;
        my $ready = select($r, undef, undef, $left);
        next if $ready < 0 && $! == Errno::EINTR();
        return undef if $ready <= 0;
        my $got = sysread($sock, $buf, $n - length $buf, length $buf);
        next if !defined $got && ($! == Errno::EINTR() || $! == Errno::EAGAIN());
        return undef if !$got;
    }
    return $buf;
}

# A short CGI answer of the launcher's own (the script never ran).
sub refuse {
    my ($sock, $status, $why) = @_;
    logline($why);
    syswrite($sock, "Status: $status\r\nContent-Type: text/plain\r\n\r\n$status\n");
}

# Why Apache no longer waits for this request (see PROTOCOL.md), or undef.
# (A peek cannot tell: Apache shuts its side down after the body anyway.)
sub abandoned {
    my ($env) = @_;
    my ($queued_at, $limit) = ($env->{PROCD_QUEUED_AT_MS} // '', $env->{PROCD_QUEUE_TIMEOUT_MS} // '');
    if ($queued_at =~ /^\d+$/ && $limit =~ /^\d+$/) {
        my $waited = int(Time::HiRes::time() * 1000) - $queued_at;
        return "it waited $waited ms in the queue, longer than queue-timeout ($limit ms): Apache answered 503"
            if $waited >= $limit - 5;
    }
    return undef;
}

# The script to run, checked: under a LanguageHandler directory, with a
# mapped extension, executable. (status, reason) on refusal.
sub script_for {
    my ($env) = @_;
    if (my $app = $ENV{PROCD_APP}) {
        # A mounted script (app=): the administrator named it.
        return (403, "'$app' is not executable by user " . (getpwuid($>) // $>) . ' (chmod +x it)') unless -x $app;
        return (0, $app);
    }
    my $path = $env->{SCRIPT_FILENAME} // '';
    my $real = Cwd::realpath($path);
    return (404, "script '$path' does not exist") unless defined $real && -f $real;
    return (403, "refusing to run '$path': it is not under a directory where this group is named by LanguageHandler ("
            . (join(', ', @roots) || 'none') . ')')
        unless grep { my $r = $_; $r =~ s{/$}{}; index($real, "$r/") == 0 } @roots;
    return (403, "refusing to run '$path': its name does not end with an extension LanguageHandler maps to this group ("
            . (join(' ', @exts) || 'none') . ')')
        unless grep { my $e = lc $_; lc($real) =~ /\Q$e\E$/ } @exts;
    return (403, "'$path' is not executable by user " . (getpwuid($>) // $>) . ' (chmod +x it)') unless -x $real;
    return (0, $real);
}

my %running;    # pid -> [deadline, what]

sub run_script {
    my ($sock, $env, $script) = @_;
    my $pid = fork;
    if (!defined $pid) {
        refuse($sock, 503, "cannot fork for $script: $!");
        return;
    }
    if ($pid == 0) {
        # The script: a process group of its own (killed as one at the
        # timeout), the connection as stdin and stdout, our stderr.
        POSIX::setpgid(0, 0);
        $SIG{PIPE} = 'DEFAULT';
        open(STDIN,  '<&', $sock) or POSIX::_exit(127);
        open(STDOUT, '>&', $sock) or POSIX::_exit(127);
        POSIX::close($_) for 3, 4, fileno($sock);
        my ($dir) = $script =~ m{^(.*)/};
        chdir($dir || '/');
        delete @$env{qw(PROCD_QUEUED_AT_MS PROCD_QUEUE_TIMEOUT_MS HTTP_PROXY)};
        %ENV = (%base_env, %$env);
        { exec { $script } $script; }
        my $why = "$!";
        print STDOUT "Status: 500\r\nContent-Type: text/plain\r\n\r\n500\n";
        print STDERR "cgi launcher: cannot run $script: $why (is its #! interpreter installed?)\n";
        POSIX::_exit(127);
    }
    my $what = ($env->{REQUEST_METHOD} // '?') . ' ' . ($env->{REQUEST_URI} // '?') . " ($script, pid $pid)";
    $running{$pid} = [$timeout > 0 ? Time::HiRes::time() + $timeout + 1 : 0, $what];
}

sub serve_connection {
    my ($sock) = @_;
    my $deadline = Time::HiRes::time() + FRAME_TIMEOUT;
    my $head = read_exact($sock, 5, $deadline) // return;
    my ($kind, $length) = unpack('CN', $head);
    if ($kind != REQUEST || $length < 1 || $length > MAX_FRAME) {
        logline("not a REQUEST frame from Apache (type $kind, $length bytes); connection closed");
        return;
    }
    my $payload = read_exact($sock, $length, $deadline) // return;
    if (ord($payload) != VERSION) {
        logline('REQUEST of an unknown version; connection closed');
        return;
    }
    my @fields = split /\0/, substr($payload, 1), -1;
    pop @fields;
    my %env;
    for (my $i = 0; $i + 1 < @fields; $i += 2) { $env{ $fields[$i] } = $fields[ $i + 1 ] }
    if (my $why = abandoned(\%env)) {
        logline('request dropped unrun: ' . ($env{REQUEST_METHOD} // '?') . ' ' . ($env{REQUEST_URI} // '?') . ": $why");
        return;
    }
    my ($status, $script) = script_for(\%env);
    if ($status) {
        refuse($sock, $status, $script);
        return;
    }
    run_script($sock, \%env, $script);
}

sub reap_and_enforce {
    while ((my $pid = waitpid(-1, POSIX::WNOHANG())) > 0) {
        delete $running{$pid};
    }
    my $now = Time::HiRes::time();
    for my $pid (keys %running) {
        my ($deadline, $what) = @{ $running{$pid} };
        next unless $deadline && $now > $deadline;
        logline(sprintf('request-timeout (%d s): killing %s and its process group', $timeout, $what));
        kill 'KILL', -$pid;
        kill 'KILL', $pid;
        $running{$pid}[0] = 0;
    }
}

sub main {
    my $listener = IO::Socket::UNIX->new_from_fd(3, 'r')
        or do { logline("fd 3 is not the group's listening socket: $!"); exit 1 };
    $listener->blocking(0);
    open(my $status, '+<&=', 4) or do { logline("fd 4 is not the status channel: $!"); exit 1 };
    syswrite($status, "READY\n");
    my $select   = IO::Select->new($listener, $status);
    my $draining = 0;
    while (1) {
        reap_and_enforce();
        if ($draining) {
            # Take what is queued, then wait for the scripts still running.
            my $sock = $listener->accept;
            if ($sock) { $sock->blocking(1); serve_connection($sock); close $sock; next }
            exit 0 unless %running;
            Time::HiRes::sleep(0.1);
            next;
        }
        my @ready = $select->can_read(0.2);
        if (grep { $_ == $status } @ready) {
            my $got = sysread($status, my $buf, 64);
            if (!$got) { $draining = 1; $select->remove($status) }
        }
        next unless grep { $_ == $listener } @ready;
        while (my $sock = $listener->accept) {
            $sock->blocking(1);
            serve_connection($sock);
            close $sock;
        }
    }
}

main();
