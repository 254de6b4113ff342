"""Per-token rate limits: the generic cell rate algorithm (GCRA), in this process's memory.

``N/period`` admits a burst of N and then one request every period/N. One float per token and
no timers: the ``limits`` library (still used to parse the rate syntax) keeps an expiry timer
thread in its memory storage that it restarts as it goes, which cost ~7 % of the gateway's CPU.
"""

from __future__ import annotations

import time

from limits import RateLimitItem

__all__ = ["RateLimiter"]


class RateLimiter:
    """Admits or refuses requests per key; not thread-safe (one event loop uses it)."""

    def __init__(self) -> None:
        self._tat: dict[str, float] = {}  # theoretical arrival time of the next request, per key

    def admit(self, key: str, rate: RateLimitItem, cost: int = 1) -> float | None:
        """None if a request of ``cost`` units (events) may go ahead and is counted, else the seconds
        until it would be admitted. ``cost`` must be within the burst (``rate.amount``)."""
        now = time.monotonic()
        period = float(rate.get_expiry())
        interval = period / rate.amount
        tat = max(self._tat.get(key, now), now)
        wait = tat + interval * (cost - 1) - now - (period - interval)
        if wait > 0:
            return wait
        self._tat[key] = tat + interval * cost
        return None
