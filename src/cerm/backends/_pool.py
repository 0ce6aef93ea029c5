"""Which endpoint of a pool of OpenAI-compatible servers gets the next request.

The openai backend owns the HTTP clients; this module only decides routing and keeps per-endpoint health, so the
rules are tested without a server. Everything here runs on the backend's single I/O loop: no locks.

Routing rules, and why:

* **Query affinity first.** Requests carry an affinity key (the backend derives it from the conversation's first
  message, which the criteria turn and every evaluation of one query share). Rendezvous hashing maps a key to one
  preferred endpoint, so the server's own prefix cache already holds that prompt (and the criteria turn) when the
  evaluations arrive; when an endpoint leaves, only its keys move.
* **Least in flight otherwise.** The preferred endpoint is used only while it is no busier than the least busy one
  plus ``AFFINITY_SLACK`` (a cache hit is not worth a queue); else the request goes to the endpoint with the fewest
  requests in flight (ties: fewest requests so far).
* **Ejection with back-off.** ``eject_after`` consecutive retryable failures (connection refused, 5xx, timeouts) take
  an endpoint out for ``eject_backoff`` seconds, doubling on each new ejection up to ``eject_backoff_max``. When the
  period ends it takes requests again; one success resets it, one more failure ejects it again for longer.
* **Retry elsewhere.** A request that failed on an endpoint avoids it on its next attempt while another endpoint is
  in service. When every endpoint is ejected, the one due back first is tried (the request's own retry policy
  paces it), so a pool of one behaves like a single server.
* **Per-endpoint limits.** ``max_concurrency_each`` caps the requests in flight on each endpoint; a request waits for
  a free slot on an endpoint in service rather than overload one.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

#: How much busier (requests in flight) than the least busy endpoint a query's preferred endpoint may be and still
#: get the query's requests.
AFFINITY_SLACK = 4


@dataclass(frozen=True)
class EndpointStats:
    """Counters of one endpoint of a pool (JSON-ready through :meth:`to_dict`)."""

    url: str
    in_flight: int
    requests: int
    successes: int
    failures: int
    ejections: int
    ejected: bool
    affinity_hits: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "url": self.url,
            "in_flight": self.in_flight,
            "requests": self.requests,
            "successes": self.successes,
            "failures": self.failures,
            "ejections": self.ejections,
            "ejected": self.ejected,
            "affinity_hits": self.affinity_hits,
        }


class Endpoint:
    """One server of the pool: its client (set by the backend), its limits and its health."""

    def __init__(self, index: int, url: str, payload: Any = None) -> None:
        self.index = index
        self.url = url
        #: What the backend keeps per endpoint (its HTTP client, headers...): opaque here.
        self.payload = payload
        self.in_flight = 0
        self.requests = 0
        self.successes = 0
        self.failures = 0
        self.ejections = 0
        self.affinity_hits = 0
        self.consecutive_failures = 0
        self.ejected_until = 0.0
        self.backoff = 0.0
        self._salt = int.from_bytes(hashlib.blake2b(url.encode("utf-8"), digest_size=8).digest(), "big")

    def weight(self, key: int) -> int:
        """Rendezvous weight of ``key`` on this endpoint: the key's preferred endpoint has the highest."""
        mixed = (key ^ self._salt) * 0x9E3779B97F4A7C15 & 0xFFFFFFFFFFFFFFFF
        return (mixed ^ (mixed >> 29)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF


def affinity_key(text: str) -> int:
    """A stable 64-bit key for a text (the same in every process, unlike ``hash``)."""
    return int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "big")


class EndpointPool:
    """Routing and health of a fixed list of endpoints. Use :meth:`lease` around each attempt."""

    def __init__(
        self,
        urls: Sequence[str],
        *,
        max_concurrency_each: int | None = None,
        eject_after: int = 3,
        eject_backoff: float = 1.0,
        eject_backoff_max: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not urls:
            raise ValueError("a pool needs at least one endpoint")
        self.endpoints = [Endpoint(i, url) for i, url in enumerate(urls)]
        self._limit = max_concurrency_each
        self._eject_after = eject_after
        self._eject_backoff = eject_backoff
        self._eject_backoff_max = eject_backoff_max
        self._clock = clock
        self._changed: asyncio.Condition | None = None

    # -- routing -------------------------------------------------------------------------------------------------
    def in_service(self, endpoint: Endpoint) -> bool:
        return endpoint.ejected_until <= self._clock()

    def _full(self, endpoint: Endpoint) -> bool:
        return self._limit is not None and endpoint.in_flight >= self._limit

    def choose(self, key: int | None, avoid: frozenset[int] = frozenset()) -> Endpoint | None:
        """The endpoint for the next attempt, or None when every eligible one is at its concurrency limit (wait)."""
        serving = [e for e in self.endpoints if self.in_service(e)]
        if not serving:
            # All out: probe the one due back first (the request's retry back-off paces these probes).
            return min(self.endpoints, key=lambda e: (e.ejected_until, e.index))
        preferred_set = [e for e in serving if e.index not in avoid] or serving
        free = [e for e in preferred_set if not self._full(e)]
        if not free:
            return None
        least = min(free, key=lambda e: (e.in_flight, e.requests, e.index))
        if key is not None:
            home = max(preferred_set, key=lambda e: e.weight(key))
            if not self._full(home) and home.in_flight <= least.in_flight + AFFINITY_SLACK:
                home.affinity_hits += 1
                return home
        return least

    def has_alternative(self, avoid: frozenset[int]) -> bool:
        """Whether an endpoint in service is left that the request has not failed on."""
        return any(self.in_service(e) and e.index not in avoid for e in self.endpoints)

    @asynccontextmanager
    async def lease(self, key: int | None, avoid: frozenset[int] = frozenset()) -> AsyncIterator[Endpoint]:
        """Hold a request slot on the chosen endpoint for one attempt (waiting while every eligible one is full)."""
        if self._changed is None:
            self._changed = asyncio.Condition()
        changed = self._changed
        async with changed:
            endpoint = self.choose(key, avoid)
            while endpoint is None:
                await changed.wait()
                endpoint = self.choose(key, avoid)
            endpoint.in_flight += 1
            endpoint.requests += 1
        try:
            yield endpoint
        finally:
            endpoint.in_flight -= 1
            async with changed:
                changed.notify_all()

    # -- health --------------------------------------------------------------------------------------------------
    def succeeded(self, endpoint: Endpoint) -> None:
        endpoint.successes += 1
        endpoint.consecutive_failures = 0
        endpoint.backoff = 0.0

    def failed(self, endpoint: Endpoint) -> bool:
        """Record a retryable failure; True when it took the endpoint out of service."""
        endpoint.failures += 1
        endpoint.consecutive_failures += 1
        if endpoint.consecutive_failures < self._eject_after or not self.in_service(endpoint):
            return False
        endpoint.backoff = min(
            self._eject_backoff_max, endpoint.backoff * 2 if endpoint.backoff else self._eject_backoff
        )
        endpoint.ejected_until = self._clock() + endpoint.backoff
        endpoint.ejections += 1
        return True

    def stats(self) -> list[EndpointStats]:
        return [
            EndpointStats(
                url=e.url,
                in_flight=e.in_flight,
                requests=e.requests,
                successes=e.successes,
                failures=e.failures,
                ejections=e.ejections,
                ejected=not self.in_service(e),
                affinity_hits=e.affinity_hits,
            )
            for e in self.endpoints
        ]
