"""A WSGI app for the pool-policy tests: /pid, /sleep?MS, /grow?MB, /exit."""
import os
import sys
import time

# A slow start on purpose (requests sent meanwhile must wait, not fail).
time.sleep(float(os.environ.get("POOL_APP_IMPORT_DELAY", "0")))

_hoard = []


def application(environ, start_response):
    path = environ.get("PATH_INFO", "")
    query = environ.get("QUERY_STRING", "")
    if path == "/exit":
        sys.exit(3)
    if path == "/sleep":
        time.sleep(int(query or "0") / 1000.0)
    elif path == "/grow":
        _hoard.append(bytearray(int(query or "1") << 20))
        for chunk in _hoard[-1:]:
            for i in range(0, len(chunk), 4096):
                chunk[i] = 1  # touch every page: resident, not just reserved
    body = ("%d\n" % os.getpid()).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
