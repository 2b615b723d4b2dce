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


def by_name():
    used = collections.Counter()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = open(f"/proc/{pid}/stat").read()
        except OSError:
            continue
        name = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        key = "postgres" if name.startswith("postgres") else name
        used[key] += int(fields[11]) + int(fields[12])
    return used


def machine():
    values = list(map(int, open("/proc/stat").readline().split()[1:]))
    return sum(values), values[3] + values[4]


before, (total_a, idle_a), started = by_name(), machine(), time.time()
time.sleep(float(sys.argv[1]))
after, (total_b, idle_b), elapsed = by_name(), machine(), time.time() - started
busy = 100 * (1 - (idle_b - idle_a) / (total_b - total_a))
print(f"window {elapsed:.1f}s; machine busy {busy:.0f}%")
deltas = sorted(((after[k] - before.get(k, 0), k) for k in after), reverse=True)
for ticks, name in deltas[:6]:
    if ticks > 0:
        print(f"  {name:28s} {ticks / TICKS / elapsed:.2f} cores")
