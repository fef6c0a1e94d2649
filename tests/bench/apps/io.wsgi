# Waits 5 ms, as for a database, then answers: a request that sleeps rather
# than computes (tests/bench/procd-anchor.sh, row procd_io).
import time

BODY = b"Hello, World!"
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]


def application(environ, start_response):
    time.sleep(0.005)
    start_response("200 OK", HEADERS)
    return [BODY]
