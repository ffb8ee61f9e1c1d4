"""Pages as HTML: the Jinja2 environment (autoescaped), the static files, and the small filters the templates use."""

from __future__ import annotations

import mimetypes
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jinja2
from aiohttp import web

from headrace import __version__

STATIC_DIR = Path(__file__).with_name("static")
# Nothing is fetched from elsewhere, and no inline script runs; inline styles are allowed for the drawn SVGs.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; script-src 'self'; form-action 'self'"
)

ENVIRONMENT = jinja2.Environment(
    loader=jinja2.PackageLoader("console", "templates"),
    autoescape=True,
    # The APIs leave out what a definition does not set: a missing key shows as nothing, not as an error.
    undefined=jinja2.ChainableUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _when(value: Any) -> str:
    """An ISO timestamp as the page shows it: UTC, to the second."""
    if not value:
        return "—"
    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return str(value)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _number(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.1f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _size(value: Any) -> str:
    if not isinstance(value, int | float):
        return "—"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    return str(value)


ENVIRONMENT.filters["when"] = _when
ENVIRONMENT.filters["number"] = _number
ENVIRONMENT.filters["size"] = _size


def render(request: web.Request, template: str, status: int = 200, **context: Any) -> web.Response:
    """A page; every page gets the CSRF token for its forms and the navigation."""
    page = ENVIRONMENT.get_template(template).render(
        csrf_token=request.get("csrf_token", ""),
        path=request.path,
        version=__version__,
        **context,
    )
    return web.Response(
        text=page,
        status=status,
        content_type="text/html",
        headers={
            "Content-Security-Policy": CONTENT_SECURITY_POLICY,
            "X-Frame-Options": "DENY",
            "Referrer-Policy": "same-origin",
            "Cache-Control": "no-store",
        },
    )


def load_static() -> dict[str, tuple[bytes, str]]:
    """The few static files, read once at start: served from memory, and no path from a request reaches the disk."""
    files: dict[str, tuple[bytes, str]] = {}
    for path in STATIC_DIR.iterdir():
        if path.is_file():
            files[path.name] = (path.read_bytes(), mimetypes.guess_type(path.name)[0] or "application/octet-stream")
    return files
