"""Where collectors, file imports and exports may connect: public addresses, and what HEADRACE_OUTBOUND_ALLOW lists."""

from __future__ import annotations

import asyncio
import functools
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

if TYPE_CHECKING:
    from headrace.settings import Settings

Address = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network
# What makes an address internal, in the order an error names it (127.0.0.1 is private too, but loopback says more).
_INTERNAL_KINDS = ("loopback", "link_local", "multicast", "unspecified", "private", "reserved")
# DSN parameters that make the client read local files (a password file, a service file): not for outside servers.
_LOCAL_FILE_PARAMETERS = ("passfile", "service", "servicefile")
POSTGRES_PORT = 5432
T = TypeVar("T")


class OutboundRefused(ValueError):
    """A host outbound connections may not reach; the message says why and what would allow it."""


def _plain(address: Address) -> Address:
    """An IPv4-mapped IPv6 address (::ffff:127.0.0.1) as the IPv4 address it reaches."""
    if isinstance(address, IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def internal_kind(address: Address) -> str | None:
    """Why an address is off limits unless allowed (loopback, private…); None for a public one."""
    address = _plain(address)
    for kind in _INTERNAL_KINDS:
        if getattr(address, f"is_{kind}"):
            return kind.replace("_", "-")
    return None if address.is_global else "non-public"


def literal_address(host: str) -> Address | None:
    """The address a host names without any lookup: an IP literal, or a legacy numeric IPv4 form (127.1)."""
    bare = host.strip("[]")
    try:
        return ip_address(bare)
    except ValueError:
        pass
    if bare and all(c in "0123456789abcdefx." for c in bare.lower()) and bare[0].isdigit():
        try:
            return IPv4Address(socket.inet_aton(bare))
        except OSError:
            return None
    return None


@dataclass(frozen=True)
class OutboundPolicy:
    """Public addresses may be reached; internal ones only when the host name, the address or its network is listed."""

    names: frozenset[str]
    networks: tuple[Network, ...]

    @classmethod
    def parse(cls, text: str) -> OutboundPolicy:
        names: set[str] = set()
        networks: list[Network] = []
        for item in (piece.strip() for piece in text.split(",")):
            if not item:
                continue
            try:
                networks.append(ip_network(item.strip("[]"), strict=False))
            except ValueError:
                names.add(item.lower().rstrip("."))
        return cls(frozenset(names), tuple(networks))

    @classmethod
    def from_settings(cls, settings: Settings) -> OutboundPolicy:
        return _policy_for(settings.outbound_allow)

    def _names_allowed(self, host: str) -> bool:
        return host.lower().rstrip(".") in self.names

    def check_address(self, host: str, address: Address) -> None:
        kind = internal_kind(address)
        if kind is None or self._names_allowed(host):
            return
        plain = _plain(address)
        if any(plain in network or address in network for network in self.networks):
            return
        via = "" if host.strip("[]") == str(address) else f" (which resolves to {address})"
        raise OutboundRefused(
            f"{host}{via} is a {kind} address: outbound connections there are refused unless HEADRACE_OUTBOUND_ALLOW"
            " lists the host, the address or its network"
        )

    def check_literal(self, host: str) -> None:
        """Refuse now what is known without a lookup (an address, localhost, a local socket); names wait for a run."""
        if self._names_allowed(host):
            return
        if not host or host.startswith("/"):
            raise OutboundRefused("a connection without a host (a local socket) is refused: name the server's host")
        address = literal_address(host)
        name = host.lower().rstrip(".")
        if address is None and (name == "localhost" or name.endswith(".localhost")):
            address = IPv4Address("127.0.0.1")  # localhost is loopback by definition (RFC 6761)
        if address is not None:
            self.check_address(host, address)

    async def resolve(self, host: str, port: int) -> list[str]:
        """The host's addresses, each checked; OutboundRefused if any is internal and not allowed, OSError if none."""
        self.check_literal(host)
        address = literal_address(host)
        if address is not None:
            return [str(address)]
        found = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        addresses = list(dict.fromkeys(str(info[4][0]) for info in found))
        for each in addresses:
            self.check_address(host, ip_address(each.split("%", 1)[0]))
        return addresses

    async def check_url(self, url: str | None) -> None:
        """Check the host of an endpoint URL (S3, HTTP) before connecting to it; None (a default endpoint) passes."""
        if not url:
            return
        host, port = url_host(url)
        await self.resolve(host, port)

    def resolver(self) -> AbstractResolver:
        """An aiohttp resolver that checks every address it returns, so a name cannot change between check and use."""
        return _CheckedResolver(self)


@functools.lru_cache(maxsize=4)
def _policy_for(text: str) -> OutboundPolicy:
    return OutboundPolicy.parse(text)


class _CheckedResolver(AbstractResolver):
    def __init__(self, policy: OutboundPolicy) -> None:
        self._policy = policy
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        for each in found:
            self._policy.check_address(host, ip_address(each["host"].split("%", 1)[0]))
        return found

    async def close(self) -> None:
        await self._inner.close()


async def first_answering(addresses: list[str], attempt: Callable[[str], Awaitable[T]]) -> T:
    """The first checked address that answers (a name may resolve to IPv6 and IPv4 while the server listens on one)."""
    failure: OSError | None = None
    for address in addresses:
        try:
            return await attempt(address)
        except OSError as exc:
            failure = exc
    assert failure is not None
    raise failure


def url_host(url: str) -> tuple[str, int]:
    """A URL's host and port (the scheme's default port when it names none)."""
    parts = urlsplit(url)
    if not parts.hostname:
        raise OutboundRefused(f"{parts.scheme or 'the'} URL names no host")
    default = {"http": 80, "https": 443, "sftp": 22, "ssh": 22, "ftp": 21, "ftps": 21}.get(parts.scheme.lower(), 0)
    return parts.hostname, parts.port or default


def dsn_hosts(dsn: str) -> list[tuple[str, int]]:
    """The servers a Postgres DSN connects to, read as asyncpg reads them; refuses a DSN that reads local files.

    asyncpg takes the hosts of the URL's authority (`host1:5432,host2`), else its `host` parameter; with neither it
    falls back to a local socket, which is refused.
    """
    parts = urlsplit(dsn)
    if parts.scheme not in ("postgres", "postgresql"):
        raise OutboundRefused("a Postgres source is a postgresql://user:password@host:port/database URL")
    query = parse_qs(parts.query)
    for name in _LOCAL_FILE_PARAMETERS:
        if name in query:
            raise OutboundRefused(f"the DSN parameter {name!r} reads a file on the Headrace server: not accepted")
    hostspec = parts.netloc.partition("@")[2] if "@" in parts.netloc else parts.netloc
    if not hostspec and query.get("host"):
        hostspec = query["host"][-1]
    ports = [int(p) for p in query["port"][-1].split(",") if p] if query.get("port") else []
    hosts: list[tuple[str, int]] = []
    for index, item in enumerate(piece for piece in unquote(hostspec).split(",") if piece):
        default = ports[index] if index < len(ports) else (ports[-1] if ports else POSTGRES_PORT)
        if item.startswith("["):  # [v6]:port
            address, _, rest = item[1:].partition("]")
            hosts.append((address, int(rest[1:]) if rest.startswith(":") else default))
        elif item.count(":") == 1:
            name, _, port = item.partition(":")
            hosts.append((name, int(port) if port else default))
        else:
            hosts.append((item, default))
    if not hosts:
        raise OutboundRefused("the DSN names no host (asyncpg would use a local socket): name the server's host")
    return hosts
