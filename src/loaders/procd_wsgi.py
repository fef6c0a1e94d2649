"""mod_procd's WSGI loader (PEP 3333), one stdlib-only file.

Shipped inside mod_procd.so and written to the runtime dir by the manager,
which starts it as: python3 procd_wsgi.py, with
  fd 3   the group's listening socket (LISTEN_FDS=1)
  fd 4   the status channel: we write READY; EOF means "drain and exit"
  PROCD_APP                 file defining `application` (mounts); without
                            it, each request's SCRIPT_FILENAME is loaded
  PROCD_THREADS             requests served at once by this process
  PROCD_REQUEST_TIMEOUT_MS  a request running longer makes this process
                            log every thread's stack and exit (replaced);
                            time blocked on Apache (sending to it, waiting
                            for a BODY frame) does not count: that is a
                            slow client, not the application
  PROCD_MAX_REQUESTS        after that many requests, write RECYCLE on fd 4 and
                            serve on until EOF there (0: never)
A request that waited in the queue longer than its PROCD_QUEUE_TIMEOUT_MS
(both in the REQUEST) was answered 503 by Apache: it is dropped unrun, with
one line on stderr; so is one whose connection Apache has closed already,
when that is seen (looked at past half the queue-timeout: before that
Apache has answered nobody else, and a request whose client left is run).
The frames and the launch contract (descriptors, environment, READY/EOF,
exit codes) are described in src/protocol/PROTOCOL.md.
"""

import importlib.machinery
import importlib.util
import os
import _socket
import select
import socket
import struct
import sys
import threading
import time
import traceback

VERSION = 1
REQUEST, BODY = 0x01, 0x02
HELLO, PULL, HEADERS, DATA, FLUSH, END, ERROR = 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16
MAX_FRAME = 1 << 20


class TransportError(Exception):
    """Apache (or the client behind it) went away; not the application's fault."""


class Dropped(Exception):
    """Apache no longer waits for this request: it is not run."""


def log(message):
    sys.stderr.write("procd_wsgi[%d]: %s\n" % (os.getpid(), message))
    sys.stderr.flush()


def printable(text):
    """Client-controlled text for a log line: non-printable ASCII as \\xNN."""
    return "".join(c if " " <= c <= "~" and c != "\\" else "\\x%02x" % (ord(c) & 0xFF) for c in text)


def abandoned(sock, queued_at, timeout):
    """Why Apache no longer waits for this request (it answered 503 after
    queue-timeout, or its client left), or None. See PROTOCOL.md.

    Apache gives a request up only at its queue deadline, so a request
    read well before it is answered by nobody else: the look at the
    connection (one more system call, and a GIL hand-off between this
    worker's threads) is made only past half the queue-timeout. `queued_at`
    and `timeout` are PROCD_QUEUED_AT_MS and PROCD_QUEUE_TIMEOUT_MS, as
    sent ("" if not)."""
    if queued_at.isdigit() and timeout.isdigit():
        waited, timeout = int(time.time() * 1000) - int(queued_at), int(timeout)
        # Apache answers 503 at the deadline and closes just after: a
        # request read in that last moment counts as too old as well.
        if waited >= timeout - 5:
            return "it waited %d ms in the queue, longer than queue-timeout (%d ms): Apache answered 503" % (
                waited, timeout)
        if waited < timeout // 2:
            return None
    try:
        if sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"":
            return "Apache closed the connection before the request started (it answered 503 after queue-timeout)"
    except (BlockingIOError, InterruptedError):
        pass  # open, nothing more to read: Apache waits for the answer
    except OSError as e:
        return "the connection is broken: %s" % e
    return None


class RequestClock:
    """How long a request has run, less the time blocked on Apache (sending
    while Apache writes to a slow client, waiting for a BODY frame while
    Apache reads a slow upload): request-timeout measures the application.

    Written by the request's thread, read by the watchdog thread: `blocked`
    is set before `excluded` grows and cleared after, and the watchdog reads
    `blocked` first, so a read in between only ever undercounts."""

    __slots__ = ("start", "excluded", "blocked")

    def __init__(self):
        self.start = time.monotonic()
        self.excluded = 0.0
        self.blocked = None  # monotonic time the current wait began

    def block(self):
        self.blocked = time.monotonic()

    def unblock(self):
        since = self.blocked
        if since is not None:
            self.excluded += time.monotonic() - since
            self.blocked = None

    def running(self, now):
        blocked = self.blocked
        excluded = self.excluded
        if blocked is not None:
            excluded += now - blocked
        return now - self.start - excluded

