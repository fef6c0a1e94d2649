#!/usr/bin/env python3
"""CPU time of the Python loader per request, without Apache: a steadier
figure than req/s on this box, for changes to procd_wsgi.py.

    tests/bench/loader-cpu.py [OLD_LOADER] NEW_LOADER [ROUNDS]
    LOADER_SHAPE="threads=8 intake=gil" tests/bench/loader-cpu.py ...
    (e.g. OLD_LOADER from `git show HEAD~3:src/loaders/procd_wsgi.py > /tmp/old.py`)

Starts the loader as the manager would (fd 3 the listening socket, fd 4
the status channel, PROCD_APP the shared harness's hello app), then keeps
16 requests queued on its socket, as Apache does under load: each is a
new connection carrying a REQUEST frame with the variables Apache sends
for the harness's GET /hello. Reports, per loader and round (loaders
alternate, A B then B A), the worker's user+system CPU per answered
request, from /proc/PID/stat around 20,000 requests after a warm-up;
then the median and range per loader. Not a test.

LOADER_CALLGRIND=1 counts instructions instead, which move far less than
CPU time on this box: the loader runs under valgrind's callgrind, once for
500 requests and once for 2,500 (no warm-up), and the difference of the
totals over 2,000 is the figure (user space only; about a minute per
loader and round). Under valgrind a request takes some milliseconds, so
intake=gil's looks at /proc (every 4 ms while requests run) are counted
far more often than at full speed: compare intake=gil builds with each
other, not with threads=1."""
import os
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
APP = os.path.join(HERE, "..", "..", "..", "shared", "bench", "apps", "wsgi", "hello.wsgi")
PYTHON = "/usr/bin/python3"  # the interpreter the bench rows use
REQUESTS = int(os.environ.get("LOADER_REQUESTS", "20000"))
QUEUED = 16
TICK = os.sysconf("SC_CLK_TCK")

ENV = [
    ("HTTP_HOST", "127.0.0.1:18190"), ("HTTP_USER_AGENT", "wrk"),
    ("SERVER_SIGNATURE", "<address>Apache/2.4.62 (Debian) Server at 127.0.0.1 Port 18190</address>\n"),
    ("SERVER_SOFTWARE", "Apache/2.4.62 (Debian)"), ("SERVER_NAME", "127.0.0.1"), ("SERVER_ADDR", "127.0.0.1"),
    ("SERVER_PORT", "18190"), ("REMOTE_ADDR", "127.0.0.1"), ("DOCUMENT_ROOT", "/var/www/html"),
    ("REQUEST_SCHEME", "http"), ("CONTEXT_PREFIX", ""), ("CONTEXT_DOCUMENT_ROOT", "/var/www/html"),
    ("SERVER_ADMIN", "webmaster@localhost"), ("SCRIPT_FILENAME", APP), ("REMOTE_PORT", "45678"),
    ("GATEWAY_INTERFACE", "CGI/1.1"), ("SERVER_PROTOCOL", "HTTP/1.1"), ("REQUEST_METHOD", "GET"),
    ("QUERY_STRING", ""), ("REQUEST_URI", "/hello"), ("SCRIPT_NAME", "/hello"), ("PATH_INFO", ""),
    ("HTTPS", "off"), ("PROCD_QUEUE_TIMEOUT_MS", "30000"), ("UNIQUE_ID", "Z1abcdefghijklmnopqrstuv"),
]


def request_frame():
    env = dict(ENV, PROCD_QUEUED_AT_MS=str(int(time.time() * 1000)))
    payload = b"\x01" + b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in env.items())
    return struct.pack(">BI", 0x01, len(payload)) + payload


def cpu_ticks(pid):
    total = 0
    for tid in os.listdir("/proc/%d/task" % pid):
        with open("/proc/%d/task/%s/stat" % (pid, tid)) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total


