#!/usr/bin/env python3
"""A test worker for mod_procd's process manager (stdlib only).

Accepts on the listening socket it inherits as fd 3 (LISTEN_FDS=1), says
READY on the status channel fd 4, and answers each connection's one line:
  "who"            -> group, generation, pid, uid, gid, groups
  "sleep SECONDS"  -> sleeps, then answers like "who"
  "crash"          -> exits with status 3 (the connection is cut)
  "spew MB"        -> writes MB MiB of 'x' lines to stderr, then answers
  "daemon"         -> starts a grandchild that leaves this worker's session
                      and process group and sleeps; answers its pid
  "chain FILE"     -> starts a chain of daemons, each forking the next in a
                      new session and exiting, each appending its pid to FILE
  "escape"         -> tries setsid/setpgid itself, then starts a child in a
                      new session with a grandchild in a new process group,
                      both sleeping as its descendants; answers
                      "escaped RESULTS CHILD GRANDCHILD"
When fd 4 reaches EOF (the manager drains this generation) it serves what is
already queued on the socket, then exits 0.

WORKER_MODE (env): "fail" exits 1 at once; "hang" never says READY and
reads nothing more;
"crashloop" says READY, then exits 3 after CRASH_AFTER seconds (0.2).
ON_TERM (env): "report" prints "SIGTERM at EPOCH" to stdout and dies of the
signal; "ignore" prints the same line and goes on (only SIGKILL ends it).
"""
import os
import select
import signal
import socket
import sys
import time

def answer(conn, line):
    if line.startswith("sleep"):
        time.sleep(float(line.split()[1]))
    if line == "crash":
        os._exit(3)
    if line.startswith("spew"):
        block = (b"x" * 1023 + b"\n") * 64
        for _ in range(int(line.split()[1]) * 16):
            os.write(2, block)
    if line.startswith("chain"):
        path = line.split()[1]
        if os.fork() == 0:
            conn.close()
            while True:
                try:
                    os.setsid()
                except OSError:
                    pass
                if os.fork() != 0:
                    os._exit(0)
                with open(path, "a") as f:
                    f.write("%d\n" % os.getpid())
                time.sleep(0.05)
        conn.sendall(b"started\n")
        return
    if line == "escape":
        # Try to leave the session and process group the manager gave us,
        # then start a child that does (setsid) and a grandchild that does
        # too (setpgid), both staying children, not orphans. Answers
        # "escaped WORKER-RESULT CHILD GRANDCHILD".
        tried = []
        # (setsid must fail: the worker leads its process group. Joining
        # the manager's process group, in the same session, may succeed: a
        # worker is killed by its pid as well as by its group.)
        for name, call in (("setsid", os.setsid), ("setpgid", lambda: os.setpgid(0, os.getppid()))):
            try:
                call()
                tried.append(name + ":ok")
            except OSError as e:
                tried.append("%s:%s" % (name, e.errno))
        r, w = os.pipe()
        if os.fork() == 0:
            conn.close()
            os.setsid()
            if os.fork() == 0:
                os.setpgid(0, 0)
                os.write(w, b"%d %d\n" % (os.getppid(), os.getpid()))
                time.sleep(600)
                os._exit(0)
            time.sleep(600)
            os._exit(0)
        pids = os.read(r, 100).decode().split()
        conn.sendall(("escaped %s %s %s\n" % (",".join(tried), pids[0], pids[1])).encode())
        return
    if line == "daemon":
        r, w = os.pipe()
        if os.fork() == 0:
            conn.close()
            os.setsid()
            if os.fork() == 0:
                os.write(w, b"%d\n" % os.getpid())
                time.sleep(600)
            os._exit(0)
        os.wait()
        conn.sendall(os.read(r, 100))
        return
    info = "group=%s gen=%s pid=%d uid=%d gid=%d groups=%s\n" % (
        os.environ.get("PROCD_GROUP"), os.environ.get("PROCD_GENERATION"),
        os.getpid(), os.getuid(), os.getgid(),
        ",".join(str(g) for g in sorted(os.getgroups())))
    conn.sendall(info.encode())

def serve(conn):
    with conn:
        conn.settimeout(10)
        data = b""
        while not data.endswith(b"\n"):
            chunk = conn.recv(4096)
            if not chunk:
                return
            data += chunk
        answer(conn, data.decode().strip())

def on_term(signum, frame):
    print("SIGTERM at %.3f pid %d" % (time.time(), os.getpid()), flush=True)
    if os.environ.get("ON_TERM") != "ignore":
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)

def main():
    mode = os.environ.get("WORKER_MODE", "")
    if os.environ.get("ON_TERM") in ("report", "ignore"):
        signal.signal(signal.SIGTERM, on_term)
    print("echo worker pid %d starting (mode=%r)" % (os.getpid(), mode), flush=True)
    print("a line on stderr", file=sys.stderr, flush=True)
    if mode == "fail":
        print("failing on purpose", file=sys.stderr, flush=True)
        sys.exit(1)
    assert os.environ.get("LISTEN_FDS") == "1"
    assert os.environ.get("LISTEN_PID") == str(os.getpid())
    listener = socket.socket(fileno=3)
    listener.setblocking(False)
    status = 4
    if mode == "hang":
        # Stuck before READY, reading nothing (not even EOF on fd 4).
        while True:
            time.sleep(3600)
    os.write(status, b"READY\n")
    if mode == "crashloop":
        time.sleep(float(os.environ.get("CRASH_AFTER", "0.2")))
        os._exit(3)
    draining = False
    while True:
        readable, _, _ = select.select([listener] + ([] if draining else [status]), [], [], 1.0)
        if status in readable and not draining:
            if os.read(status, 100) == b"":
                draining = True
        if listener in readable or draining:
            while True:
                try:
                    conn, _ = listener.accept()
                except (BlockingIOError, InterruptedError):
                    break
                conn.setblocking(True)
                serve(conn)
            if draining:
                print("drained, exiting", flush=True)
                return

if __name__ == "__main__":
    main()
