# Computes about 10 ms (on this box) without the GIL: one pbkdf2 call,
# during which hashlib lets go of it, as numpy does for an array operation
# (tests/bench/procd-anchor.sh, row procd_nogil). A fixed amount of work,
# so two CPUs can at most double the rate.
import hashlib

BODY = b"Hello, World!"
HEADERS = [("Content-Type", "text/plain"), ("Content-Length", str(len(BODY)))]


def application(environ, start_response):
    hashlib.pbkdf2_hmac("sha256", b"password", b"salt", 16500)
    start_response("200 OK", HEADERS)
    return [BODY]
