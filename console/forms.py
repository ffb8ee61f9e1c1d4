"""Reading a posted form: every field bounded in size, refused with a message the page shows next to the form."""

from __future__ import annotations

from aiohttp import web

# A storage's, flow's or export's name: the services check it again; this only bounds it.
MAX_NAME_CHARS = 63
MAX_FIELD_CHARS = 1000


class FormError(ValueError):
    """A field the console refuses before calling any service."""


async def text_field(request: web.Request, name: str, max_chars: int = MAX_FIELD_CHARS, required: bool = True) -> str:
    form = await request.post()  # read once, by the guard's CSRF check, and kept by aiohttp
    value = form.get(name, "")
    if not isinstance(value, str):
        raise FormError(f"{name}: a text field")
    value = value.strip()
    if len(value) > max_chars:
        raise FormError(f"{name}: at most {max_chars} characters")
    if required and not value:
        raise FormError(f"{name}: required")
    return value


def name_list(value: str) -> list[str]:
    """`a, b` → ["a", "b"] (a primary key's columns)."""
    return [part.strip() for part in value.split(",") if part.strip()]
