"""The WSGI app the tests mount: one behaviour per PATH_INFO."""
import hashlib
import io
import json
import os
import signal
import sys
import threading
import time
from wsgiref.validate import validator


def reply(start_response, body, status="200 OK", ctype="text/plain", extra=()):
    start_response(status, [("Content-Type", ctype)] + list(extra))
    return [body]


def simple(environ, start_response):
    # PEP 3333 (and wsgiref.validate) want read() with a size.
    data = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(data) + 3))])
    return [b"ok:" + data]


validated = validator(simple)


# /overlap: whether another request of this process ran while this one did.
overlap_lock = threading.Lock()
overlap_state = {"inside": 0, "entered": 0}


# ?work=nogil&ms=N computes N ms without the GIL (hashlib lets go of it
# for a pbkdf2 round, as numpy does for an array operation), ?work=gil&ms=N
# computes N ms in Python.
def overlap(start_response, query):
    with overlap_lock:
        alone = overlap_state["inside"] == 0
        overlap_state["inside"] += 1
        overlap_state["entered"] += 1
        me = overlap_state["entered"]
    work = query.get("work")
    end = time.monotonic() + float(query.get("ms", "0")) / 1000
    if work == "nogil":
        while time.monotonic() < end:
            hashlib.pbkdf2_hmac("sha256", b"password", b"salt", 500)
    elif work == "gil":
        while time.monotonic() < end:
            pass
    else:
        hashlib.sha256(b"x" * 4096).digest()  # a little computing, GIL held
        time.sleep(0)  # a moment without the GIL, as a database call would give
    with overlap_lock:
        overlap_state["inside"] -= 1
        alone = alone and overlap_state["entered"] == me
    return reply(start_response, b"alone\n" if alone else b"overlap\n")


def application(environ, start_response):
    path = environ.get("PATH_INFO", "")
    query = dict(p.split("=", 1) for p in environ.get("QUERY_STRING", "").split("&") if "=" in p)
    if path in ("", "/", "/env") or path.startswith("/env/") or path.startswith("/x"):
        body = environ["wsgi.input"].read()
        env = {k: v for k, v in environ.items() if isinstance(v, str)}
        env["wsgi.url_scheme"] = environ["wsgi.url_scheme"]
        env["body"] = body.decode("latin-1")
        env["multithread"] = str(environ["wsgi.multithread"])
        return reply(start_response, json.dumps(env).encode(), ctype="application/json",
                     extra=[("Set-Cookie", "a=1; Path=/"), ("Set-Cookie", "b=2; Path=/")])
    if path == "/upload":
        digest, total, wsgi_input = hashlib.sha256(), 0, environ["wsgi.input"]
        while True:
            chunk = wsgi_input.read(65536)
            if not chunk:
                break
            digest.update(chunk)
            total += len(chunk)
        return reply(start_response, ("%s %d" % (digest.hexdigest(), total)).encode())
    if path == "/lines":
        lines = list(environ["wsgi.input"])
        return reply(start_response, ("%d lines, first %r" % (len(lines), lines[0] if lines else b"")).encode())
    if path == "/readline":
        # PEP 3333's input methods, mixed: readline(), readline(size),
        # iteration, readlines(hint), readlines(), then EOF.
        inp = environ["wsgi.input"]
        if query.get("mode") == "sizes":
            sizes = [len(line) for line in inp]
            return reply(start_response, json.dumps(sizes).encode(), ctype="application/json")
        got = {"readline": inp.readline().decode("latin-1"),
               "readline(2)": inp.readline(2).decode("latin-1"),
               "readline-rest": inp.readline().decode("latin-1"),
               "next": next(iter(inp)).decode("latin-1"),
               "readlines(1)": [x.decode("latin-1") for x in inp.readlines(1)],
               "readlines": [x.decode("latin-1") for x in inp.readlines()],
               "after-eof": (inp.readline() + inp.read()).decode("latin-1")}
        return reply(start_response, json.dumps(got).encode(), ctype="application/json")
    if path == "/big":
        mb = int(query.get("mb", "20"))
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        block = bytes(range(256)) * 256  # 64 KiB
        return (block for _ in range(mb * 16))
    if path == "/stream":
        def gen():
            yield b"first\n"
            time.sleep(1.0)
            yield b"second\n"
        start_response("200 OK", [("Content-Type", "text/plain")])
        return gen()
    if path == "/reject":
        return reply(start_response, b"too large\n", status="413 Payload Too Large")
    if path == "/overlap":
        return overlap(start_response, query)
    if path == "/compute":
        # Computes (holding the GIL) for ms milliseconds; says which process.
        end = time.monotonic() + float(query.get("ms", "60")) / 1000
        while time.monotonic() < end:
            pass
        return reply(start_response, ("pid=%d\n" % os.getpid()).encode())
    if path == "/sleep":
        if "name" in query:
            threading.current_thread().name = query["name"]  # as some apps do
        time.sleep(float(query.get("s", "1")))
        return reply(start_response, b"slept\n")
    if path == "/whoami":
        # Which worker of which generation answered (after s seconds).
        time.sleep(float(query.get("s", "0")))
        return reply(start_response, ("gen=%s pid=%d\n" % (os.environ.get("PROCD_GENERATION"), os.getpid())).encode())
    if path == "/upload-watch":
        # Reads the body; says in the log how much arrived and how it ended.
        got, wsgi_input = 0, environ["wsgi.input"]
        try:
            while True:
                chunk = wsgi_input.read(65536)
                if not chunk:
                    break
                got += len(chunk)
            how = "the end of the body"
        except Exception as e:
            how = "%s: %s" % (type(e).__name__, e)
        print("upload-watch: %d bytes, then %s" % (got, how), file=environ["wsgi.errors"], flush=True)
        return reply(start_response, ("%d\n" % got).encode())
    if path == "/record":
        # One line per request the application really ran.
        with open(os.environ["RECORD_FILE"], "a") as f:
            f.write(query.get("id", "?") + "\n")
        time.sleep(float(query.get("s", "0")))
        return reply(start_response, b"recorded\n")
    if path == "/die":
        os._exit(7)
    if path == "/kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if path == "/bad-header":
        return reply(start_response, b"x", extra=[("X-Bad", "a\r\nInjected: yes")])
    if path == "/many-headers":
        # n headers in all, Content-Type included, each a few bytes.
        n = int(query.get("n", "101"))
        return reply(start_response, b"many", extra=[("X-H%d" % i, "v") for i in range(n - 1)])
    if path == "/huge-header":
        return reply(start_response, b"x", extra=[("X-Huge", "h" * 70000)])
    if path == "/raise":
        raise RuntimeError("boom: secret detail")
    if path == "/validate":
        return validated(environ, start_response)
    if path == "/write":
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written;")
        return [b"returned"]
    if path == "/file":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return environ["wsgi.file_wrapper"](io.BytesIO(b"from a file wrapper"), 4)
    if path == "/exc-info":
        try:
            raise ValueError("handled")
        except ValueError:
            start_response("500 Internal Server Error", [("Content-Type", "text/plain")], sys.exc_info())
        return [b"handled by the app"]
    if path == "/forever":
        class Forever:
            sent = 0
            def __iter__(self):
                while True:
                    self.sent += 1
                    yield b"x" * 65536
                    time.sleep(0.01)
            def close(self):
                print("forever: closed after %d chunks" % self.sent, file=environ["wsgi.errors"], flush=True)
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return Forever()
    return reply(start_response, b"no such test\n", status="404 Not Found")
