"""Measure how soon a change reaches an open session: run one operation in a loop on a
thread, note when each try ended and whether it got through, and read off the first
refusal after the change committed."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable


@dataclass
class Probe:
    """`attempt()` returns True when the operation got through, False when refused; an
    exception counts as a refusal too (a dropped connection lets nothing through)."""

    attempt: Callable[[], bool]
    tries: list[tuple[float, float, bool]] = field(default_factory=list)  # (start, end, through)
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._refused = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Probe:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            start = time.monotonic()
            try:
                through = bool(self.attempt())
            except Exception as exc:  # noqa: BLE001 - a refusal by error
                through = False
                self.errors.append(f"{type(exc).__name__}: {exc}")
            self.tries.append((start, time.monotonic(), through))
            if not through:
                self._refused.set()
                self._stop.wait(0.02)

    def wait_through(self, count: int = 3, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while sum(1 for t in self.tries if t[2]) < count:
            assert time.monotonic() < deadline, f"the probe never got through: {self.errors[-3:]}"
            time.sleep(0.01)

    def refusal_after(self, committed: float, timeout: float = 5.0) -> float:
        """Seconds from `committed` to the end of the first refused try that started
        after it; fails if none does within `timeout`."""
        deadline = committed + timeout
        while time.monotonic() < deadline:
            for start, end, through in list(self.tries):
                if not through and end >= committed:
                    return end - committed
            time.sleep(0.005)
        raise AssertionError(f"nothing was refused within {timeout} s of the change; last errors {self.errors[-3:]}")

    def through_after(self, moment: float) -> list[tuple[float, float, bool]]:
        """Tries that started at or after `moment` and still got through."""
        return [t for t in self.tries if t[0] >= moment and t[2]]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)
