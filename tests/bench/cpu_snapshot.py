"""CPU time snapshots for tests/bench/cpu-per-request.sh.

  cpu_snapshot.py snap                      prints one line per process and the box's totals
  cpu_snapshot.py diff BEFORE AFTER REQS    prints CPU microseconds per request by program
"""

import os
import sys

TICK_US = 1_000_000 / os.sysconf("SC_CLK_TCK")


def snap():
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        # comm may hold spaces and parentheses: it ends at the last ')'.
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
        ticks = int(fields[11]) + int(fields[12])
        print(f"proc {pid} {ticks} {comm.replace(' ', '_')}")
    with open("/proc/stat") as f:
        cpu = f.readline().split()[1:]
    # user nice system idle iowait irq softirq steal
    busy = sum(int(x) for i, x in enumerate(cpu[:8]) if i not in (3, 4))
    print(f"box {busy} {cpu[6]}")


def read(path):
    procs, box = {}, None
    with open(path) as f:
        for line in f:
            kind, *rest = line.split()
            if kind == "proc":
                procs[rest[0]] = (int(rest[1]), rest[2])
            else:
                box = (int(rest[0]), int(rest[1]))
    return procs, box


def diff(before, after, requests):
    (p0, b0), (p1, b1) = read(before), read(after)
    requests = max(int(requests), 1)
    by_name = {}
    for pid, (ticks, name) in p1.items():
        # A process started during the run counts from zero.
        by_name[name] = by_name.get(name, 0) + ticks - p0.get(pid, (0, name))[0]
    parts = [
        f"{name}={ticks * TICK_US / requests:.0f}"
        for name, ticks in sorted(by_name.items(), key=lambda kv: -kv[1])
        if ticks * TICK_US / requests >= 1
    ]
    total = (b1[0] - b0[0]) * TICK_US / requests
    softirq = (b1[1] - b0[1]) * TICK_US / requests
    print(f"us/req box={total:.0f} softirq={softirq:.0f} " + " ".join(parts))


if __name__ == "__main__":
    if sys.argv[1] == "snap":
        snap()
    else:
        diff(*sys.argv[2:5])
