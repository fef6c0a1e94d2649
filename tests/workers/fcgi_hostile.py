#!/usr/bin/env python3
"""A hostile FastCGI worker for tests/php.rs: accepts on fd 0 like php-cgi,
reads one request, and answers as QUERY_STRING's mode says (malformed
records, oversized or forbidden heads, lies, silence, floods)."""
import os
import socket
import struct
import sys

listener = socket.socket(fileno=0)


def record(ty, content, rid=1, version=1, pad=None):
    if pad is None:
        pad = (8 - len(content) % 8) % 8
    return struct.pack(">BBHHBB", version, ty, rid, len(content), pad, 0) + content + b"\0" * pad


def end(rid=1):
    return record(3, struct.pack(">IB3x", 0, 0), rid)


def read_exact(conn, n):
    data = b""
    while len(data) < n:
        chunk = conn.recv(n - len(data))
        if not chunk:
            raise EOFError
        data += chunk
    return data


def read_params(conn):
    params = b""
    while True:
        version, ty, rid, length, pad, _ = struct.unpack(">BBHHBB", read_exact(conn, 8))
        content = read_exact(conn, length)
        read_exact(conn, pad)
        if ty == 4:
            if length == 0:
                break
            params += content
    env = {}
    i = 0
    while i < len(params):
        lens = []
        for _ in range(2):
            b = params[i]
            if b < 128:
                lens.append(b)
                i += 1
            else:
                lens.append(struct.unpack(">I", params[i:i + 4])[0] & 0x7FFFFFFF)
                i += 4
        name = params[i:i + lens[0]]
        value = params[i + lens[0]:i + lens[0] + lens[1]]
        i += lens[0] + lens[1]
        env[name.decode("latin-1")] = value.decode("latin-1")
    return env


def serve(conn):
    env = read_params(conn)
    mode = env.get("QUERY_STRING", "ok")
    out = lambda b: record(6, b)
    if mode == "ok":
        conn.sendall(out(b"Content-Type: text/plain\r\n\r\nfine") + out(b"") + end())
    elif mode == "badversion":
        conn.sendall(record(6, b"Status: 200\r\n\r\n", version=2))
    elif mode == "wrongid":
        conn.sendall(record(6, b"Status: 200\r\n\r\n", rid=7))
    elif mode == "management":
        conn.sendall(record(10, b"\x0fFCGI_MAX_CONNS\x01\x31"))
    elif mode == "nohead":
        for _ in range(2):
            conn.sendall(out(b"x" * 40000))
        conn.sendall(end())
    elif mode == "status101":
        conn.sendall(out(b"Status: 101 Switching Protocols\r\nUpgrade: evil\r\n\r\n") + end())
    elif mode == "crlf":
        conn.sendall(out(b"X-Evil: a\rInjected: 1\r\n\r\nbody") + end())
    elif mode == "close":
        conn.sendall(out(b"Content-Type: text/pl"))
    elif mode == "endnohead":
        conn.sendall(end())
    elif mode == "cllie":
        conn.sendall(out(b"Content-Length: 100\r\n\r\n0123456789") + end())
    elif mode == "dribble":
        import time
        # The head in one-byte STDOUT records, one write each.
        for b in b"Content-Type: text/plain\r\nX-Dribble: yes\r\n\r\n":
            conn.sendall(out(bytes([b])))
            time.sleep(0.002)
        conn.sendall(out(b"dribbled") + out(b"") + end())
    elif mode == "silent":
        import time
        time.sleep(60)
    elif mode == "stderrflood":
        line = b"E" * 100 + b"\n"
        for _ in range(200):
            conn.sendall(record(7, line * 50))
        conn.sendall(out(b"Content-Type: text/plain\r\n\r\nflooded") + end())
    conn.close()


while True:
    conn, _ = listener.accept()
    try:
        serve(conn)
    except (EOFError, OSError):
        pass
    finally:
        try:
            conn.close()
        except OSError:
            pass
