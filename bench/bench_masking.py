"""Masking throughput on a deterministic ~10 MB JSON document of realistic records.

    .venv/bin/python bench/bench_masking.py [--mb 10] [--runs 5]

Prints MB/s (median of the runs) for mask_json_bytes, mask_text over the same bytes,
StreamMasker over 64 KiB chunks, and the json.loads + json.dumps floor for reference.
The target is >= 20 MB/s for mask_json_bytes.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.masking import DETECTORS, Masker, StreamMasker  # noqa: E402
from app.types import MaskSpec  # noqa: E402

FIRST = ["Alice", "Bob", "Carol", "Dave", "Eve", "Frank", "Grace", "Heidi", "Ivan", "Judy", "Mallory", "Zoë"]
LAST = ["Smith", "Jones", "Müller", "García", "Nguyen", "O'Brien", "Kowalski", "Rossi", "Dubois"]
WORDS = ("the order was shipped to customer after review and the invoice total includes tax "
         "please contact support if the package does not arrive within five business days "
         "refund approved by manager note account flagged for manual verification").split()
CARDS = ["4111 1111 1111 1111", "5500-0000-0000-0004", "340000000000009", "6011000000000004"]


def _text(rng: random.Random, i: int) -> str:
    words = rng.choices(WORDS, k=rng.randint(8, 30))
    roll = rng.random()
    if roll < 0.1:
        words.insert(rng.randrange(len(words)), f"reach me at {rng.choice(FIRST).lower()}{i}@mail.example.org")
    elif roll < 0.15:
        words.insert(rng.randrange(len(words)), "call +1 555-010-%04d" % (i % 10000))
    elif roll < 0.2:
        words.insert(rng.randrange(len(words)), "order #%d on 2024-03-%02d" % (i, i % 28 + 1))
    return " ".join(words)


def record(rng: random.Random, i: int) -> dict:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    return {
        "id": i,
        "name": f"{first} {last}",
        "email": f"{first.lower()}.{i}@example.com",
        "card": rng.choice(CARDS) if i % 3 else 4111111111111111,
        "phone": "+1 (555) %03d-%04d" % (i % 1000, i % 10000),
        "ip": f"10.{i % 256}.{i // 256 % 256}.{i % 7}",
        "created": "2024-01-%02dT%02d:%02d:%02dZ" % (i % 28 + 1, i % 24, i % 60, i % 60),
        "api_token": "tok_%016x" % rng.getrandbits(64),
        "address": {"street": f"{i % 900 + 1} Main St", "city": "Springfield", "zip": "%05d" % (i % 99999)},
        "tags": rng.sample(["vip", "new", "churn", "b2b", "eu", "us"], k=2),
        "notes": _text(rng, i),
        "active": bool(i % 2),
        "balance": round(rng.uniform(-500, 5000), 2),
    }


def build(mb: float) -> bytes:
    rng = random.Random(1234)
    records, size, i = [], 0, 0
    while size < mb * 1_000_000:
        r = record(rng, i)
        records.append(r)
        size += len(json.dumps(r, ensure_ascii=False, separators=(",", ":")).encode()) + 1
        i += 1
    return json.dumps({"records": records}, ensure_ascii=False, separators=(",", ":")).encode()


def median_rate(fn, size: int, runs: int) -> tuple[float, float]:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return size / med / 1e6, med


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=10.0)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()

    doc = build(args.mb)
    specs = [
        MaskSpec(fields=("password", "*_token", "ssn"), strategy="redact", rule="secrets"),
        MaskSpec(detectors=tuple(DETECTORS), strategy="redact", rule="pii"),
        MaskSpec(fields=("card",), strategy="partial", rule="cards"),
        MaskSpec(detectors=("email",), strategy="hash", rule="emails"),
    ]
    masker = Masker(specs, b"bench-salt")
    text = doc.decode()

    def stream() -> None:
        sm = StreamMasker(masker)
        out = [sm.feed(doc[i:i + 65536]) for i in range(0, len(doc), 65536)]
        out.append(sm.close())

    rows = [
        ("json.loads+dumps (floor)", lambda: json.dumps(json.loads(doc), ensure_ascii=False,
                                                        separators=(",", ":")).encode()),
        ("mask_json_bytes", lambda: masker.mask_json_bytes(doc)),
        ("mask_text", lambda: masker.mask_text(text)),
        ("StreamMasker 64 KiB chunks", stream),
    ]
    masked = masker.mask_json_bytes(doc)
    assert b"@example.com" not in masked and b"4111 1111" not in masked, "bench doc was not masked"
    print(f"document: {len(doc) / 1e6:.1f} MB, {text.count('\"id\":')} records, {args.runs} runs each")
    print(f"{'operation':<28} {'MB/s':>8} {'median s':>9}")
    for name, fn in rows:
        rate, med = median_rate(fn, len(doc), args.runs)
        print(f"{name:<28} {rate:>8.1f} {med:>9.3f}")


if __name__ == "__main__":
    main()
