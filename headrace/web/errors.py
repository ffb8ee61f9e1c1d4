"""One convention for errors on every management API: `{"error": …}` bodies, 422 with field paths for invalid input.

A route says how it answers the exceptions its work may raise (`ErrorAnswers`, first match wins); `guarded` applies
that to a handler and jobs (headrace.web.jobs) apply the same list to a job's failure, so a route answers the same
whether it runs in the request or as a job. An invalid definition or body is 422 everywhere, its body
`{"error": "a.b: message; …", "errors": [{"path": ["a", "b"], "message": "…"}]}`, built here from pydantic's errors
or from an InvalidDefinition. The schema registry keeps Confluent's own error shape (it is a compatibility API).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson
from aiohttp import web
from pydantic import ValidationError

from headrace.web.service import json_error

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
ExceptionKinds = type[Exception] | tuple[type[Exception], ...]
# How a route answers an exception: a status with the exception's text, or a function making the answer.
ErrorAnswers = list[tuple[ExceptionKinds, int | Callable[[Any], web.Response]]]
Path = Sequence[str | int]


class MalformedJson(ValueError):
    """A body that is not JSON at all (400, unlike JSON that is not what the route takes: 422)."""


class InvalidDefinition(ValueError):
    """Input that is not what the route takes, with the path of each field at fault (answered 422)."""

    def __init__(self, errors: list[tuple[Path, str]]) -> None:
        self.errors = [{"path": list(path), "message": message} for path, message in errors]
        super().__init__(_joined(self.errors))

    @classmethod
    def at(cls, path: Path, message: str) -> InvalidDefinition:
        return cls([(path, message)])


def _joined(errors: list[dict[str, Any]]) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['path']) or 'body'}: {e['message']}" for e in errors)


def validation_errors(exc: ValidationError) -> list[dict[str, Any]]:
    """pydantic's errors as `{"path", "message"}` (a discriminated union's tag is in the path, as pydantic puts it)."""
    return [{"path": list(e["loc"]), "message": e["msg"]} for e in exc.errors()]


def invalid(errors: list[dict[str, Any]]) -> web.Response:
    return json_error(422, _joined(errors), errors=errors)


# Every management route answers invalid input this way; routes add their own answers before these.
INVALID_INPUT: ErrorAnswers = [
    (MalformedJson, 400),
    (ValidationError, lambda exc: invalid(validation_errors(exc))),
    (InvalidDefinition, lambda exc: invalid(exc.errors)),
    (ValueError, lambda exc: invalid([{"path": [], "message": str(exc)}])),
]


def error_answer(exc: Exception, errors: ErrorAnswers) -> web.Response | None:
    """The answer to `exc` by the first matching entry, or None when no entry matches (a bug: 500)."""
    for kinds, answer in errors:
        if isinstance(exc, kinds):
            return answer(exc) if callable(answer) else json_error(answer, str(exc))
    return None


def guarded(handler: Handler, errors: ErrorAnswers) -> Handler:
    """A route answering the user's errors as JSON; the admin token is the service guard's (headrace.web.auth)."""

    async def guarded_handler(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except Exception as exc:
            answer = error_answer(exc, errors)
            if answer is None:
                raise
            return answer

    return guarded_handler


async def read_json(request: web.Request, default: Any = None) -> Any:
    """The request's JSON body (`default` when it is empty and a default is given)."""
    raw = await request.read()
    if not raw.strip() and default is not None:
        return default
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise MalformedJson(f"malformed JSON: {exc}") from exc


def json_object(body: Any, what: str = "the body") -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidDefinition.at([], f"{what} is a JSON object")
    return body
