"""CPU time snapshots for tests/bench/cpu-per-request.sh.

  cpu_snapshot.py snap                      prints one line per process and the box's totals
  cpu_snapshot.py diff BEFORE AFTER REQS    prints CPU microseconds per request by program
"""

import os
import sys

TICK_US = 1_000_000 / os.sysconf("SC_CLK_TCK")


def runqueue_wait_ns(pid):
    """Time the process's threads spent runnable but waiting for a CPU
    (the second field of /proc/PID/task/TID/schedstat), summed, and how
    many times they were put on a CPU (the third), as "NS,TIMES"."""
    total = times = 0
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for tid in tasks:
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                fields = f.read().split()
            total += int(fields[1])
            times += int(fields[2])
        except (OSError, IndexError, ValueError):
            pass
    return f"{total},{times}"


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
        print(f"proc {pid} {ticks} {comm.replace(' ', '_')} {runqueue_wait_ns(pid)}")
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
                procs[rest[0]] = (int(rest[1]), rest[2], tuple(int(x) for x in rest[3].split(",")) if len(rest) > 3 else (0, 0))
            else:
                box = (int(rest[0]), int(rest[1]))
    return procs, box


def diff(before, after, requests):
    (p0, b0), (p1, b1) = read(before), read(after)
    requests = max(int(requests), 1)
    by_name, waited, switches = {}, {}, {}
    for pid, (ticks, name, (wait_ns, times)) in p1.items():
        # A process started during the run counts from zero.
        before = p0.get(pid, (0, name, (0, 0)))
        by_name[name] = by_name.get(name, 0) + ticks - before[0]
        waited[name] = waited.get(name, 0) + wait_ns - before[2][0]
        switches[name] = switches.get(name, 0) + times - before[2][1]
    parts = [
        f"{name}={ticks * TICK_US / requests:.0f}"
        for name, ticks in sorted(by_name.items(), key=lambda kv: -kv[1])
        if ticks * TICK_US / requests >= 1
    ]
    total = (b1[0] - b0[0]) * TICK_US / requests
    softirq = (b1[1] - b0[1]) * TICK_US / requests
    # Run-queue wait: how long each program's threads waited for a CPU,
    # per request (threads that ended during the run are not counted).
    waits = [
        f"{name}={ns / 1000 / requests:.0f}"
        for name, ns in sorted(waited.items(), key=lambda kv: -kv[1])
        if ns / 1000 / requests >= 1
    ]
    # Times on a CPU (each one a wake-up or a preemption) per request.
    runs = [
        f"{name}={n / requests:.1f}"
        for name, n in sorted(switches.items(), key=lambda kv: -kv[1])
        if n / requests >= 0.1
    ]
    print(
        f"us/req box={total:.0f} softirq={softirq:.0f} "
        + " ".join(parts)
        + " | runqueue wait us/req "
        + " ".join(waits)
        + " | on-CPU times/req "
        + " ".join(runs)
    )


if __name__ == "__main__":
    if sys.argv[1] == "snap":
        snap()
    else:
        diff(*sys.argv[2:5])