def encode_pairs(pairs):
    # Latin-1 (with "replace") gives one byte per character: the lengths
    # are the strings' own.
    pack = struct.pack
    out = [pack(">I", len(pairs))]
    for name, value in pairs:
        out.append(pack(">I", len(name)) + name.encode("latin-1", "replace") + pack(">I", len(value))
                   + value.encode("latin-1", "replace"))
    return b"".join(out)


# HELLO with this process's pid, made once (a system call and a GIL
# hand-off fewer per request; the loader never forks).
HELLO_FRAME = struct.pack(">BIBI", HELLO, 5, VERSION, os.getpid())


class Connection:
    """Frames over one connection. Outgoing frames are collected with
    `queue` and written by `send_queued`, in one system call unless the
    socket's buffer is full."""

    def __init__(self, sock, clock=None):
        self.sock = sock
        self.clock = clock or RequestClock()
        self.inbox = b""
        self.outbox = []
        # HELLO rides along with the first frame we send anyway (Apache knows
        # the request was taken when the kernel says we read it).
        self.hello = HELLO_FRAME
        self.poller = None  # made at the first read that has to wait

    def queue(self, kind, payload=b""):
        self.outbox.append(struct.pack(">BI", kind, len(payload)))
        self.outbox.append(payload)

    def queue_data(self, data):
        if len(data) <= MAX_FRAME:
            self.queue(DATA, data)
            return
        view = memoryview(data)
        for start in range(0, len(view), MAX_FRAME):
            self.queue(DATA, view[start:start + MAX_FRAME].tobytes())

    def send_queued(self):
        if not self.outbox:
            return
        data = b"".join(self.outbox)
        self.outbox = []
        if self.hello:
            data, self.hello = self.hello + data, None
        try:
            # Usually all of it fits the socket's buffer at once; only a
            # wait for Apache (a slow client) is kept off the request's clock.
            sent = self.sock.send(data, socket.MSG_DONTWAIT)
        except BlockingIOError:
            sent = 0
        except OSError as e:
            raise TransportError("cannot send to Apache: %s" % e)
        if sent == len(data):
            return
        self.clock.block()
        try:
            self.sock.sendall(memoryview(data)[sent:])
        except OSError as e:
            raise TransportError("cannot send to Apache: %s" % e)
        finally:
            self.clock.unblock()


    def send(self, kind, payload=b""):
        self.queue(kind, payload)
        self.send_queued()

    def _fill(self, n):
        while len(self.inbox) < n:
            try:
                chunk = self._recv(max(n - len(self.inbox), 1 << 16))
            except OSError as e:
                raise TransportError("cannot read from Apache: %s" % e)
            if not chunk:
                raise TransportError("Apache closed the connection")
            self.inbox += chunk

    def _recv(self, size):
        # What is there, without blocking; else wait in poll, off the
        # request's clock (a wait for Apache: a slow upload). A read
        # blocked on a Unix socket is woken for nothing when Apache reads
        # what we sent (the PULL before a BODY): poll waits for input only.
        while True:
            try:
                return self.sock.recv(size, socket.MSG_DONTWAIT)
            except BlockingIOError:
                pass
            if self.poller is None:
                self.poller = select.poll()
                self.poller.register(self.sock, select.POLLIN)
            self.clock.block()
            try:
                self.poller.poll()
            finally:
                self.clock.unblock()

    def receive(self):
        self._fill(5)
        kind, length = struct.unpack_from(">BI", self.inbox)
        if length > MAX_FRAME:
            raise TransportError("frame of %d bytes from Apache" % length)
        self._fill(5 + length)
        payload, self.inbox = self.inbox[5:5 + length], self.inbox[5 + length:]
        return kind, payload


# ------------------------------------------------------------ wsgi.input --

class Input:
    """The request body, pulled from Apache only when the application reads."""

    def __init__(self, conn, length):
        self.conn = conn
        self.remaining = length  # None: unknown (chunked)
        self.buffer = b""
        self.eof = length == 0

    def _pull(self, want):
        if self.eof:
            return b""
        if self.remaining is not None:
            want = min(want, self.remaining)
        want = max(1, min(want, MAX_FRAME))
        self.conn.send(PULL, struct.pack(">I", want))
        kind, payload = self.conn.receive()
        if kind != BODY:
            raise TransportError("expected BODY, got frame 0x%02x" % kind)
        if not payload:
            self.eof = True
        elif self.remaining is not None:
            self.remaining -= len(payload)
            if self.remaining <= 0:
                self.eof = True
        return payload

    def read(self, size=-1):
        if size is None or size < 0:
            parts = [self.buffer]
            self.buffer = b""
            while True:
                chunk = self._pull(1 << 16)
                if not chunk:
                    return b"".join(parts)
                parts.append(chunk)
        while len(self.buffer) < size:
            chunk = self._pull(max(size - len(self.buffer), 8192))
            if not chunk:
                break
            self.buffer += chunk
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def readline(self, size=-1):
        while b"\n" not in self.buffer and (size is None or size < 0 or len(self.buffer) < size):
            chunk = self._pull(8192)
            if not chunk:
                break
            self.buffer += chunk
        end = self.buffer.find(b"\n") + 1 or len(self.buffer)
        if size is not None and size >= 0:
            end = min(end, size)
        line, self.buffer = self.buffer[:end], self.buffer[end:]
        return line

    def readlines(self, hint=-1):
        lines, total = [], 0
        while True:
            line = self.readline()
            if not line:
                return lines
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                return lines

    def __iter__(self):
        return self

    def __next__(self):
        line = self.readline()
        if not line:
            raise StopIteration
        return line


