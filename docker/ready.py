#!/usr/bin/env python3
"""Readiness for the mod_procd image: every process group has a serving
generation, as procd-status?json says (schema: src/status/schema.json).
Exit 0 when ready, 1 (with the reason on stderr) otherwise."""
import json
import sys
import urllib.request

PORT = sys.argv[1] if len(sys.argv) > 1 else "8080"
try:
    with urllib.request.urlopen("http://127.0.0.1:%s/procd-status?json" % PORT, timeout=2) as r:
        state = json.load(r)
except Exception as e:  # noqa: BLE001 - any failure means not ready
    print("procd-status unreachable: %s" % e, file=sys.stderr)
    sys.exit(1)
waiting = [g["name"] for g in state.get("groups", [])
           if not g.get("manager") or not any(x.get("phase") == "serving" for x in g["manager"].get("generations", []))]
if waiting:
    print("not serving yet: %s" % ", ".join(waiting), file=sys.stderr)
    sys.exit(1)
