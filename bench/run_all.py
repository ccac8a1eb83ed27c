"""Run every benchmark in bench/ in turn (`make bench`). Each prints its own table."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = [
    [sys.executable, "bench_policy.py"],
    [sys.executable, "bench_masking.py"],
    [sys.executable, "bench_wake.py"],
    [sys.executable, "http_proxy.py"],
    ["bash", "pg_relay.sh"],
    [sys.executable, "portal.py"],
]


def main() -> int:
    failed = []
    for cmd in BENCHES:
        if not (HERE / cmd[-1]).exists():
            continue
        print(f"\n=== {cmd[-1]} ===", flush=True)
        if subprocess.run(cmd, cwd=HERE).returncode != 0:
            failed.append(cmd[-1])
    if failed:
        print(f"\nfailed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
