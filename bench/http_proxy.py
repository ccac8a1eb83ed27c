"""Plain `mitmdump` against `airlock proxy` with 1 and with 2 workers, same machine,
same local HTTPS upstream, same run.

airlock runs its full path: proxy auth, the egress allow-list, 20 rules, masking of the
JSON response and session recording into SQLite. The load is keep-alive HTTPS through a
CONNECT tunnel per connection (as runtimes with HTTPS_PROXY do), TLS on the client leg
and on the upstream leg. Each round measures every proxy once, one after the other.

    .venv/bin/python bench/http_proxy.py [--seconds 8] [--connections 32] [--rounds 3]
                                         [--workers 1,2] [--python-ends] [--json]

The load client and the upstream are bench/https_load.c (one epoll loop each, built with
gcc at start), so that the proxy gets the cores; --python-ends uses the older asyncio
client (in --client-procs processes) and uvicorn instead. Each row reports the CPU the
client, the upstream and the proxy took over the measured window (1.00 = one core), the
rest of the machine, and the load average, so a reader can see whether the workers had
the cores. The ratios are medians of the per-round ratios (each against the same round).

On a machine that other work keeps busy, scaling cannot show: with the scheduler's
autogroups on (kernel.sched_autogroup_enabled=1, the default on Debian), every session
gets one fair share of the CPU, and a proxy's workers are one session. Two busy loops
in one session got 0.08 and 0.09 of a core beside four in sessions of their own that
got 0.19-0.27 each. So every process here starts in a session of its own (one share
for each proxy and for each end), and the "wait" column shows how long the workers
waited for a core; read the ratios only from runs where they seldom did.

Targets: airlock with 1 worker >= 0.8x plain mitmdump; with 2 workers on 2 cores
>= 1.8x one worker.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from harness import (ROOT, CpuMeter, build_https_load, free_port, open_tunnel, read_answer,  # noqa: E402
                     start_upstream, wait_port)

sys.path.insert(0, str(ROOT))


def policy(port: int, ca: Path) -> str:
    rules = [
        f"  - {{name: deny-{i}, match: {{connection: api, path: \"/admin{i}/*\"}}, action: deny}}" for i in range(12)
    ] + [
        "  - {name: no-delete, match: {connection: api, method: [DELETE]}, action: deny}",
        "  - {name: no-drop, match: {connection: api, body: {\"$.action\": \"drop*\"}}, action: deny}",
        "  - {name: other-host, match: {host: \"*.internal\"}, action: deny}",
        "  - {name: night, match: {connection: api, kind: write, time: {between: \"02:00-03:00\"}}, action: deny}",
        "  - {name: deploys, match: {connection: api, path: \"/deploy/*\"}, action: review, approvers: {groups: [ops]}}",
        "  - {name: refunds, match: {connection: api, method: [POST], path: \"/refunds*\"}, action: review, "
        "approvers: {groups: [ops]}}",
        "  - {name: reads, match: {connection: api, kind: read}, action: allow}",
        "  - {name: mask-pii, match: {connection: api}, action: mask, fields: [ssn], detectors: [email]}",
    ]
    assert len(rules) == 20
    return f"""
version: 1
service_accounts: [{{name: bench}}]
users: [{{email: ops@example.com, groups: [ops]}}]
connections:
  - name: api
    type: http
    hosts: ["localhost:{port}"]
    ca_bundle: {ca}
    inject: {{headers: {{Authorization: "Bearer upstream-token-0123456789"}}}}