class FileWrapper:
    """wsgi.file_wrapper: streams a file-like object in blocks."""

    def __init__(self, filelike, blksize=8192):
        self.filelike = filelike
        self.blksize = blksize
        if hasattr(filelike, "close"):
            self.close = filelike.close

    def __iter__(self):
        while True:
            data = self.filelike.read(self.blksize)
            if not data:
                return
            yield data


# ---------------------------------------------------------- applications --

class Applications:
    """The mounted app (PROCD_APP), or per-file scripts cached by mtime."""

    def __init__(self, app_path):
        self.app_path = app_path
        # Where per-request scripts may be (the directories where the group
        # is named by LanguageHandler): whoever can connect to the group's
        # socket must not make it load any other file.
        roots = os.environ.get("PROCD_SCRIPT_ROOTS", "")
        self.roots = [os.path.realpath(r) for r in roots.split("\n") if r.startswith("/")]
        self.extensions = tuple(e for e in os.environ.get("PROCD_SCRIPT_EXTS", "").split() if e.startswith("."))
        self.cache = {}
        self.lock = threading.Lock()
        self.mounted = self.load(app_path) if app_path else None

    @staticmethod
    def load(path):
        directory = os.path.dirname(os.path.abspath(path))
        if directory not in sys.path:
            sys.path.insert(0, directory)
        name = "_procd_app_%x" % (hash(path) & 0xFFFFFFFF)
        # Any file name (app.wsgi, index.py): load it as Python source.
        spec = importlib.util.spec_from_loader(name, importlib.machinery.SourceFileLoader(name, path))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        app = getattr(module, "application", None)
        if app is None:
            raise ImportError("%s defines no `application`" % path)
        return app

    def for_request(self, environ):
        if self.mounted is not None:
            return self.mounted
        path = environ.get("SCRIPT_FILENAME", "")
        # Checked and then loaded by its resolved name: a link swapped in
        # between cannot redirect the load.
        real = os.path.realpath(path)
        if not any(real == r or real.startswith(r.rstrip("/") + "/") for r in self.roots):
            raise PermissionError(
                "refusing to load %r: it is not under a directory where this group is named by "
                "LanguageHandler (%s)" % (path, ", ".join(self.roots) or "none"))
        if not os.path.basename(real).lower().endswith(self.extensions or ("\0",)):
            raise PermissionError(
                "refusing to load %r: its name does not end with an extension LanguageHandler maps to "
                "this group (%s)" % (path, " ".join(self.extensions) or "none"))
        path = real
        mtime = os.stat(path).st_mtime
        with self.lock:
            cached = self.cache.get(path)
            if cached is None or cached[0] != mtime:
                cached = (mtime, self.load(path))
                self.cache[path] = cached
            return cached[1]


# --------------------------------------------------------------- requests --

def status_code(status):
    if not isinstance(status, str) or len(status) < 4 or not status[:3].isdigit() or status[3] != " ":
        raise ValueError("invalid status %r: expected '200 OK'" % (status,))
    code = int(status[:3])
    if not 200 <= code <= 599:
        # Apache refuses interim (1xx) and out-of-range statuses with a 502.
        raise ValueError("invalid status %r: a response status is 200 to 599" % (status,))
    return code


