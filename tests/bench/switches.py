#!/usr/bin/env python3
"""Why threads left the CPU, from `perf record -e sched:sched_switch -g`
(cpu-per-request.sh with CPR_SCHED=1):

    tests/bench/switches.py DIR/sched.data [COMM] [FRAMES]

For each program (or only COMM, e.g. apache2), counts the switches in
which its thread went to sleep (not the ones where it was preempted) by
the innermost user-space frames of its stack (FRAMES of them, default 4),
most frequent first. Not a test."""
import collections
import subprocess
import sys


def main():
    data = sys.argv[1]
    only = sys.argv[2] if len(sys.argv) > 2 else None
    depth = int(sys.argv[3]) if len(sys.argv) > 3 else 4
    out = subprocess.run(["perf", "script", "-i", data, "-F", "comm,tid,event,trace,ip,sym,dso"],
                         capture_output=True, text=True, check=False).stdout
    counts = collections.defaultdict(collections.Counter)
    preempted = collections.Counter()
    for block in out.split("\n\n"):
        lines = [l for l in block.splitlines() if l.strip()]
        if not lines:
            continue
        head = lines[0]
        comm = head.split()[0]
        if only and comm != only:
            continue
        if "prev_state=R" in head:
            preempted[comm] += 1
            continue
        user = []
        for l in lines[1:]:
            parts = l.split(None, 1)
            if len(parts) < 2 or "kernel.kallsyms" in parts[1]:
                continue
            sym = parts[1].rsplit(" (", 1)
            if sym[0] != "[unknown]" or len(sym) < 2:
                name = sym[0]
            else:
                name = "?(" + sym[1].rstrip(")").rsplit("/", 1)[-1] + ")"
            user.append(name)
            if len(user) >= depth:
                break
        counts[comm][" < ".join(user) or "(kernel)"] += 1
    for comm, c in sorted(counts.items(), key=lambda kv: -sum(kv[1].values())):
        total = sum(c.values())
        print(f"== {comm}: {total} sleeps, {preempted[comm]} preemptions")
        for stack, n in c.most_common(15):
            print(f"{n:8d} {100 * n / total:5.1f}%  {stack}")


if __name__ == "__main__":
    main()
