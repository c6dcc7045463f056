"""What a drain is doing right now, for a live display: plain data the controller updates.

The controller (main thread) writes it; a display reads it from its own refresh thread, so
every read and write takes the lock and readers get copies.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class InFlight:
    run_id: str
    phase_id: str
    started: float
    """time.monotonic() when the phase was started."""


@dataclass
class DrainProgress:
    max_total_tokens: int | None = None
    started: float = field(default_factory=time.monotonic)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _in_flight: dict[str, InFlight] = field(default_factory=dict, repr=False)
    done: int = 0
    failed: int = 0
    given_back: int = 0
    tokens: int = 0
    telemetry_rows: int = 0

    def start(self, key: str, run_id: str, phase_id: str) -> None:
        with self._lock:
            self._in_flight[key] = InFlight(run_id, phase_id, time.monotonic())

    def end(self, key: str) -> None:
        with self._lock:
            self._in_flight.pop(key, None)

    def finished(self, entry: dict[str, Any]) -> None:
        with self._lock:
            outcome = entry["outcome"]
            if outcome in ("complete", "dry_run"):
                self.done += 1
            elif outcome == "provider_unavailable":
                self.given_back += 1
            elif outcome != "refused":
                self.failed += 1
            self.tokens += (entry.get("input_tokens") or 0) + (entry.get("output_tokens") or 0)
            self.telemetry_rows += entry.get("telemetry_events") or 0

    def in_flight(self) -> list[InFlight]:
        with self._lock:
            return sorted(self._in_flight.values(), key=lambda f: f.started)
