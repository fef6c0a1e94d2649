#!/usr/bin/env python3
"""Medians over rounds of the shared harness's tables, and mod_procd's
ratios to mod_wsgi daemon mode (same run, same box)."""
import statistics
import sys
from collections import defaultdict

rows = defaultdict(lambda: {"rps": [], "p99": []})
# Per round, so ratios can be taken within one round (same minutes, same box).
by_round = []
for path in sys.argv[1:]:
    this_round = {}
    for line in open(path):
        cells = [c.strip() for c in line.split("|")]
        if len(cells) < 6 or not cells[2].isdigit():
            continue
        key = (cells[0], int(cells[2]))
        rows[key]["rps"].append(float(cells[3]))
        rows[key]["p99"].append(float(cells[5]))
        this_round[key] = (float(cells[3]), float(cells[5]))
    by_round.append(this_round)

print("%-30s %5s %10s %9s   (median of %d rounds)" % ("anchor", "conns", "req/s", "p99 ms", len(sys.argv) - 1))
for (name, conns), v in sorted(rows.items(), key=lambda kv: (kv[0][1], kv[0][0])):
    print("%-30s %5d %10.0f %9.2f" % (name, conns, statistics.median(v["rps"]), statistics.median(v["p99"])))
print()
PAIRS = [
    ("mod_procd + Python WSGI", "mod_wsgi daemon"),
    ("mod_procd + Python WSGI", "mod_wsgi embedded"),
    ("mod_procd + Python, intake=gil", "mod_wsgi daemon"),
    ("mod_procd + Python, one thread per process", "mod_wsgi daemon"),
    ("mod_procd + Python, ProcdKeepAliveThread On", "mod_wsgi daemon"),
    ("mod_procd + Python, ProcdKeepAliveThread On", "mod_procd + Python WSGI"),
    ("mod_procd + Ruby Rack", "Passenger + Ruby Rack"),
    ("mod_procd + Ruby Rack, ProcdKeepAliveThread On", "Passenger + Ruby Rack"),
    ("mod_procd + Perl PSGI", "mod_proxy_http + starman PSGI"),
    ("mod_procd + php-cgi", "proxy_fcgi + php-fpm"),
    ("mod_procd + php-cgi", "mod_fcgid + php-cgi"),
    ("mod_procd + Node (language=http)", "mod_proxy_http + Node on TCP"),
    ("mod_procd + Node, ProcdKeepAliveThread On", "mod_proxy_http + Node on TCP"),
    ("mod_procd + CGI", "mod_cgid"),
]
# Rows with ProcdKeepAliveThread DURATION (PROCD_KA_WAIT, 2ms unless set):
# against the anchor and against the default row of the same run.
for name in sorted({n for n, _ in rows}):
    base, _, setting = name.partition(", ProcdKeepAliveThread ")
    if setting and setting != "On":
        default = {"mod_procd + Python": "mod_procd + Python WSGI", "mod_procd + Node": "mod_procd + Node (language=http)"}.get(base, base)
        PAIRS += [(name, theirs) for ours, theirs in PAIRS if ours == default] + [(name, default)]
for conns in sorted({c for _, c in rows}):
    for ours, theirs in PAIRS:
        ratios = [(r[(ours, conns)][0] / r[(theirs, conns)][0], r[(ours, conns)][1] / r[(theirs, conns)][1])
                  for r in by_round if (ours, conns) in r and (theirs, conns) in r and r[(theirs, conns)][0] > 0]
        if ratios:
            rps = sorted(x for x, _ in ratios)
            p99 = sorted(y for _, y in ratios)
            print("c=%d: %s / %s: throughput %.2fx (rounds %.2f-%.2f), p99 %.2fx (rounds %.2f-%.2f), %d rounds" % (
                conns, ours, theirs, statistics.median(rps), rps[0], rps[-1],
                statistics.median(p99), p99[0], p99[-1], len(ratios)))