def handle(conn, apps, threads):
    kind, payload = conn.receive()
    if kind != REQUEST or not payload or payload[0] != VERSION:
        raise TransportError("expected a version %d REQUEST" % VERSION)
    fields = iter(payload[1:].decode("latin-1").split("\0"))
    environ = dict(zip(fields, fields))  # name, value, name, value, ..., ""
    why = abandoned(conn.sock, environ.pop("PROCD_QUEUED_AT_MS", ""), environ.pop("PROCD_QUEUE_TIMEOUT_MS", ""))
    if why:
        raise Dropped("%s %s: %s" % (environ.get("REQUEST_METHOD", "?"), printable(environ.get("REQUEST_URI", "?")), why))
    length = environ.get("CONTENT_LENGTH", "")
    https = environ.get("HTTPS", "off").lower() in ("on", "1") or environ.get("REQUEST_SCHEME") == "https"
    environ.update({
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": "https" if https else "http",
        "wsgi.input": Input(conn, int(length) if length.isdigit() else None),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": threads > 1,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.file_wrapper": FileWrapper,
    })
    state = {"status": None, "code": 0, "headers": None, "sent": False}

    def send_headers():
        conn.queue(HEADERS, struct.pack(">H", state["code"]) + encode_pairs(state["headers"]))
        state["sent"] = True

    def write(data):
        if state["status"] is None:
            raise AssertionError("write() before start_response()")
        if not isinstance(data, bytes):
            raise TypeError("the application must give bytes, not %s" % type(data).__name__)
        if not state["sent"]:
            send_headers()
        if data:
            conn.queue_data(data)
            conn.queue(FLUSH)
        conn.send_queued()

    def start_response(status, response_headers, exc_info=None):
        if exc_info:
            try:
                if state["sent"]:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif state["status"] is not None:
            raise AssertionError("start_response() called twice without exc_info")
        code = status_code(status)
        for pair in response_headers:
            if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[0], str)
                    and isinstance(pair[1], str)):
                raise TypeError("response headers must be (str, str) tuples, got %r" % (pair,))
        state["status"], state["code"], state["headers"] = status, code, list(response_headers)
        return write

    try:
        app = apps.for_request(environ)
        result = app(environ, start_response)
        try:
            stream = not isinstance(result, (list, tuple))
            for chunk in result:
                if not isinstance(chunk, bytes):
                    raise TypeError("the application must yield bytes, not %s" % type(chunk).__name__)
                if not chunk:
                    continue
                if not state["sent"]:
                    if state["status"] is None:
                        raise AssertionError("the application yielded data before start_response()")
                    send_headers()
                conn.queue_data(chunk)
                if stream:
                    # Each block of a streamed response goes out at once.
                    conn.queue(FLUSH)
                    conn.send_queued()
            if not state["sent"]:
                if state["status"] is None:
                    raise AssertionError("the application returned without calling start_response()")
                send_headers()
        finally:
            if hasattr(result, "close"):
                result.close()
        conn.queue(END)
        conn.send_queued()
    except TransportError:
        raise
    except (Exception, SystemExit) as e:
        # sys.exit() in a request is answered like any other failure; the
        # process then asks to be recycled (the caller sees True), so it
        # ends as asked without ending a request of another thread.
        exits = isinstance(e, SystemExit)
        what = "the application called sys.exit() (this worker is recycled)" if exits else "application error"
        log("%s in %s %s:\n%s" % (what, environ.get("REQUEST_METHOD"), printable(environ.get("REQUEST_URI", "")),
                                  traceback.format_exc().rstrip()))
        message = ("%s: %s" % (type(e).__name__, e)).encode("utf-8", "replace")[:4096]
        conn.outbox = []  # what the app had produced is not sent
        try:
            conn.send(ERROR, struct.pack(">I", len(message)) + message)
        except TransportError as t:
            if not exits:
                raise
            log("request abandoned: %s" % t)  # the exit is still honoured
        return exits
    return False


# ----------------------------------------------------------------- serving --

# Seconds to wait for the manager's answer to RECYCLE before draining anyway.
RECYCLE_PATIENCE = 60.0


