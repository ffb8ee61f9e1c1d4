"""The outbound policy: internal addresses refused unless listed; the hosts a DSN or URL really connects to."""

from __future__ import annotations

import re
import socket
from ipaddress import ip_address

import pytest

from headrace.outbound import OutboundPolicy, OutboundRefused, dsn_hosts, internal_kind, url_host

CLOSED = OutboundPolicy.parse("")


@pytest.mark.parametrize(
    ("host", "kind"),
    [
        ("127.0.0.1", "loopback"),
        ("127.1", "loopback"),  # a legacy numeric form, still 127.0.0.1
        ("2130706433", "loopback"),
        ("::1", "loopback"),
        ("[::1]", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("localhost", "loopback"),
        ("db.localhost", "loopback"),
        ("10.1.2.3", "private"),
        ("192.168.0.1", "private"),
        ("169.254.169.254", "link-local"),  # cloud metadata
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("100.64.0.1", "non-public"),
    ],
)
def test_internal_addresses_are_refused_by_default(host: str, kind: str) -> None:
    with pytest.raises(OutboundRefused, match=f"is a {kind} address.*HEADRACE_OUTBOUND_ALLOW"):
        CLOSED.check_literal(host)


def test_public_addresses_and_names_pass_the_literal_check() -> None:
    for host in ("93.184.215.14", "2606:4700::1111", "api.example.com"):
        CLOSED.check_literal(host)


def test_the_allowlist_takes_names_addresses_and_networks() -> None:
    policy = OutboundPolicy.parse(" db.internal , 10.0.0.0/8, 127.0.0.1,::1 ,")
    for host in ("db.internal", "DB.Internal.", "10.9.8.7", "127.0.0.1", "::ffff:127.0.0.1", "::1"):
        policy.check_literal(host)
    for host in ("192.168.1.1", "127.0.0.2", "::2"):
        with pytest.raises(OutboundRefused):
            policy.check_literal(host)
    with pytest.raises(OutboundRefused, match="local socket"):
        policy.check_literal("/var/run/postgresql")


async def test_a_name_is_checked_by_what_it_resolves_to() -> None:
    """This machine's own name resolves (through /etc/hosts) to an internal address in any test environment."""
    name = socket.gethostname()
    try:
        found = {info[4][0] for info in socket.getaddrinfo(name, 80, type=socket.SOCK_STREAM)}
    except OSError:
        pytest.skip("this machine's name does not resolve")
    if not any(internal_kind(ip_address(a.split("%")[0])) for a in found):
        pytest.skip("this machine's name resolves to public addresses only")
    with pytest.raises(OutboundRefused, match=rf"{re.escape(name)} \(which resolves to .*\) is a"):
        await CLOSED.resolve(name, 80)
    with pytest.raises(OutboundRefused):  # what aiohttp connections resolve through
        await CLOSED.resolver().resolve(name, 80)
    assert set(await OutboundPolicy.parse(name).resolve(name, 80)) == found
    assert "127.0.0.1" in await OutboundPolicy.parse("localhost").resolve("localhost", 5432)


def test_the_hosts_of_a_dsn_are_those_asyncpg_connects_to() -> None:
    assert dsn_hosts("postgresql://u:p@db.example.com/shop") == [("db.example.com", 5432)]
    assert dsn_hosts("postgres://u@h1:5433,h2,[::1]:6000/x") == [("h1", 5433), ("h2", 5432), ("::1", 6000)]
    assert dsn_hosts("postgresql:///shop?host=db.example.com&port=6432") == [("db.example.com", 6432)]
    with pytest.raises(OutboundRefused, match="names no host"):
        dsn_hosts("postgresql:///shop")
    with pytest.raises(OutboundRefused, match="'passfile' reads a file"):
        dsn_hosts("postgresql://u@db.example.com/shop?passfile=/root/.pgpass")
    with pytest.raises(OutboundRefused, match="postgresql://"):
        dsn_hosts("mysql://u@db/shop")


def test_url_hosts_get_their_scheme_port() -> None:
    assert url_host("https://api.example.com/x") == ("api.example.com", 443)
    assert url_host("http://[::1]:8080/") == ("::1", 8080)
