"""Where the CPU goes per transaction while pgbench -S runs against one port.

    python bench/pg_cpu_split.py PORT USER PASSWORD DB [SECONDS]

Prints microseconds of CPU per transaction: the whole machine's split from /proc/stat
(user, system, softirq, idle), the relay's processes by thread (event loop, recorder
thread, writer process) from /proc/PID/task, and the relay's context switches. Run it
against direct PostgreSQL, bench/pg_pipe.py and the relay in turn (bench/pg_relay.sh
sets up all three) to see what the relay adds. Throughput on a small shared machine
drifts; CPU per transaction drifts less, which makes this the better guide when
comparing two versions of the relay.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys

TICK = os.sysconf("SC_CLK_TCK")
_MACHINE = ("user", "system", "softirq", "idle")
_COLUMNS = {"user": 0, "system": 2, "idle": 3, "softirq": 6}


def machine() -> list[int]:
    with open("/proc/stat") as f:
        return [int(v) for v in f.readline().split()[1:]]


def relay_threads() -> dict[tuple[str, str], tuple[int, int, int, int]]:
    """(process, thread) -> (user ticks, system ticks, voluntary, involuntary switches)."""
    out = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "app.cli relay" in cmd:
            process = "relay"
        elif "app.recording_writer" in cmd:
            process = "writer"
        else:
            continue
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                with open(f"/proc/{pid}/task/{tid}/status") as f:
                    status = f.read()
            except OSError:
                continue
            switches = [int(re.search(rf"^{k}:\s+(\d+)", status, re.M).group(1))
                        for k in ("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")]
            out[(process, f"{pid}/{tid}")] = (int(fields[11]), int(fields[12]), *switches)
    return out


def main(port: str, user: str, password: str, db: str, seconds: str = "10") -> None:
    before_machine, before_threads = machine(), relay_threads()
    run = subprocess.run(["pgbench", "-h", "127.0.0.1", "-p", port, "-U", user, "-n", "-S", "-c", "8", "-j", "2",
                          "-T", seconds, db], env={**os.environ, "PGPASSWORD": password, "PGSSLMODE": "disable"},
                         capture_output=True, text=True, check=True)
    after_machine, after_threads = machine(), relay_threads()
    n = int(re.search(r"actually processed: (\d+)", run.stdout).group(1))

    def us(ticks: int) -> str:
        return f"{ticks / TICK / n * 1e6:.1f}"

    print(f"{n / float(seconds):.0f} transactions/s; microseconds of CPU per transaction:")
    print("  machine: " + ", ".join(f"{name} {us(after_machine[_COLUMNS[name]] - before_machine[_COLUMNS[name]])}"
                                    for name in _MACHINE))
    for key, (u, s, vol, invol) in sorted(after_threads.items()):
        u0, s0, vol0, invol0 = before_threads.get(key, (0, 0, 0, 0))
        if u - u0 or s - s0:
            print(f"  {key[0]} thread {key[1]}: user {us(u - u0)}, system {us(s - s0)}; "
                  f"switches per transaction: {(vol - vol0) / n:.2f} waiting, {(invol - invol0) / n:.2f} preempted")


if __name__ == "__main__":
    main(*sys.argv[1:])