grants: [{{service_account: bench, connection: api}}]
rules:
""" + "\n".join(rules) + "\n"


# -- the Python load client (--python-ends; runs in its own processes) -----------------

async def _connection(proxy_port, upstream_port, auth, context, deadline, warm_until, latencies):
    reader, writer = await open_tunnel(proxy_port, f"localhost:{upstream_port}", auth, context)
    request = f"GET /item HTTP/1.1\r\nHost: localhost:{upstream_port}\r\n\r\n".encode()
    clock = time.perf_counter  # uvloop's loop.time() only has millisecond resolution
    while (now := clock()) < deadline:
        writer.write(request)
        await read_answer(reader)
        if now >= warm_until:
            latencies.append(clock() - now)
    writer.close()


async def _load(args) -> dict:
    context = ssl.create_default_context(cafile=args.ca)
    warm_until = time.perf_counter() + args.warmup
    deadline = warm_until + args.seconds
    latencies: list[float] = []
    await asyncio.gather(*(_connection(args.proxy_port, args.upstream_port, args.auth, context, deadline,
                                       warm_until, latencies) for _ in range(args.connections)))
    return {"count": len(latencies), "seconds": args.seconds, "median": statistics.median(latencies),
            "p95": statistics.quantiles(latencies, n=20)[-1]}


# -- one measurement --------------------------------------------------------------------

def client_commands(proxy_port: int, upstream_port: int, ca: Path, auth: str, args) -> list[list[str]]:
    if args.binary is not None:
        return [[str(args.binary), "client", str(proxy_port), f"localhost:{upstream_port}", str(ca), auth or "-",
                 str(args.connections), str(args.warmup), str(args.seconds), "/item"]]
    commands = []  # one Python process would be the bottleneck against several workers
    for i in range(args.client_procs):
        share = args.connections // args.client_procs + (1 if i < args.connections % args.client_procs else 0)
        commands.append([sys.executable, __file__, "--client", "--proxy-port", str(proxy_port), "--upstream-port",
                         str(upstream_port), "--ca", str(ca), "--auth", auth, "--seconds", str(args.seconds),
                         "--warmup", str(args.warmup), "--connections", str(share)])
    return commands


def measure(proxy: subprocess.Popen, proxy_port: int, ca: Path, auth: str, upstream: subprocess.Popen,
            upstream_port: int, args) -> dict:
    """One run of the load against one proxy, with the CPU each side took after the warm-up."""
    clients = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
               for cmd in client_commands(proxy_port, upstream_port, ca, auth, args)]
    time.sleep(args.warmup)
    meter = CpuMeter({"client": [c.pid for c in clients], "upstream": [upstream.pid], "proxy": [proxy.pid]})
    time.sleep(args.seconds)
    cpu = meter.stop()
    outs = []
    for client in clients:
        out, err = client.communicate(timeout=args.seconds + args.warmup + 60)
        if client.returncode != 0:
            raise RuntimeError(f"load client failed: {err[-2000:]}")
        outs.append(json.loads(out))
    count = sum(o["count"] for o in outs)
    return {"rps": count / args.seconds, "median": sum(o["median"] * o["count"] for o in outs) / count,
            "p95": max(o["p95"] for o in outs), "cpu": cpu,
            # The proxy's CPU per request does not depend on how loaded the machine is:
            # if it grows with the workers, they get in each other's way.
            "proxy_us": cpu["shares"]["proxy"] * 1e6 / (count / args.seconds),
            "ends_us": {role: cpu["shares"][role] * 1e6 / (count / args.seconds) for role in ("client", "upstream")},
            "per_connection": [n for o in outs for n in o.get("per_connection", [])]}


# -- orchestration --------------------------------------------------------------------

def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--warmup", type=float, default=2)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", default="1,2", help="airlock proxy worker counts to measure")
    parser.add_argument("--python-ends", action="store_true",
                        help="the asyncio load client and uvicorn upstream instead of bench/https_load.c")
    parser.add_argument("--client-procs", type=int, default=2, help="with --python-ends: client processes")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--profile", metavar="FILE", help="py-spy the airlock proxy during its first round")
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--proxy-port", type=int)
    parser.add_argument("--upstream-port", type=int)
    parser.add_argument("--ca")
    parser.add_argument("--auth", default="")
    args = parser.parse_args()
    if args.client:
        import uvloop

        print(json.dumps(uvloop.run(_load(args))))
        return 0

    from cryptography.fernet import Fernet

    from tests.integration.http.upstream import make_tls_files

    tmp = Path(tempfile.mkdtemp(prefix="airlock-bench-"))
    args.binary = None if args.python_ends else build_https_load(tmp)
    up_ca, cert, key = make_tls_files(tmp)
    home = tmp / "home"
    env = {**os.environ, "AIRLOCK_HOME": str(home), "AIRLOCK_DATABASE_URL": f"sqlite:///{home / 'airlock.db'}",
           "AIRLOCK_SECRET_KEY": Fernet.generate_key().decode(), "PYTHONPATH": str(ROOT)}
    os.environ.update(env)
    from app.config import settings
    from app.db import session_scope
    from app.identity import issue_token
    from app.inventory import apply_policy
    from app.migrate import upgrade
    from app.policy import load_policy

    settings.cache_clear()
    upgrade(settings().database_url)
    workers = [int(w) for w in args.workers.split(",")]
    upstream_port, mitm_port = free_port(), free_port()
    airlock_ports = {w: free_port() for w in workers}
    with session_scope() as s:
        apply_policy(s, load_policy(policy(upstream_port, up_ca)), actor="bench")
        token = issue_token(s, "bench", timedelta(hours=1)).token
    auth = base64.b64encode(f"bench:{token}".encode()).decode()

    procs = []
    try:
        upstream = start_upstream(upstream_port, cert, key, env, args.binary)
        procs.append(upstream)
        mitm_conf = tmp / "mitmdump"
        mitmdump = subprocess.Popen(
            [str(Path(sys.executable).parent / "mitmdump"), "-q", "--listen-host", "127.0.0.1", "--listen-port",
             str(mitm_port), "--set", f"confdir={mitm_conf}", "--set", f"ssl_verify_upstream_trusted_ca={up_ca}"],
            env=env, stdout=subprocess.DEVNULL, start_new_session=True)
        procs.append(mitmdump)
        wait_port(mitm_port, mitmdump, "mitmdump")
        targets = {"mitmdump": (mitmdump, mitm_port, mitm_conf / "mitmproxy-ca-cert.pem", "")}
        for w, port in airlock_ports.items():  # one after the other: the first makes the CA
            log = tmp / f"airlock-{w}w.log"
            proc = subprocess.Popen([sys.executable, "-m", "app.cli", "proxy"], stdout=log.open("wb"),
                                    env={**env, "AIRLOCK_PROXY_PORT": str(port), "AIRLOCK_PROXY_WORKERS": str(w),
                                         "PYTHONUNBUFFERED": "1"}, start_new_session=True)
            procs.append(proc)
            wait_port(port, proc, f"airlock proxy ({w} workers)")
            # With workers, the parent's socket is open before they run: wait for each one.
            ready = b"accepting" if w > 1 else b"listening on"
            deadline = time.monotonic() + 60
            while log.read_bytes().count(ready) < (w if w > 1 else 1):
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"airlock proxy ({w} workers) did not start: {log.read_text()[-2000:]}")
                time.sleep(0.1)
            targets[f"airlock-{w}w"] = (proc, port, home / "ca" / "airlock-ca.pem", auth)
        results: dict[str, list[dict]] = {name: [] for name in targets}
        for _ in range(args.rounds):
            for name, (proc, port, ca, credentials) in targets.items():
                spy = None
                if args.profile and name == f"airlock-{workers[0]}w" and not results[name]:
                    py_spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
                    spy = subprocess.Popen([py_spy, "record", "-p", str(proc.pid), "--subprocesses", "-r", "250",
                                            "-f", "raw", "-o", args.profile,
                                            "-d", str(int(args.seconds + args.warmup))],
                                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                results[name].append(measure(proc, port, ca, credentials, upstream, upstream_port, args))
                if spy is not None:
                    spy.wait()
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
    report(results, args)
    return 0


def _ratio(results: dict[str, list[dict]], name: str, base: str) -> dict | None:
    if name not in results or base not in results:
        return None
    rounds = [a["rps"] / b["rps"] for a, b in zip(results[name], results[base])]
    return {"median": statistics.median(rounds), "rounds": rounds}


def report(results: dict[str, list[dict]], args) -> None:
    ratios = {f"{name} / mitmdump": _ratio(results, name, "mitmdump") for name in results if name != "mitmdump"}
    ratios.update({f"{name} / airlock-1w": _ratio(results, name, "airlock-1w") for name in results
                   if name.startswith("airlock-") and name != "airlock-1w"})
    ratios = {k: v for k, v in ratios.items() if v is not None}
    ends = "asyncio client + uvicorn" if args.binary is None else "bench/https_load.c client + upstream"
    if args.json:
        print(json.dumps({"connections": args.connections, "seconds": args.seconds, "cpus": os.cpu_count(),
                          "ends": ends, "results": results, "ratios": ratios}, indent=2))
        return
    print(f"keep-alive HTTPS through CONNECT, {args.connections} connections, {args.seconds:g} s per run "
          f"after {args.warmup:g} s warm-up, {args.rounds} rounds, {os.cpu_count()} CPUs, ends: {ends}")
    print("CPU in cores over the measured window: client, upstream, proxy (its processes), rest of the machine; "
          "the proxy's CPU per request; each proxy event loop's share of the window running / runnable but "
          "waiting for a core; load average at the end")
    print(f"{'round':>5} {'proxy':<12} {'req/s':>7} {'med ms':>7} {'p95 ms':>7}  {'client':>6} {'upstr':>6} "
          f"{'proxy':>6} {'others':>6} {'µs/req':>6}  proxy loops run/wait  load avg   "
          "answers per connection (min-max)")
    for i in range(args.rounds):
        for name, runs in results.items():
            r = runs[i]
            cpu = r["cpu"]
            loops = " ".join(f"{run:.2f}/{wait:.2f}" for run, wait in cpu["loops"].get("proxy", []))
            spread = f"{min(r['per_connection'])}-{max(r['per_connection'])}" if r["per_connection"] else "-"
            print(f"{i + 1:>5} {name:<12} {r['rps']:>7.0f} {r['median'] * 1000:>7.2f} {r['p95'] * 1000:>7.2f}  "
                  f"{cpu['shares']['client']:>6.2f} {cpu['shares']['upstream']:>6.2f} {cpu['shares']['proxy']:>6.2f} "
                  f"{cpu['others']:>6.2f} {r['proxy_us']:>6.0f}  {loops:<20} {' '.join(cpu['loadavg'])}   {spread}")
    per_request = ", ".join(f"{name} {statistics.median(r['proxy_us'] for r in runs):.0f}"
                            for name, runs in results.items())
    print(f"proxy CPU per request, µs (median): {per_request}")
    end_cost = {role: statistics.median(r["ends_us"][role] for runs in results.values() for r in runs)
                for role in ("client", "upstream")}
    print(f"load client and upstream CPU per request, µs (median over every run): client {end_cost['client']:.0f}, "
          f"upstream {end_cost['upstream']:.0f}")
    for name, ratio in ratios.items():
        rounds = ", ".join(f"{x:.2f}" for x in ratio["rounds"])
        target = " (target >= 1.8x with 2 workers)" if name.startswith("airlock-2w / airlock-1w") else ""
        print(f"{name}: throughput {ratio['median']:.2f}x median [{rounds}]{target}")


if __name__ == "__main__":
    sys.exit(main())