def read_answer(sock):
    """Reads frames until END; returns the bytes read."""
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            raise RuntimeError("the loader closed the connection: %r" % data[:200])
        data += chunk
        at = 0
        while at + 5 <= len(data):
            kind, length = struct.unpack_from(">BI", data, at)
            if at + 5 + length > len(data):
                break
            if kind == 0x15:
                return data
            if kind == 0x16:
                raise RuntimeError("ERROR frame: %r" % data[at + 9:at + 5 + length])
            at += 5 + length


def run(loader, shape, requests=None, instructions=None):
    """CPU µs per request and req/s; with `requests`, only that many
    requests under callgrind, whose instruction total goes to
    `instructions`."""
    workdir = tempfile.mkdtemp(prefix="loader-cpu.")
    path = os.path.join(workdir, "sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(1024)
    status_ours, status_theirs = socket.socketpair()
    env = dict(os.environ, PROCD_APP=APP, LISTEN_FDS="1")
    for word in shape.split():
        name, _, value = word.partition("=")
        env["PROCD_" + name.upper()] = value
    os.set_inheritable(listener.fileno(), True)
    os.set_inheritable(status_theirs.fileno(), True)

    def fds():
        os.dup2(listener.fileno(), 3)
        os.dup2(status_theirs.fileno(), 4)

    profile = os.path.join(workdir, "callgrind.out")
    wrap = ["valgrind", "-q", "--tool=callgrind", "--callgrind-out-file=" + profile] if requests is not None else []
    proc = subprocess.Popen(wrap + [PYTHON, loader], env=env, preexec_fn=fds, pass_fds=(3, 4))
    try:
        ready = status_ours.recv(64)
        if not ready.startswith(b"READY"):
            raise RuntimeError("no READY: %r" % ready)
        frame = request_frame()

        def drive(n):
            pending = []
            done = 0
            while done < n:
                while len(pending) < QUEUED and done + len(pending) < n:
                    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                    s.connect(path)
                    s.sendall(frame)
                    pending.append(s)
                s = pending.pop(0)
                read_answer(s)
                s.close()
                done += 1

        if requests is not None:
            drive(requests)
            return None
        drive(2000)  # warm-up
        before, t = cpu_ticks(proc.pid), time.monotonic()
        drive(REQUESTS)
        cpu = (cpu_ticks(proc.pid) - before) / TICK
        return cpu / REQUESTS * 1e6, REQUESTS / (time.monotonic() - t)
    finally:
        status_ours.close()  # EOF on fd 4: drain and exit
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        listener.close()
        if requests is not None:
            with open(profile) as f:
                totals = [int(line.split()[1]) for line in f if line.startswith("totals:")]
            os.unlink(profile)
            instructions.append(totals[0])
        os.unlink(path)
        os.rmdir(workdir)


def instructions_per_request(loader, shape):
    counts = []
    for n in (500, 2500):
        run(loader, shape, n, counts)
    return (counts[1] - counts[0]) / 2000


def main():
    args = sys.argv[1:]
    rounds = int(args.pop()) if args and args[-1].isdigit() else 5
    loaders = args
    shape = os.environ.get("LOADER_SHAPE", "threads=8")
    results = {l: [] for l in loaders}
    for r in range(rounds):
        order = loaders if r % 2 == 0 else loaders[::-1]
        for loader in order:
            if os.environ.get("LOADER_CALLGRIND"):
                value = instructions_per_request(loader, shape)
                print("round %d %s (%s): %.0f instructions/request" % (r + 1, loader, shape, value), flush=True)
            else:
                value, rps = run(loader, shape)
                print("round %d %s (%s): %.1f us CPU/request, %.0f req/s" % (r + 1, loader, shape, value, rps),
                      flush=True)
            results[loader].append(value)
    unit = "instructions" if os.environ.get("LOADER_CALLGRIND") else "us CPU"
    for loader, values in results.items():
        print("%s: median %.1f %s/request (range %.1f-%.1f, %d rounds)" % (
            loader, statistics.median(values), unit, min(values), max(values), len(values)))


if __name__ == "__main__":
    main()
