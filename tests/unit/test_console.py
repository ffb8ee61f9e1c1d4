"""The console's pure parts: the login cookie and CSRF token, where a login may send back to, metric rates."""

from __future__ import annotations

from console.overview import Rates, samples
from console.session import LIFETIME_SECONDS, cookie_valid, csrf_token, new_cookie, safe_next

TOKEN = "admin-token"


def test_the_cookie_is_signed_with_the_admin_token_and_expires() -> None:
    cookie = new_cookie(TOKEN, now=1_000_000)
    assert TOKEN not in cookie
    assert cookie_valid(TOKEN, cookie, now=1_000_000 + LIFETIME_SECONDS - 1)
    assert not cookie_valid(TOKEN, cookie, now=1_000_000 + LIFETIME_SECONDS)  # 12 hours later
    assert not cookie_valid(TOKEN, cookie, now=1_000_000 - 10)  # issued in the future
    assert not cookie_valid("rotated-token", cookie, now=1_000_000)  # a new admin token logs everyone out
    issued, _, signature = cookie.partition(".")
    assert not cookie_valid(TOKEN, f"{int(issued) + 1}.{signature}", now=1_000_000)  # a forged issue time
    assert not cookie_valid(TOKEN, None) and not cookie_valid(TOKEN, "") and not cookie_valid(TOKEN, "x" * 500)


def test_the_csrf_token_belongs_to_one_cookie_and_one_admin_token() -> None:
    one, other = new_cookie(TOKEN, now=1), new_cookie(TOKEN, now=2)
    assert csrf_token(TOKEN, one) != csrf_token(TOKEN, other)
    assert csrf_token(TOKEN, one) != csrf_token("rotated-token", one)
    assert csrf_token(TOKEN, one) == csrf_token(TOKEN, one)


def test_a_login_sends_back_only_to_a_page_of_the_console() -> None:
    assert safe_next("/flows/sales?node=step%3Alines") == "/flows/sales?node=step%3Alines"
    for target in (None, "", "https://evil.example/", "//evil.example/", "/\\evil.example", "javascript:alert(1)"):
        assert safe_next(target) == "/"


def test_metric_samples_and_rates() -> None:
    text = (
        "# HELP headrace_ingest_events_accepted_total Events\n"
        "# TYPE headrace_ingest_events_accepted_total counter\n"
        "headrace_ingest_events_accepted_total 100.0\n"
        "headrace_ingest_events_accepted_created 1.7e+09\n"
        'headrace_transform_consumer_lag{partition="0",topic="headrace.ingest.a"} 3.0\n'
    )
    wanted = frozenset({"headrace_ingest_events_accepted_total", "headrace_transform_consumer_lag"})
    assert samples(text, wanted) == [
        ("headrace_ingest_events_accepted_total", {}, 100.0),
        ("headrace_transform_consumer_lag", {"partition": "0", "topic": "headrace.ingest.a"}, 3.0),
    ]
    assert samples(None, wanted) == []
    rates = Rates()
    assert rates.rate("events", 100.0, now=10.0) is None  # one scrape: no rate yet
    assert rates.rate("events", 150.0, now=12.0) == 25.0
    assert rates.rate("events", 160.0, now=12.5) == 25.0  # too soon after: the last rate again
    assert rates.rate("events", 5.0, now=20.0) is None  # the counter restarted with its service
    assert rates.rate("events", None) is None
