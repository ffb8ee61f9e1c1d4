"""The HTTP JSON API source: pages read on the source's origin only, redirects re-checked, every response bounded."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import asyncpg
import orjson
from yarl import URL

from headrace.catalog import Catalog, Storage
from headrace.outbound import OutboundPolicy, OutboundRefused
from headrace.secrets import redact
from headrace.settings import Settings
from ingest.collectors.definitions import CollectorDefinition, decode_cursor, encode_cursor
from ingest.collectors.extractor import Extractor, Records, SourceError
from ingest.collectors.source_models import HttpSource

MAX_REDIRECTS = 5
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_CHUNK = 64 * 1024
_ERROR_EXCERPT = 200


def dig(data: Any, path: str | None) -> Any:
    """The value at a dotted path (`data.items`, `links.next`); None when any step is missing."""
    if not path:
        return data
    for step in path.split("."):
        if isinstance(data, dict):
            data = data.get(step)
        elif isinstance(data, list) and step.isdigit() and int(step) < len(data):
            data = data[int(step)]
        else:
            return None
    return data


def origin(url: URL) -> tuple[str, str, int | None]:
    return url.scheme.lower(), (url.host or "").lower(), url.port


class HttpExtractor(Extractor):
    """Reads every page; incremental modes keep the records past the cursor, and learn the new cursor as they go.

    Every request stays on the source URL's origin (scheme, host, port): a next link or a redirect elsewhere fails
    the run, so the source's headers and credentials are only ever sent where its definition says.
    """

    def __init__(self, definition: CollectorDefinition, settings: Settings, pool: asyncpg.Pool) -> None:
        super().__init__(definition, settings, pool)
        assert isinstance(definition.source, HttpSource)
        self.source: HttpSource = definition.source
        given = URL(self.source.url)
        # Credentials in the URL become a Basic auth header sent with every request, redirects included.
        self.auth = aiohttp.BasicAuth(given.user, given.password or "") if given.user else None
        self.start = given.with_user(None)
        self.origin = origin(self.start)
        self.policy = OutboundPolicy.from_settings(settings)

    async def plan(self, cursor: dict[str, Any] | None) -> dict[str, Any] | None:
        return {"cursor_from": cursor, "cursor_to": None}

    def _on_origin(self, target: URL, what: str) -> URL:
        if origin(target) != self.origin:
            raise SourceError(
                f"{what} {redact(str(target))} leaves the source's origin {self.origin[0]}://{self.origin[1]}:"
                f"{self.origin[2]}: refused, so the source's credentials are sent nowhere else"
            )
        return target.with_user(None)

    async def _read(self, response: aiohttp.ClientResponse) -> bytes:
        limit = self.settings.collector_http_max_bytes
        too_large = SourceError(
            f"GET {redact(str(response.url))}: the response is larger than {limit} bytes"
            " (HEADRACE_COLLECTOR_HTTP_MAX_BYTES)"
        )
        if response.content_length is not None and response.content_length > limit:
            raise too_large
        body = bytearray()
        async for chunk in response.content.iter_chunked(_CHUNK):
            body += chunk
            if len(body) > limit:
                raise too_large
        return bytes(body)

    async def _get(self, session: aiohttp.ClientSession, url: URL, params: dict[str, str]) -> tuple[Any, URL]:
        """One page's JSON and the URL it came from; same-origin redirects are followed, at most MAX_REDIRECTS."""
        query: dict[str, str] | None = params
        for _ in range(MAX_REDIRECTS + 1):
            await self.policy.check_url(str(url))
            async with session.get(url, params=query, allow_redirects=False, auth=self.auth) as response:
                if response.status in _REDIRECTS and "Location" in response.headers:
                    url = self._on_origin(response.url.join(URL(response.headers["Location"])), "a redirect to")
                    query = None  # the Location is the whole target, its query included
                    continue
                if response.status >= 400:
                    excerpt = (await response.content.read(_ERROR_EXCERPT)).decode(errors="replace")
                    raise SourceError(f"GET {redact(str(response.url))} answered {response.status}: {redact(excerpt)}")
                return orjson.loads(await self._read(response)), response.url
        raise SourceError(f"GET {redact(str(url))}: more than {MAX_REDIRECTS} redirects")

    async def pages(self) -> AsyncIterator[list[dict[str, Any]]]:
        source = self.source
        timeout = aiohttp.ClientTimeout(total=self.settings.collector_http_timeout_seconds, sock_connect=15)
        connector = aiohttp.TCPConnector(resolver=self.policy.resolver())
        async with aiohttp.ClientSession(headers=source.headers, timeout=timeout, connector=connector) as session:
            url = self.start
            number = source.first_page if source.pagination == "page" else 0
            for _ in range(source.max_pages):
                body, answered = await self._page(session, url, self._page_params(number))
                records = self._records(body, url)
                if records:
                    yield records
                if source.pagination == "none":
                    return
                if source.pagination == "next":
                    following = dig(body, source.next_path)
                    if not following:
                        return
                    url = self._on_origin(answered.join(URL(str(following))), "the next link")
                    continue
                if not records or (source.size_param and len(records) < source.page_size):
                    return
                number += 1 if source.pagination == "page" else len(records)
            raise SourceError(f"{redact(str(self.start))}: more than {source.max_pages} pages")

    def _page_params(self, number: int) -> dict[str, str]:
        """The query of a page or offset request: the page number (or offset), and the page size if asked for."""
        source = self.source
        params: dict[str, str] = {}
        if source.pagination in ("page", "offset"):
            params[source.page_param] = str(number)
            if source.size_param:
                params[source.size_param] = str(source.page_size)
        return params

    async def _page(self, session: aiohttp.ClientSession, url: URL, params: dict[str, str]) -> tuple[Any, URL]:
        """One page's JSON and the URL it came from; every way the request can fail is a SourceError."""
        try:
            return await self._get(session, url, params)
        except OutboundRefused as exc:
            raise SourceError(str(exc)) from None
        except TimeoutError:
            raise SourceError(
                f"GET {redact(str(url))}: TimeoutError, no complete answer within"
                f" {self.settings.collector_http_timeout_seconds} s (HEADRACE_COLLECTOR_HTTP_TIMEOUT_SECONDS)"
            ) from None
        except (aiohttp.ClientError, orjson.JSONDecodeError, ValueError) as exc:
            raise SourceError(f"GET {redact(str(url))}: {redact(repr(exc))}") from None

    def _records(self, body: Any, url: URL) -> list[dict[str, Any]]:
        """The page's records, at `records_path` (none there: no records); a SourceError unless a list of objects."""
        records = dig(body, self.source.records_path)
        if records is None:
            return []
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise SourceError(
                f"GET {redact(str(url))}: {self.source.records_path or 'the body'} is not a list of objects"
            )
        return records

    async def extract(self, batch: dict[str, Any], catalog: Catalog, storage: Storage) -> Records:
        definition = self.definition
        column = definition.cursor_column
        start = decode_cursor(batch["cursor_from"])
        end = decode_cursor(batch["cursor_to"])
        highest: Any = None
        async for records in self.pages():
            if definition.extract_mode != "snapshot" and column:
                kept = []
                for record in records:
                    value = record.get(column)
                    if value is None or (start is not None and value <= start) or (end is not None and value > end):
                        continue
                    highest = value if highest is None or value > highest else highest
                    kept.append(record)
                records = kept
            if records:
                yield [self._deletion(r) or r for r in records]
        if highest is not None:
            self.observed_cursor = encode_cursor(highest)
