#!/usr/bin/env python3
"""A hostile test worker for mod_procd (stdlib only): it speaks the frame
protocol (src/protocol/PROTOCOL.md) and lies in the ways tenant code could.

Accepts on fd 3, says READY on fd 4, serves one connection at a time and
answers according to the request's PATH_INFO (a FLUSH after the body makes
Apache send the headers as they are, before it has seen the whole body):
  /ok                 200, Content-Length 5, "hello"
  /cl-long            Content-Length 5, then 5 bytes and a smuggled response
  /cl-long-split      Content-Length 5, then "hel" and "lo-and-more"
  /cl-short           Content-Length 100, then "hello"
  /cl-value?v=TEXT    Content-Length TEXT (percent-decoded), then "hello"
  /cl-conflict        Content-Length 5 and Content-Length 6, then "hello"
  /cl-same            Content-Length 5 twice, then "hello"
  /not-modified       304 with Content-Length 1234 and no body
  /status?s=N         status N, then "hello"
  /error-text         ERROR frame whose text holds CR, LF, ESC and a fake log line
  /bad-header         a header name holding ESC and CR
  /spoof-pid          HELLO claiming the pid written in $HOSTILE_PID_FILE, then closes
When fd 4 reaches EOF it exits.
"""
import os
import select
import socket
import struct
import urllib.parse

REQUEST, HELLO, HEADERS, DATA, FLUSH, END, ERROR = 0x01, 0x10, 0x12, 0x13, 0x14, 0x15, 0x16


def frame(kind, payload=b""):
    return struct.pack(">BI", kind, len(payload)) + payload


def string(b):
    return struct.pack(">I", len(b)) + b


def headers(status, pairs):
    out = [struct.pack(">HI", status, len(pairs))]
    for name, value in pairs:
        out.append(string(name) + string(value))
    return frame(HEADERS, b"".join(out))


def hello(pid=None):
    return frame(HELLO, struct.pack(">BI", 1, os.getpid() if pid is None else pid))


def read_request(conn):
    data = b""
    while True:
        if len(data) >= 5:
            kind, length = struct.unpack_from(">BI", data)
            if len(data) >= 5 + length:
                break
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    payload = data[5:5 + length]
    if kind != REQUEST:
        return None
    fields = payload[1:].split(b"\0")
    return dict(zip(fields[0:-1:2], fields[1:-1:2]))


def answer(conn, env):
    path = env.get(b"PATH_INFO", b"").decode("latin-1")
    query = urllib.parse.parse_qs(env.get(b"QUERY_STRING", b"").decode("latin-1"), keep_blank_values=True)
    ct = (b"Content-Type", b"text/plain")
    if path == "/ok":
        out = headers(200, [ct, (b"Content-Length", b"5")]) + frame(DATA, b"hello") + frame(END)
    elif path == "/cl-long":
        smuggled = b"hello" + b"HTTP/1.1 200 OK\r\nContent-Length: 8\r\nX-Smuggled: yes\r\n\r\nsmuggled"
        out = headers(200, [ct, (b"Content-Length", b"5")]) + frame(DATA, smuggled) + frame(FLUSH) + frame(END)
    elif path == "/cl-long-split":
        out = (headers(200, [ct, (b"Content-Length", b"5")]) + frame(DATA, b"hel") + frame(FLUSH)
               + frame(DATA, b"lo-and-more") + frame(FLUSH) + frame(END))
    elif path == "/cl-short":
        out = headers(200, [ct, (b"Content-Length", b"100")]) + frame(DATA, b"hello") + frame(FLUSH) + frame(END)
    elif path == "/cl-value":
        value = query.get("v", [""])[0].encode("latin-1")
        out = headers(200, [ct, (b"Content-Length", value)]) + frame(DATA, b"hello") + frame(FLUSH) + frame(END)
    elif path == "/cl-conflict":
        out = (headers(200, [ct, (b"Content-Length", b"5"), (b"Content-Length", b"6")])
               + frame(DATA, b"hello") + frame(END))
    elif path == "/cl-same":
        out = (headers(200, [ct, (b"Content-Length", b"5"), (b"content-length", b"5")])
               + frame(DATA, b"hello") + frame(END))
    elif path == "/not-modified":
        out = headers(304, [(b"Content-Length", b"1234"), (b"ETag", b'"x"')]) + frame(END)
    elif path == "/status":
        out = headers(int(query["s"][0]), [ct]) + frame(DATA, b"hello") + frame(END)
    elif path == "/error-text":
        text = (b"boom\r\n[Mon Jan 01 00:00:00.000000 2024] [core:emerg] [pid 1] FORGED LINE"
                b"\x1b[2J\x1b]0;title\x07\x7f\x9b31m tail")
        out = frame(ERROR, string(text))
    elif path == "/stderr-text":
        # Straight to the manager's log pipe: TAB, ESC, CR, BEL, DEL, a C1 control.
        os.write(2, b"stderr\tcol2\x1b[31m\rSTDERR-FORGED\x07\x7f\xc2\x9b tail\n")
        out = headers(200, [ct, (b"Content-Length", b"5")]) + frame(DATA, b"hello") + frame(END)
    elif path == "/bad-header":
        out = headers(200, [(b"X-Evil\x1b[31m\rForged", b"v")]) + frame(END)
    elif path == "/spoof-pid":
        with open(os.environ["HOSTILE_PID_FILE"]) as f:
            claimed = int(f.read().strip())
        conn.sendall(hello(claimed))
        return  # and close without a response
    else:
        out = headers(404, [ct]) + frame(DATA, b"no such test\n") + frame(END)
    conn.sendall(hello() + out)


def main():
    listener = socket.socket(fileno=3)
    listener.setblocking(False)
    os.write(4, b"READY\n")
    while True:
        readable, _, _ = select.select([listener, 4], [], [], 1.0)
        if 4 in readable and os.read(4, 100) == b"":
            return
        if listener not in readable:
            continue
        try:
            conn, _ = listener.accept()
        except (BlockingIOError, InterruptedError):
            continue
        with conn:
            conn.setblocking(True)
            conn.settimeout(10)
            try:
                env = read_request(conn)
                if env is not None:
                    answer(conn, env)
            except OSError as e:
                print("hostile worker: %s" % e, flush=True)


if __name__ == "__main__":
    main()