class Intake:
    """Which of this process's threads may take a new request (intake=gil).

    Under the GIL one thread runs Python at a time, so a request taken while
    another one computes only shares the CPU with it, and both finish later
    (the threads hand the GIL over at each blocking call and every switch
    interval). While this process's requests only compute, it takes them
    one at a time: only one of its threads waits for a connection, and only
    while none runs, so a new connection wakes an idle process, not a
    thread of this busy one, and the rest wait in the group's socket, first
    come first served. Once a request is seen asleep in the kernel (waiting
    on a database, a file, a slow client, time.sleep) or has run past LONG,
    the process takes requests on all its threads, up to threads= at once,
    for SLOW_FOR.

    One idle thread watches: QUICK after a request began, then every
    LOOK_EVERY while requests run or come, it looks (in /proc) at the
    threads of the requests that have run QUICK or longer (thread_state).
    A thread in a system call other than futex is asleep. One in futex
    waits for the GIL or a lock, which another thread of this process
    holds: it counts as asleep only if the next look finds it there again
    and it has not run in between. Each
    look wakes the watcher once, and takes the GIL from the request that
    runs, so looks are rare (LOOK_EVERY): a request that sleeps only now and
    then is caught at a later look, a later request, and a process whose
    requests sleep is soon taking them side by side.

    A request that computes *without* the GIL (numpy, hashlib, zlib, bcrypt
    release it) leaves the CPU to a second one, so it counts as asleep too.
    The watcher's own wake-up tells: it needs the GIL to look, and a request
    that computes in Python holds it until the interpreter makes it let go
    (sys.getswitchinterval(), 5 ms), while one that computes in C without it
    leaves it free. A request whose thread runs at a look the watcher woke
    for within GIL_FREE (or half the switch interval, if the app set it
    lower) of its time, and again at the next such look with at least half
    the time between on a CPU (the thread's CPU clock), computes without the
    GIL. (A request that only waits for a CPU, or for the GIL after a system
    call, gathers no CPU time meanwhile.)"""

    QUICK = 0.001
    LOOK_EVERY = 0.004
    LONG = 0.1
    SLOW_FOR = 1.0
    # The watcher got the GIL at once: no request held it.
    GIL_FREE = 0.001

    def __init__(self):
        # begin, done and a turn free at once take the plain lock: the
        # Condition's own methods are Python code, a tenth of a hello
        # request's GIL time when every step went through them (py-spy).
        self.lock = threading.Lock()
        self.cond = threading.Condition(self.lock)
        self.running = []  # (start time, native thread id) of each request in progress
        self.begun = 0  # requests begun so far
        self.slow_until = 0.0
        self.watcher = False  # a waiting thread looks every LOOK_EVERY
        self.next_look = 0.0
        self.seen_begun = 0  # self.begun at the last look
        self.in_futex = {}  # request -> run count of its thread, seen in futex at the last look
        self.gil_free = {}  # request -> (CPU ns of its thread, when): seen running at the last look, the GIL free
        self.turn_taken = False  # a thread waits for a connection (one at a time)

    def wait_turn(self, draining):
        """Waits until this thread may wait for a connection and take it:
        while requests only compute, one thread of the process at a time,
        and only while none runs (so a connection wakes another process, not
        a thread of this busy one). Returns whether it holds that turn."""
        with self.lock:
            # Under load the thread that just ended a request finds the turn
            # free: it takes it without a wait.
            if (not self.running and not self.turn_taken and not draining.is_set()
                    and time.monotonic() >= self.slow_until):
                self.turn_taken = True
                return True
        with self.cond:
            watching = False
            asked = None  # when the last wait was to end, for a look
            try:
                while True:
                    now = time.monotonic()
                    # How late the watcher woke for its look: a request
                    # computing in Python held the GIL it needed.
                    gil_free = (asked is not None
                                and 0 <= now - asked < min(self.GIL_FREE, sys.getswitchinterval() / 2))
                    asked = None
                    if now < self.slow_until or draining.is_set():
                        return False
                    if not self.running and not self.turn_taken:
                        self.turn_taken = True
                        return True
                    if not watching:
                        if not self.running or self.watcher:
                            self.cond.wait(0.5)  # and looks at draining
                            continue
                        self.watcher = watching = True
                        youngest = max(token[0] for token in self.running)
                        self.next_look = max(self.next_look, youngest + self.QUICK)
                        self.seen_begun = self.begun
                    if now >= self.next_look:
                        if not self.running and self.begun == self.seen_begun:
                            # Nothing began since the last look: idle. The
                            # next request wakes a watcher (begin).
                            self.watcher = watching = False
                            self.in_futex = {}
                            self.gil_free = {}
                            continue
                        self.seen_begun = self.begun
                        if self.sees_one_asleep(now, gil_free):
                            self.slow_until = now + self.SLOW_FOR
                            self.in_futex = {}
                            self.gil_free = {}
                            self.cond.notify_all()  # every waiting thread may go
                            return False
                        self.next_look = now + self.LOOK_EVERY
                    # The look itself may have waited for the GIL (it is
                    # later than `now`): only a wait that lets go of the GIL
                    # and ends on time tells how soon the GIL comes back.
                    wait = self.next_look - time.monotonic()
                    asked = self.next_look if wait > 0 else None
                    self.cond.wait(wait)
            finally:
                if watching:
                    self.watcher = False
                    self.cond.notify()  # another waiter watches now

    @staticmethod
    def thread_started(tid):
        thread_files(tid)

    def begin(self, turn, tid, clock):
        """A connection was taken by thread `tid` (its native id; `clock`:
        its CPU clock, or None): its request is in progress."""
        with self.lock:
            if turn:
                self.turn_taken = False
            token = (time.monotonic(), tid, clock)
            self.running.append(token)
            self.begun += 1
            if not self.watcher:
                self.cond.notify()  # a waiting thread watches this request
            return token

    def poll_for(self, turn):
        """How long a thread waits for a connection before it asks for its
        turn again: one that took requests side by side only until that
        time ends."""
        if turn:
            return 0.5
        return min(0.5, max(0.001, self.slow_until - time.monotonic()))

    def give_back(self, turn):
        """No connection was there after all."""
        if turn:
            with self.lock:
                self.turn_taken = False
                self.cond.notify()

    def sees_one_asleep(self, now, gil_free):
        """Whether a request in progress for QUICK or longer has run past
        LONG, or its thread is asleep in a system call, or was in futex at
        the last look and still is without having run in between, or
        computes without the GIL (`gil_free`: the watcher got the GIL at
        once for this look)."""
        in_futex = {}
        seen_free = {}
        for token in self.running:
            start, tid, clock = token
            if now - start < self.QUICK:
                continue
            if now - start >= self.LONG:
                return True
            state, runs = thread_state(tid)
            if state == "asleep":
                return True
            if state == "futex" and runs:  # 0: schedstat cannot tell
                if self.in_futex.get(token) == runs:
                    return True
                in_futex[token] = runs
            if state == "run" and gil_free:
                cpu = thread_cpu_ns(clock)
                if cpu is not None:
                    last = self.gil_free.get(token)
                    if last is not None and cpu - last[0] >= (now - last[1]) * 0.5e9:
                        return True
                    seen_free[token] = (cpu, now)
        self.in_futex = in_futex
        self.gil_free = seen_free
        return False

    def done(self, token):
        with self.lock:
            self.running.remove(token)


