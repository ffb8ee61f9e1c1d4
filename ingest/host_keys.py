"""`/api/sftp-host-keys` on the ingest service: the SFTP host keys trusted on first use, listed and forgotten."""

from __future__ import annotations

from typing import Protocol

from aiohttp import web

from headrace.catalog import Catalog
from headrace.sftp import KnownHosts
from headrace.web.errors import INVALID_INPUT, guarded
from headrace.web.service import json_error, json_response


class HasCatalog(Protocol):
    catalog: Catalog | None


class HostKeyRoutes:
    def __init__(self, service: HasCatalog) -> None:
        self.service = service

    def register(self, router: web.UrlDispatcher) -> None:
        router.add_get("/api/sftp-host-keys", guarded(self.list, INVALID_INPUT))
        router.add_delete("/api/sftp-host-keys/{host}/{port}", guarded(self.forget, INVALID_INPUT))

    @property
    def known(self) -> KnownHosts:
        assert self.service.catalog is not None
        return KnownHosts(self.service.catalog.pool)

    async def list(self, request: web.Request) -> web.Response:
        return json_response(await self.known.list())

    async def forget(self, request: web.Request) -> web.Response:
        """The server's key was replaced on purpose: the next connection to it records the key it presents."""
        host, port = request.match_info["host"], request.match_info["port"]
        if not port.isdigit() or not 0 < int(port) < 65536:
            return json_error(404, f"no host key is recorded for {host}:{port}")
        if not await self.known.forget(host, int(port)):
            return json_error(404, f"no host key is recorded for {host}:{port}")
        return json_response({"forgotten": {"host": host.lower(), "port": int(port)}})
