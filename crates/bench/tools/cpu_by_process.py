#!/usr/bin/env python3
"""CPU used by each process name over a window, from /proc (Linux).

Usage: cpu_by_process.py SECONDS
Start it while a benchmark is in its measured window. Prints how busy the
machine was and the processes that used the most CPU, in cores (all
`postgres` backends summed). docs/benchmarks.md (session 11) used it.
"""
import collections
import os
import sys
import time

TICKS = os.sysconf("SC_CLK_TCK")


def by_pid():
    """(name, CPU ticks) of every process, by pid: a kernel worker renames
    itself as it picks up work, so deltas are taken per pid."""
    used = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = open(f"/proc/{pid}/stat").read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        used[pid] = (name, int(fields[11]) + int(fields[12]))
    return used


def family(name):
    """All PostgreSQL backends count as one; kernel workers by kind."""
    if name.startswith("postgres"):
        return "postgres"
    if name.startswith("kworker"):
        return "kworker (" + name.split("-", 1)[-1] + ")" if "-" in name else "kworker"
    return name


def machine():
    values = list(map(int, open("/proc/stat").readline().split()[1:]))
    return sum(values), values[3] + values[4]


before, (total_a, idle_a), started = by_pid(), machine(), time.time()
time.sleep(float(sys.argv[1]))
after, (total_b, idle_b), elapsed = by_pid(), machine(), time.time() - started
busy = 100 * (1 - (idle_b - idle_a) / (total_b - total_a))
print(f"window {elapsed:.1f}s; machine busy {busy:.0f}%")
used = collections.Counter()
for pid, (name, ticks) in after.items():
    # A process born in the window counts from zero.
    used[family(name)] += ticks - before.get(pid, (name, 0))[1]
deltas = sorted(((ticks, name) for name, ticks in used.items()), reverse=True)
for ticks, name in deltas[:6]:
    if ticks > 0:
        print(f"  {name:28s} {ticks / TICKS / elapsed:.2f} cores")
