"""Masking throughput on deterministic ~10 MB JSON documents.

    .venv/bin/python bench/bench_masking.py [--mb 10] [--runs 5]

Two documents, built from a fixed seed:
- "customers": customer records as an API returns them: name, email, address, a
  payment card on most, a phone on many, last-login IP on some, free-text notes
  that now and then quote an email or phone number;
- "dense": the worst case, every record carrying email, card, phone and IP.
For each: MB/s of mask_json_bytes (the >= 20 MB/s target), mask_text over the same
text, and StreamMasker over 64 KiB chunks, plus json.loads + json.dumps alone as the
floor. Each figure is the median of the runs, in CPU time (time.process_time: what
the call costs, whatever else the machine is doing) and in wall time.
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from collections.abc import Callable
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
CITIES = ["Springfield", "Lyon", "München", "Kraków", "Sevilla", "Portland"]
SPECS = [
    MaskSpec(fields=("password", "*_token", "ssn"), strategy="redact", rule="secrets"),
    MaskSpec(detectors=tuple(DETECTORS), strategy="redact", rule="pii"),
    MaskSpec(fields=("card",), strategy="partial", rule="cards"),
    MaskSpec(detectors=("email",), strategy="hash", rule="emails"),
]


def _notes(rng: random.Random, i: int) -> str:
    words = rng.choices(WORDS, k=rng.randint(8, 40))
    roll = rng.random()
    if roll < 0.1:
        words.insert(rng.randrange(len(words)), f"reach me at {rng.choice(FIRST).lower()}{i}@mail.example.org")
    elif roll < 0.15:
        words.insert(rng.randrange(len(words)), "call +1 555-010-%04d" % (i % 10000))
    elif roll < 0.3:
        words.insert(rng.randrange(len(words)), "order #%d on 2024-03-%02d" % (i, i % 28 + 1))
    return " ".join(words)


def customer(rng: random.Random, i: int) -> dict:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    rec: dict = {
        "id": i,
        "name": f"{first} {last}",
        "email": f"{first.lower()}.{i}@example.com",
        "created": "2024-01-%02dT%02d:%02d:%02dZ" % (i % 28 + 1, i % 24, i % 60, i % 60),
        "plan": rng.choice(["free", "pro", "team"]),
        "locale": rng.choice(["en-US", "fr-FR", "de-DE"]),
        "address": {"street": f"{i % 900 + 1} Main St", "city": rng.choice(CITIES), "zip": "%05d" % (i % 99999)},
        "tags": rng.sample(["vip", "new", "churn", "b2b", "eu", "us"], k=2),
        "active": bool(i % 2),
        "balance": round(rng.uniform(-500, 5000), 2),
        "notes": _notes(rng, i),
    }
    if rng.random() < 0.7:
        rec["payment"] = {"card": rng.choice(CARDS) if i % 3 else 4111111111111111,
                          "exp": "%02d/%02d" % (i % 12 + 1, 25 + i % 5), "brand": "visa"}
    if rng.random() < 0.5:
        rec["phone"] = "+1 (555) %03d-%04d" % (i % 1000, i % 10000)
    if rng.random() < 0.3:
        rec["last_login"] = {"ip": f"10.{i % 256}.{i // 256 % 256}.{i % 7}", "at": rec["created"]}
    return rec


def dense(rng: random.Random, i: int) -> dict:
    rec = customer(rng, i)
    rec.update(card=rng.choice(CARDS), phone="+1 (555) %03d-%04d" % (i % 1000, i % 10000),
               ip=f"10.{i % 256}.{i // 256 % 256}.{i % 7}", api_token="tok_%016x" % rng.getrandbits(64))
    return rec


def build(make: Callable[[random.Random, int], dict], mb: float) -> bytes:
    rng = random.Random(1234)
    records, size, i = [], 0, 0
    while size < mb * 1_000_000:
        r = make(rng, i)
        records.append(r)
        size += len(json.dumps(r, ensure_ascii=False, separators=(",", ":")).encode()) + 1
        i += 1
    return json.dumps({"records": records}, ensure_ascii=False, separators=(",", ":")).encode()


def measure(fn: Callable[[], object], size: int, runs: int) -> tuple[float, float]:
    cpu, wall = [], []
    for _ in range(runs):
        c0, w0 = time.process_time(), time.perf_counter()
        fn()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - w0)
    return size / statistics.median(cpu) / 1e6, size / statistics.median(wall) / 1e6


def bench(name: str, doc: bytes, masker: Masker, runs: int) -> None:
    text = doc.decode()
    masked = masker.mask_json_bytes(doc)
    assert b"@example.com" not in masked and b"4111 1111" not in masked, "the document was not masked"
    records = text.count('"id":')
    found = masked.count(b"[REDACTED") + masked.count(b"hash:")

    def stream() -> None:
        sm = StreamMasker(masker)
        for i in range(0, len(doc), 65536):
            sm.feed(doc[i:i + 65536])
        sm.close()

    rows = [
        ("json.loads+dumps (floor)",
         lambda: json.dumps(json.loads(doc), ensure_ascii=False, separators=(",", ":")).encode()),
        ("mask_json_bytes", lambda: masker.mask_json_bytes(doc)),
        ("mask_text", lambda: masker.mask_text(text)),
        ("StreamMasker, 64 KiB chunks", stream),
    ]
    print(f"\n{name}: {len(doc) / 1e6:.1f} MB, {records} records, {found} values masked "
          f"({found / records:.1f} per record), median of {runs} runs")
    print(f"  {'operation':<30} {'MB/s cpu':>9} {'MB/s wall':>10}")
    for label, fn in rows:
        cpu, wall = measure(fn, len(doc), runs)
        print(f"  {label:<30} {cpu:>9.1f} {wall:>10.1f}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=10.0)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    masker = Masker(SPECS, b"bench-salt")
    for name, make in (("customers", customer), ("dense", dense)):
        bench(name, build(make, args.mb), masker, args.runs)


if __name__ == "__main__":
    main()
