"""The in-flight byte budget: how many body bytes ingest holds at once, so overload is refused, never buffered."""

from __future__ import annotations

from types import TracebackType

from prometheus_client import Gauge

IN_FLIGHT_BYTES = Gauge("headrace_ingest_in_flight_bytes", "Push body bytes ingest holds right now")


class Overloaded(Exception):
    """The budget has no room for more bytes: the caller should answer 429 and let the client retry."""


class ByteBudget:
    """A non-blocking byte semaphore: reserving past the capacity fails at once instead of queueing.

    Waiting would keep the connection and its socket buffers alive under overload, which is the unbounded growth
    this exists to prevent; refusing fast lets clients back off.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0

    def reservation(self) -> Reservation:
        return Reservation(self)

    def _take(self, amount: int) -> None:
        if self.used + amount > self.capacity:
            raise Overloaded(f"ingest holds {self.used} body bytes already (at most {self.capacity})")
        self.used += amount
        IN_FLIGHT_BYTES.inc(amount)

    def _give_back(self, amount: int) -> None:
        self.used -= amount
        IN_FLIGHT_BYTES.dec(amount)


class Reservation:
    """The bytes one request holds; all given back when the request ends, however it ends."""

    def __init__(self, budget: ByteBudget) -> None:
        self.budget = budget
        self.held = 0

    def take(self, amount: int) -> None:
        self.budget._take(amount)
        self.held += amount

    def __enter__(self) -> Reservation:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.budget._give_back(self.held)
        self.held = 0
