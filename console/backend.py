"""The console's only way to the platform: the services' HTTP APIs, called with the admin token."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

import aiohttp
import orjson

from headrace.platform.processes import admin_headers
from headrace.settings import Settings

# A page waits this long for a service at most: a service away shows as such instead of hanging the page.
REQUEST_TIMEOUT_SECONDS = 10.0


class BackendError(Exception):
    """A service answered with an error (or not at all); the message is the service's own."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def q(name: str) -> str:
    """A path segment (a storage's, flow's or export's name) as the URL carries it."""
    return quote(name, safe="")


class Backend:
    """One aiohttp session to every service, carrying the admin token."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS),
            headers=admin_headers(self.settings.require_admin_token()),
            json_serialize=lambda value: orjson.dumps(value).decode(),
        )

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "the backend is used before the service started"
        return self._session

    def url(self, service: str, path: str) -> str:
        return self.settings.service_url(service) + path

    async def call(self, method: str, service: str, path: str, **kwargs: Any) -> Any:
        """The JSON a service answers; BackendError for an error status or a service out of reach."""
        try:
            async with self.session.request(method, self.url(service, path), **kwargs) as response:
                raw = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise BackendError(503, f"{service} is out of reach: {exc or type(exc).__name__}") from exc
        try:
            body: Any = orjson.loads(raw) if raw.strip() else None
        except orjson.JSONDecodeError:
            body = None
        if status >= 400:
            raise BackendError(status, _message(body, raw))
        return body

    async def get(self, service: str, path: str, **kwargs: Any) -> Any:
        return await self.call("GET", service, path, **kwargs)

    async def post(self, service: str, path: str, body: Any = None, **kwargs: Any) -> Any:
        return await self.call("POST", service, path, json=body if body is not None else {}, **kwargs)

    async def text(self, service: str, path: str) -> str | None:
        """A plain-text route (/metrics); None when the service does not answer."""
        try:
            async with self.session.get(self.url(service, path)) as response:
                return await response.text() if response.status == 200 else None
        except (aiohttp.ClientError, TimeoutError):
            return None

    async def gather(self, **calls: Any) -> dict[str, Any]:
        """Several calls at once, by name; a failing one gives its BackendError instead of failing the others."""
        names = list(calls)
        results = await asyncio.gather(*calls.values(), return_exceptions=True)
        found: dict[str, Any] = {}
        for name, result in zip(names, results, strict=True):
            if isinstance(result, BaseException) and not isinstance(result, BackendError):
                raise result
            found[name] = result
        return found


def _message(body: Any, raw: bytes) -> str:
    if isinstance(body, dict):
        # The error convention (headrace.web.errors) puts every field's message into "error" already.
        message = body.get("error") or body.get("message")
        if message:
            return str(message)
    return raw[:500].decode(errors="replace") or "no answer"
