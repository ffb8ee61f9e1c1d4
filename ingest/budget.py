"""The in-flight budget: the memory ingest lets requests hold at once (bytes, parsed values, events awaiting acks)."""

from __future__ import annotations

from types import TracebackType

from prometheus_client import Gauge

from ingest.counting import Shape

IN_FLIGHT_BYTES = Gauge(
    "headrace_ingest_in_flight_bytes", "Memory the requests being answered hold right now, as estimated by ingest"
)

# The cost model, calibrated on the peak RSS growth of a fresh `python -m ingest` per push (real broker): 50,000
# `{}` events +28.8 MiB, 50,000 `{"a": i}` +31.1 MiB, 50,000 records of 14 values (6.5 MiB) +58 MiB, one record
# of 100,000 values +5.4 MiB; the model charges 29.6, 33.5, 82 and 6.8 MiB for them.
# A parsed JSON value (a container, a key, a scalar): its object header and its slot in a dict or list.
VALUE_COST = 48
# A pushed event from its build until Kafka acks it, beyond its text: its id and receive-time headers, the
# event tuple, aiokafka's future and record. (Before values were right-sized it was 4.5 KB: orjson hands back
# its 4 KiB write buffer, which is how 3 million `{}` reached 13.7 GB.)
EVENT_COST = 512
# A batch event from its send until its ack window is collected: aiokafka's future and record.
SENT_EVENT_COST = 512


def parse_cost(decoded: int, values: int) -> int:
    """Parsed records of `decoded` body bytes: their text once as Python objects and once serialized again."""
    return 2 * decoded + values * VALUE_COST


def push_cost(decoded: int, shape: Shape) -> int:
    """A push's records and events, held until Kafka acknowledged every one of them."""
    return parse_cost(decoded, shape.values) + shape.events * EVENT_COST


class Overloaded(Exception):
    """The budget has no room left: the caller should answer 429 and let the client retry."""


class ByteBudget:
    """A non-blocking semaphore of bytes: reserving past the capacity fails at once instead of queueing.

    Waiting would keep the connection and its socket buffers alive under overload, which is the unbounded growth
    this exists to prevent; refusing fast lets clients back off.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.used = 0

    @property
    def room(self) -> int:
        return self.capacity - self.used

    def reservation(self) -> Reservation:
        return Reservation(self)

    def _take(self, amount: int) -> None:
        if self.used + amount > self.capacity:
            raise Overloaded(f"ingest holds {self.used} bytes for requests already (at most {self.capacity})")
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

    def fits(self, amount: int) -> bool:
        """Whether this request could ever hold `amount` more, were every other request gone."""
        return self.held + amount <= self.budget.capacity

    def take(self, amount: int) -> None:
        self.budget._take(amount)
        self.held += amount

    def give_back(self, amount: int) -> None:
        amount = min(amount, self.held)
        self.budget._give_back(amount)
        self.held -= amount

    def settle(self, held: int, wanted: int) -> int:
        """Move a standing part of the reservation from `held` to `wanted` bytes; returns `wanted`."""
        if wanted > held:
            self.take(wanted - held)
        else:
            self.give_back(held - wanted)
        return wanted

    def __enter__(self) -> Reservation:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.give_back(self.held)
