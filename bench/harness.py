"""What the proxy benchmarks share (bench/http_proxy.py, bench/load.py): ports, the local
HTTPS upstream, the C load client, a CONNECT tunnel for the Python clients, and the CPU
each process took.

The upstream and the load client come in two builds. The Python ones (uvicorn, asyncio)
cost a core between them on a 2-core machine, which is the core a second proxy worker
needs; bench/https_load.c does the same work in one epoll loop each and is what the
proxy scaling figures use. gcc and libssl-dev build it at bench time.
"""
from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
C_SOURCE = Path(__file__).resolve().parent / "https_load.c"

# One small JSON document with something to mask (an SSN field and an email address).
BODY = json.dumps({
    "id": 1, "owner": "ann@example.com", "ssn": "123-45-6789",
    "items": [{"sku": f"SKU-{i}", "qty": i, "note": "ok"} for i in range(8)],
}).encode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not start")


def build_https_load(directory: Path) -> Path:
    """Compile bench/https_load.c into `directory`; returns the binary."""
    if shutil.which("gcc") is None:
        raise RuntimeError("gcc is needed to build bench/https_load.c (or use --python-ends)")
    binary = directory / "https_load"
    subprocess.run(["gcc", "-O2", "-Wall", "-o", str(binary), str(C_SOURCE), "-lssl", "-lcrypto"], check=True)
    return binary


# -- the upstream ---------------------------------------------------------------------------

async def upstream_app(scope, receive, send):
    """The Python upstream (uvicorn): BODY for every request."""
    if scope["type"] != "http":
        return
    more = True
    while more:  # read the whole request body before answering
        more = (await receive()).get("more_body", False)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]})
    await send({"type": "http.response.body", "body": BODY})


def start_upstream(port: int, cert: Path, key: Path, env: dict, binary: Path | None) -> subprocess.Popen:
    """The HTTPS upstream on 127.0.0.1:port: the C server when `binary` is given, else uvicorn."""
    if binary is not None:
        body = cert.parent / "upstream-body.json"
        body.write_bytes(BODY)
        cmd = [str(binary), "server", str(port), str(cert), str(key), str(body)]
    else:
        cmd = [sys.executable, "-m", "uvicorn", "--app-dir", str(ROOT / "bench"), "harness:upstream_app",
               "--host", "127.0.0.1", "--port", str(port), "--ssl-certfile", str(cert), "--ssl-keyfile", str(key),
               "--log-level", "warning", "--no-access-log", "--lifespan", "off"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, start_new_session=True)  # see http_proxy.py
    wait_port(port, proc, "upstream")
    return proc


# -- the Python clients' tunnel ---------------------------------------------------------------

async def open_tunnel(proxy_port: int, target: str, auth: str, context) -> tuple[asyncio.StreamReader,
                                                                                    asyncio.StreamWriter]:
    """A CONNECT tunnel to `target` through the proxy, TLS inside it (as HTTPS_PROXY
    clients do); `auth` is the Basic credential, or empty for none."""
    reader, writer = await asyncio.open_connection("127.0.0.1", proxy_port)
    auth_line = f"Proxy-Authorization: Basic {auth}\r\n" if auth else ""
    writer.write(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{auth_line}\r\n".encode())
    head = await reader.readuntil(b"\r\n\r\n")
    if b" 200" not in head.split(b"\r\n", 1)[0]:
        raise RuntimeError(f"CONNECT failed: {head[:80]!r}")
    await writer.start_tls(context, server_hostname=target.rsplit(":", 1)[0])
    return reader, writer


async def read_answer(reader: asyncio.StreamReader) -> bytes:
    """One HTTP/1.1 answer framed by Content-Length; returns its head."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
    await reader.readexactly(length)
    return head


# -- CPU ------------------------------------------------------------------------------------

TICK = os.sysconf("SC_CLK_TCK")


def process_tree(pid: int) -> list[int]:
    """pid and every descendant alive now (a proxy's workers and their writer processes)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            parents.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(parents.get(p, []))
    return found


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process so far (0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


def main_thread_schedstat(pid: int) -> tuple[float, float]:
    """(seconds on a CPU, seconds runnable but waiting for one) of a process's main
    thread, where an asyncio server runs its event loop (0, 0 once it is gone)."""
    try:
        run, wait, _ = Path(f"/proc/{pid}/schedstat").read_text().split()
    except (OSError, ValueError):
        return 0.0, 0.0
    return int(run) / 1e9, int(wait) / 1e9


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent on anything but idle and iowait since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(values) - values[3] - values[4]) / TICK


class CpuMeter:
    """CPU taken by named process trees over a window, as a share of one core
    (1.0 = one core busy the whole window), beside what the rest of the machine took."""

    def __init__(self, roles: dict[str, list[int]]):
        # name -> the root pids of its processes, each taken with its descendants
        self.pids = {name: [p for root in roots for p in process_tree(root)] for name, roots in roles.items()}
        self.start = {name: {p: cpu_seconds(p) for p in pids} for name, pids in self.pids.items()}
        self.sched = {p: main_thread_schedstat(p) for pids in self.pids.values() for p in pids}
        self.machine = machine_busy_seconds()
        self.began = time.monotonic()

    def stop(self) -> dict:
        wall = time.monotonic() - self.began
        shares: dict[str, float] = {}
        detail: dict[str, list[float]] = {}
        for name, pids in self.pids.items():
            used = [cpu_seconds(p) - self.start[name][p] for p in pids]
            shares[name] = sum(used) / wall
            detail[name] = [round(u / wall, 2) for u in used if u > 0]
        machine = (machine_busy_seconds() - self.machine) / wall
        # Each busy process's main thread: share of the window running, and share spent
        # runnable without a core. A worker that waits much had no core to itself; one
        # that neither runs nor waits was idle or blocked.
        loops: dict[str, list[tuple[float, float]]] = {}
        for name, pids in self.pids.items():
            for p in pids:
                run, wait = main_thread_schedstat(p)
                run, wait = (run - self.sched[p][0]) / wall, (wait - self.sched[p][1]) / wall
                if run > 0.01:
                    loops.setdefault(name, []).append((round(run, 2), round(wait, 2)))
        return {"shares": {k: round(v, 4) for k, v in shares.items()}, "processes": detail, "loops": loops,
                "machine": round(machine, 2), "others": round(max(0.0, machine - sum(shares.values())), 2),
                "cores": os.cpu_count(), "loadavg": Path("/proc/loadavg").read_text().split()[:3]}
