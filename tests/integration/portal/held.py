"""Real held operations: the gate's own `decide`, run in a thread with its own event loop.

This is exactly what the HTTP proxy and the database relays do for a runtime, minus the
wire protocol: the call blocks while the review is pending and returns the verdict.
"""
from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field

from app.gate import get_gate
from app.types import Operation, Principal, Verdict


def sql_op(text: str, *, kind: str = "write", connection: str = "billing-db", fingerprint: str | None = None) -> Operation:
    return Operation(protocol="postgres", connection=connection, kind=kind, text=text, targets=("invoices",),
                     fingerprint=fingerprint or f"fp:{text}")


def http_op(method: str, url_path: str, *, connection: str = "payments-api") -> Operation:
    return Operation(protocol="http", connection=connection, kind="write", text=f"{method} api.payments.test{url_path}",
                     method=method, host="api.payments.test", path=url_path,
                     fingerprint=f"fp:{method}:{url_path}")


def decide(op: Operation, *, account: str = "billing-agent", subject: str = "", hold: float = 0.0,
           run_id: str | None = None) -> Verdict:
    """One decision, waiting at most `hold` seconds (0: open the review and return)."""
    principal = Principal(service_account=account, subject=subject)

    async def go() -> Verdict:
        return await get_gate().decide(principal, op, hold=hold, run_id=run_id)

    # Its own thread and loop: Playwright's sync API already runs a loop in this one.
    out: list = []
    thread = threading.Thread(target=lambda: out.append(asyncio.run(go())), name="gate-decide")
    thread.start()
    thread.join(hold + 30)
    if not out:
        raise RuntimeError("the gate did not answer")
    return out[0]


@dataclass
class HeldClient:
    """A client blocked on the gate in a background thread, like a runtime behind the proxy."""

    op: Operation
    account: str = "billing-agent"
    hold: float = 60.0
    run_id: str | None = None
    verdict: Verdict | None = None
    error: BaseException | None = None
    _thread: threading.Thread = field(init=False)

    def start(self) -> HeldClient:
        def run() -> None:
            try:
                principal = Principal(service_account=self.account)

                async def go() -> Verdict:
                    return await get_gate().decide(principal, self.op, hold=self.hold, run_id=self.run_id)

                self.verdict = asyncio.run(go())
            except BaseException as exc:  # surfaced by the test through .error
                self.error = exc

        self._thread = threading.Thread(target=run, name="held-client", daemon=True)
        self._thread.start()
        return self

    def wait(self, timeout: float) -> Verdict | None:
        self._thread.join(timeout)
        if self.error is not None:
            raise self.error
        return self.verdict

    @property
    def done(self) -> bool:
        return not self._thread.is_alive()