class AllThreads:
    """Every thread takes requests (intake=threads, threads=1, or no GIL)."""

    @staticmethod
    def wait_turn(draining):
        return False

    @staticmethod
    def thread_started(tid):
        pass

    @staticmethod
    def begin(turn, tid, clock):
        return None

    @staticmethod
    def poll_for(turn):
        return 0.5

    @staticmethod
    def give_back(turn):
        pass

    @staticmethod
    def done(token):
        pass


def futex_numbers():
    """The futex system calls' numbers for this interpreter (on 32-bit ones
    also futex_time64; a 32-bit python on a 64-bit kernel makes the 32-bit
    calls): a thread in one waits for the GIL or a lock. None where not
    known: then every system call counts as futex (see Intake)."""
    machine = os.uname().machine
    if struct.calcsize("P") == 4:
        if "x32" in getattr(sys.implementation, "_multiarch", ""):
            return None
        if machine in ("x86_64", "aarch64", "arm64", "i686", "i586", "i386", "armv7l", "armv8l"):
            return (b"240", b"422")
        return None
    return {"x86_64": (b"202",), "aarch64": (b"98",), "arm64": (b"98",), "riscv64": (b"98",),
            "ppc64le": (b"221",), "s390x": (b"238",)}.get(machine)


FUTEX = futex_numbers()


# Native thread id -> (fd of its syscall file, fd of its schedstat file or
# None), or None where they cannot be opened.
THREAD_FILES = {}
THREAD_FILES_UNREADABLE = []  # not empty once that was logged


def thread_state(tid):
    """What a thread of this process does, by /proc/self/task/TID/syscall:
    "run" (on a CPU or waiting for one), "asleep" (in a system call other
    than futex, or in the kernel outside one: a page from disk), "futex"
    (waiting for the GIL or a lock) with how many times it has been put on
    a CPU (schedstat; 0 if unknown), or "unknown" if /proc cannot tell (a
    process made not dumpable, whose /proc files only root may read): then
    only LONG lets the process take requests side by side. The files stay
    open, and a file that cannot be opened is not tried again: a look is
    one or two system calls."""
    fds = thread_files(tid)
    if fds is None:
        return "unknown", 0
    try:
        call = os.pread(fds[0], 64, 0).split(None, 1)[0]
    except (OSError, IndexError):
        return "unknown", 0
    if call == b"running":
        return "run", 0
    if FUTEX is not None and call not in FUTEX:
        return "asleep", 0
    try:
        runs = int(os.pread(fds[1], 128, 0).split()[2])
    except (OSError, TypeError, ValueError, IndexError):
        runs = 0
    return "futex", runs


def thread_files(tid):
    """The thread's /proc syscall and schedstat files, opened once, when the
    thread starts (so that a worker's descriptors stay as they were once its
    threads have started): (syscall fd, schedstat fd or None), or None if
    the syscall file cannot be opened (said once in the log)."""
    fds = THREAD_FILES.get(tid, False)
    if fds is False:
        base = "/proc/self/task/%d/" % tid
        try:
            syscall = os.open(base + "syscall", os.O_RDONLY | os.O_CLOEXEC)
        except OSError as e:
            fds = None
            if not THREAD_FILES_UNREADABLE:
                THREAD_FILES_UNREADABLE.append(tid)
                log("intake=gil cannot see what its requests do (%s): a request counts as asleep only after "
                    "%.1f s" % (e, Intake.LONG))
        else:
            fds = (syscall, open_or_none(base + "schedstat"))
        THREAD_FILES[tid] = fds
    return fds


