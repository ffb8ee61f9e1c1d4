"""Storage creations heard from Postgres (NOTIFY), so the sink asks the broker for a new storage's topic at once."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import asyncpg

from headrace.catalog.storages import STORAGE_CREATED_CHANNEL
from headrace.postgres import connect
from headrace.settings import Settings

log = logging.getLogger(__name__)

RECONNECT_SECONDS = 5.0


class StorageCreations:
    """Calls `on_created(name)` for each storage created anywhere, over a connection of its own (LISTEN holds its
    session); reconnects when it drops. Missing a notice costs only time: the periodic metadata refresh remains."""

    def __init__(
        self, settings: Settings, on_created: Callable[[str], None], reconnect_seconds: float = RECONNECT_SECONDS
    ) -> None:
        self.settings = settings
        self.on_created = on_created
        self.reconnect_seconds = reconnect_seconds
        self.listening_pid: int | None = None  # the listening session's backend, while it listens
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.ensure_future(self._listen())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)

    async def _listen(self) -> None:
        while True:
            dropped = asyncio.Event()
            conn: asyncpg.Connection | None = None
            try:
                conn = await connect(self.settings, application_name="headrace-transform-listen")
                conn.add_termination_listener(lambda _conn, event=dropped: event.set())
                await conn.add_listener(STORAGE_CREATED_CHANNEL, self._heard)
                self.listening_pid = conn.get_server_pid()
                await dropped.wait()
                log.warning("the storage creation listener lost its connection; reconnecting")
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("cannot listen for storage creations: %s; trying again", exc)
            finally:
                self.listening_pid = None
                if conn is not None and not conn.is_closed():
                    await conn.close()
            await asyncio.sleep(self.reconnect_seconds)

    def _heard(self, con_ref: object, pid: int, channel: str, payload: object) -> None:
        self.on_created(str(payload))
