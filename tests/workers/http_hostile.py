#!/usr/bin/env python3
"""A hostile HTTP program for tests/http.rs: it accepts on fd 3 (as the
http protocol's launch contract says) and answers each path with broken
or dangerous HTTP. One connection at a time, one request per connection."""
import os, socket, sys, time

ANSWERS = {
    "/cl-te": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "/two-cl": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    "/bad-te": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nxxxx",
    "/101": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nRAW BYTES",
    "/bighead": b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 100) for i in range(1000)) + b"\r\n",
    "/cr": b"HTTP/1.1 200 OK\r\nX-A: a\rb\r\nContent-Length: 0\r\n\r\n",
    "/badstatus": b"HTTP/1.1 999999 Nope\r\nContent-Length: 0\r\n\r\n",
    "/short": b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this",
    "/badchunk": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n",
    "/close": b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil close\n",
}

listener = socket.socket(fileno=3)
while True:
    conn, _ = listener.accept()
    try:
        data = b""
        while b"\r\n\r\n" not in data:
            more = conn.recv(65536)
            if not more:
                break
            data += more
        path = data.split(b" ", 2)[1].decode("latin-1") if data.count(b" ") >= 2 else "/"
        path = path.split("?")[0]
        if path.endswith("/silent"):
            time.sleep(30)
        elif path.endswith("/nothing"):
            pass
        elif path.endswith("/dribble"):
            # A head a byte per write: Apache waits for the whole of it.
            for b in b"HTTP/1.1 200 OK\r\nX-Dribble: yes\r\nContent-Length: 9\r\n\r\n":
                conn.sendall(bytes([b]))
                time.sleep(0.002)
            conn.sendall(b"dribbled\n")
        else:
            key = "/" + path.rsplit("/", 1)[-1]
            conn.sendall(ANSWERS.get(key, b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"))
    except OSError as e:
        print("hostile: %s" % e, file=sys.stderr)
    conn.close()