def thread_cpu_ns(clock):
    """How long a thread has been on a CPU (ns), by its CPU clock (exact
    for a running thread, where schedstat moves only at scheduler ticks):
    None if unknown."""
    if clock is None:
        return None
    try:
        return time.clock_gettime_ns(clock)
    except OSError:
        return None


def room_for_threads(threads):
    """Raises the soft limit on open files, within the hard one, to what the
    request threads hold at most (each: its epoll, its /proc files with
    intake=gil, a request's connection and a file or two) with room for the
    app: threads=1024 would not fit the usual 1024."""
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = threads * 6 + 256
        if soft != resource.RLIM_INFINITY and soft < want:
            new = want if hard == resource.RLIM_INFINITY else min(want, hard)
            if new > soft:
                resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    except (ImportError, ValueError, OSError):
        pass


def open_or_none(path):
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None


class Worker:
    def __init__(self):
        self.threads = max(1, int(os.environ.get("PROCD_THREADS", "1")))
        room_for_threads(self.threads)
        self.timeout = int(os.environ.get("PROCD_REQUEST_TIMEOUT_MS", "0")) / 1000.0
        self.max_requests = int(os.environ.get("PROCD_MAX_REQUESTS", "0"))
        self.listener = socket.socket(fileno=3)
        self.listener.setblocking(False)
        self.draining = threading.Event()
        # Readable once draining: wakes every thread waiting in poll, so
        # none takes a new connection after EOF on fd 4 (the listener is
        # shared with this worker's replacement).
        self.wake_r, self.wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self.started = {}  # thread name -> RequestClock of its current request
        self.names = {}  # thread ident -> the name it started with (an app may rename its thread)
        self.served = 0
        self.recycle_asked = None  # when RECYCLE was sent
        self.stuck = None  # threads past request-timeout, once seen
        self.stuck_at = 0.0
        self.dropped = 0
        self.lock = threading.Lock()
        self.apps = Applications(os.environ.get("PROCD_APP") or None)
        # intake=gil (PROCD_INTAKE=gil, the default): while requests only
        # compute, one at a time; else every thread takes requests. A
        # process of one thread takes one at a time anyway, and a
        # free-threaded Python (3.13t) has no GIL to wait for.
        gil = (os.environ.get("PROCD_INTAKE") == "gil" and self.threads > 1
               and getattr(sys, "_is_gil_enabled", lambda: True)())
        self.intake = Intake() if gil else AllThreads()

    def serve_one(self, sock, name):
        # take() gives a blocking socket (the default timeout is None
        # unless the app changed it); setblocking(True) here was one more
        # system call per request, made only where that is not so.
        if sock.gettimeout() is not None:
            sock.setblocking(True)
        clock = RequestClock()
        self.started[name] = clock
        conn = Connection(sock, clock)
        exits = False
        try:
            exits = handle(conn, self.apps, self.threads)
        except Dropped as e:
            with self.lock:
                self.dropped += 1
                dropped = self.dropped
            log("request dropped unrun (%d so far): %s" % (dropped, e))
            return
        except TransportError as e:
            log("request abandoned: %s" % e)
        except BaseException:
            # Never let anything end this thread's accept loop (a
            # BaseException too: a lost thread is a lost request slot).
            log("internal error in the loader:\n%s" % traceback.format_exc().rstrip())
        finally:
            sock.close()
            self.started.pop(name, None)
        with self.lock:
            self.served += 1
            if exits:
                self.ask_recycle(b"application-exit")
            elif self.max_requests and self.served == self.max_requests:
                self.ask_recycle(b"maximum-requests")

    def ask_recycle(self, reason):
        """Send RECYCLE once (the protocol allows one): the manager starts a
        replacement and, once it is ready, closes fd 4; then this process
        drains. Until then it serves, so the group never lacks a worker."""
        if self.recycle_asked is not None:
            return
        self.recycle_asked = time.monotonic()
        try:
            os.write(4, b"RECYCLE " + reason + b"\n")
        except OSError:
            self.drain()

    def drain(self):
        """Finish what is held, serve what is already queued, then end."""
        if not self.draining.is_set():
            self.draining.set()
            try:
                os.write(self.wake_w, b"x")
            except OSError:
                pass

    def take(self, poller, wait):
        """The socket of a connection waiting in the group's queue, or None.
        Under load one usually waits already: it is taken at once, with no
        poll (one system call, and one release of the GIL, fewer). Else
        this waits up to `wait` seconds for one (`None`: no wait)."""
        try:
            fd, _ = self.listener._accept()
        except (BlockingIOError, InterruptedError):
            if wait is None or not poller.poll(wait) or self.draining.is_set():
                return None
            try:
                fd, _ = self.listener._accept()
            except (BlockingIOError, InterruptedError):
                return None  # another thread or process was first
        # socket.accept() wraps the descriptor in a socket.socket, whose
        # Python __init__ and family/type enum lookups were a sixth of this
        # process's GIL time per request (py-spy --gil, hello app): the
        # C-level socket does all we need. It is blocking, as the default
        # timeout is None (see serve_one).
        try:
            return _socket.socket(socket.AF_UNIX, socket.SOCK_STREAM, 0, fd)
        except BaseException:
            os.close(fd)
            raise

    def accept_loop(self):
        # One epoll per thread with EPOLLEXCLUSIVE: a new connection wakes one
        # waiting thread of one process, not every thread of the generation.
        poller = select.epoll()
        poller.register(self.listener.fileno(), select.EPOLLIN | getattr(select, "EPOLLEXCLUSIVE", 0))
        poller.register(self.wake_r, select.EPOLLIN)
        intake = self.intake
        tid = threading.get_native_id()  # a system call: once per thread
        name = threading.current_thread().name
        self.names[threading.get_ident()] = name
        try:
            clock = time.pthread_getcpuclockid(threading.get_ident())
        except (AttributeError, OSError):
            clock = None
        intake.thread_started(tid)
        while True:
            # intake=gil: the turn to wait for a connection comes first, so a
            # busy process leaves new connections to another one.
            turn = intake.wait_turn(self.draining)
            draining = self.draining.is_set()
            try:
                sock = self.take(poller, None if draining else intake.poll_for(turn))
            except Exception as e:
                # Out of file descriptors, or the like: this thread stays.
                intake.give_back(turn)
                log("cannot accept a connection: %s" % e)
                time.sleep(0.1)
                continue
            if sock is None:
                intake.give_back(turn)
                if draining:
                    return
                continue
            token = intake.begin(turn, tid, clock)
            try:
                self.serve_one(sock, name)
            finally:
                intake.done(token)

    def watchdog(self):
        """Main thread: status channel and request timeouts."""
        status_open = True
        while any(t.is_alive() for t in self.pool):
            readable = select.select([4] if status_open else [], [], [], 0.5)[0]
            if readable and os.read(4, 64) == b"":
                status_open = False
                self.drain()
            if self.recycle_asked is not None and time.monotonic() - self.recycle_asked > RECYCLE_PATIENCE:
                # A manager that does not answer RECYCLE (an older build):
                # drain anyway.
                self.drain()
            if self.timeout:
                now = time.monotonic()
                # One second after Apache's own deadline: Apache answers 504
                # first, then this process goes.
                late = [n for n, clock in list(self.started.items()) if clock.running(now) > self.timeout + 1.0]
                if late and self.stuck is None:
                    # The stuck thread cannot be stopped: this process takes
                    # no new request, asks the manager for a replacement, and
                    # exits once its other threads have finished theirs.
                    self.stuck = set(late)
                    log("request-timeout (%.0f s) exceeded in thread %s; this process takes no new request and "
                        "exits once its other requests are done. Stacks of all threads:" % (self.timeout, late[0]))
                    frames = sys._current_frames()
                    for thread in threading.enumerate():
                        frame = frames.get(thread.ident)
                        if frame is not None:
                            # The name the timeout line gives, and the app's own if it renamed the thread.
                            label = self.names.get(thread.ident, thread.name)
                            if label != thread.name:
                                label = "%s (named %r by the application)" % (label, thread.name)
                            log("thread %s:\n%s" % (label, "".join(traceback.format_stack(frame)).rstrip()))
                    with self.lock:
                        self.ask_recycle(b"request-timeout")
                    self.drain()
                    self.stuck_at = now
                if self.stuck is not None:
                    others = [n for n in list(self.started) if n not in self.stuck]
                    # The others have their own deadlines; past them, go anyway.
                    if not others or now - self.stuck_at > self.timeout + 1.0:
                        os._exit(3)

    def run(self):
        os.write(4, b"READY\n")
        self.pool = [threading.Thread(target=self.accept_loop, name="request-%d" % i, daemon=True)
                     for i in range(self.threads)]
        for t in self.pool:
            t.start()
        self.watchdog()


def main():
    try:
        worker = Worker()
    except Exception:
        log("cannot load the application:\n%s" % traceback.format_exc().rstrip())
        sys.exit(1)
    worker.run()


if __name__ == "__main__":
    main()
