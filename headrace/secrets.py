"""Stored credentials: sealed with the platform's secret key at rest, masked by an allowlist when shown, redacted."""

from __future__ import annotations

import base64
import binascii
import functools
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

if TYPE_CHECKING:
    import uuid

    import asyncpg

    from headrace.settings import Settings

MASK = "***"
# A sealed value is text, so it sits in the jsonb where the clear value was; the version names key and cipher.
SEALED_PREFIX = "enc:v1:"
_NONCE_BYTES = 12
# HKDF turns any key text into an AES-256 key; the salt and info keep this key apart from other uses of the text.
_KDF_SALT = b"headrace stored credentials"
_KDF_INFO = b"v1 aes-256-gcm"
_AAD = b"headrace:v1"
# Header values shown in clear; every other header may carry a credential (X-Api-Key, X-Auth-Token, Cookie…).
SHOWN_HEADERS = frozenset({"accept", "accept-encoding", "accept-language", "content-type", "user-agent"})
# Schemes whose userinfo is a credential even without a password (`https://<token>@api.example.com`).
_TOKEN_USERINFO_SCHEMES = frozenset({"http", "https", "ws", "wss"})


class SecretKeyMismatch(RuntimeError):
    """A sealed value does not open: HEADRACE_SECRET_KEY is not the key it was sealed with (or the value is corrupt)."""


class SecretBox:
    """AES-256-GCM under a key derived from the operator's key text; each value gets a random nonce."""

    def __init__(self, key_text: str) -> None:
        if not key_text:
            raise ValueError("the secret key is empty")
        kdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=_KDF_SALT, info=_KDF_INFO)
        self._aead = AESGCM(kdf.derive(key_text.encode()))

    @classmethod
    def from_settings(cls, settings: Settings) -> SecretBox:
        return _box_for(settings.require_secret_key())

    def seal(self, text: str) -> str:
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aead.encrypt(nonce, text.encode(), _AAD)
        return SEALED_PREFIX + base64.urlsafe_b64encode(nonce + sealed).decode()

    def open(self, value: str) -> str:
        if not is_sealed(value):
            raise ValueError("not a sealed value")
        try:
            raw = base64.urlsafe_b64decode(value[len(SEALED_PREFIX) :])
            return self._aead.decrypt(raw[:_NONCE_BYTES], raw[_NONCE_BYTES:], _AAD).decode()
        except (InvalidTag, ValueError, binascii.Error):
            raise SecretKeyMismatch(
                "a stored credential does not decrypt: HEADRACE_SECRET_KEY is not the key it was encrypted with"
                " (start the services with that key, or create the definition again with its credentials)"
            ) from None


@functools.lru_cache(maxsize=4)
def _box_for(key_text: str) -> SecretBox:
    return SecretBox(key_text)


def is_sealed(value: object) -> bool:
    return isinstance(value, str) and value.startswith(SEALED_PREFIX)


@dataclass(frozen=True)
class SecretFields:
    """Which fields of a definition's JSON are credentials (sealed at rest) and which may be shown in clear.

    Field names apply at any depth. Showing is an allowlist: a field not named in `shown`, `urls` or `headers` that
    holds a value is shown as ***, so a field added later stays hidden until someone decides it may be shown.
    """

    sealed: frozenset[str]  # text fields stored sealed
    sealed_maps: frozenset[str] = frozenset()  # dict fields whose every value is stored sealed (HTTP headers)
    shown: frozenset[str] = frozenset()  # shown as they are
    urls: frozenset[str] = frozenset()  # shown as URLs with their credentials and query values masked
    headers: frozenset[str] = frozenset()  # dicts of HTTP headers: values shown for SHOWN_HEADERS only

    def seal(self, data: dict[str, Any], box: SecretBox) -> dict[str, Any]:
        """The JSON to store: every credential sealed."""
        sealed: dict[str, Any] = self._map_secrets(data, box.seal)
        return sealed

    def open(self, data: dict[str, Any], box: SecretBox) -> dict[str, Any]:
        """The stored JSON with its credentials in clear again (a value stored before sealing existed stays as is)."""
        opened: dict[str, Any] = self._map_secrets(data, lambda v: box.open(v) if is_sealed(v) else v)
        return opened

    def in_clear(self, data: dict[str, Any]) -> bool:
        """Whether stored JSON still holds a credential in clear (written before credentials were sealed)."""
        clear: list[str] = []

        def note(value: str) -> str:
            if not is_sealed(value):
                clear.append(value)
            return value

        self._map_secrets(data, note)
        return bool(clear)

    def _map_secrets(self, data: Any, change: Callable[[str], str]) -> Any:
        if isinstance(data, list):
            return [self._map_secrets(item, change) for item in data]
        if not isinstance(data, dict):
            return data
        result: dict[str, Any] = {}
        for key, value in data.items():
            if key in self.sealed and isinstance(value, str) and value:
                result[key] = change(value)
            elif key in self.sealed_maps and isinstance(value, dict):
                result[key] = {k: change(v) if isinstance(v, str) and v else v for k, v in value.items()}
            else:
                result[key] = self._map_secrets(value, change)
        return result

    def keep_masked(self, new: Any, old: Any) -> Any:
        """A changed definition with every credential sent back as shown (masked) replaced by the stored one, so
        `show`, edit, `PUT` changes what was edited and never turns a password into ***."""
        if isinstance(new, list):
            olds = old if isinstance(old, list) else []
            return [self.keep_masked(v, olds[i] if i < len(olds) else None) for i, v in enumerate(new)]
        if not isinstance(new, dict):
            return new
        before = old if isinstance(old, dict) else {}
        kept: dict[str, Any] = {}
        for key, value in new.items():
            previous = before.get(key)
            if key in self.sealed_maps and isinstance(value, dict) and isinstance(previous, dict):
                shown = self._masked(key, previous)
                kept[key] = {k: previous.get(k, v) if v == shown.get(k) else v for k, v in value.items()}
            elif previous is not None and not isinstance(value, dict | list) and value == self._masked(key, previous):
                kept[key] = previous  # unchanged from what `show` gave: the stored value, masked or not
            else:
                kept[key] = self.keep_masked(value, previous)
        return kept

    def mask(self, data: dict[str, Any]) -> dict[str, Any]:
        """The JSON as the API and CLI show it."""
        return {key: self._masked(key, value) for key, value in data.items()}

    def _masked(self, key: str, value: Any) -> Any:
        if value is None or value == "" or value == [] or value == {}:
            return value  # nothing to hide, and "unset" is worth seeing
        if key in self.urls:
            return mask_url(value) if isinstance(value, str) else MASK
        if key in self.headers:
            return mask_headers(value) if isinstance(value, dict) else MASK
        if isinstance(value, dict):
            return self.mask(value)
        return value if key in self.shown else MASK


class SealedDefinitions:
    """The jsonb `definition` column of a table (collectors, exports), its credentials sealed: what both stores share.

    The key is taken only once a definition is read or written, so a service that holds none runs without one. A row
    written before sealing existed is sealed the first time it is read (SQL cannot: the key is never in the database).
    """

    def __init__(self, pool: asyncpg.Pool, settings: Settings, fields: SecretFields, table: str) -> None:
        self.pool = pool
        self.settings = settings
        self.fields = fields
        self.table = table

    @functools.cached_property
    def _box(self) -> SecretBox:
        return SecretBox.from_settings(self.settings)

    def seal(self, definition: dict[str, Any]) -> dict[str, Any]:
        """The JSON to write."""
        return self.fields.seal(definition, self._box)

    async def open(self, row_id: uuid.UUID, stored: dict[str, Any]) -> dict[str, Any]:
        """The stored JSON with its credentials in clear; a row still in clear is sealed in passing."""
        opened = self.fields.open(stored, self._box)
        if self.fields.in_clear(stored):
            await self.pool.execute(
                f"UPDATE {self.table} SET definition = $2 WHERE id = $1 AND definition = $3",
                row_id,
                self.seal(opened),
                stored,
            )
        return opened


def mask_headers(headers: dict[str, Any]) -> dict[str, Any]:
    return {name: value if name.lower() in SHOWN_HEADERS else MASK for name, value in headers.items()}


def mask_url(url: str) -> str:
    """A URL or DSN that can be shown: its password (all of its userinfo on HTTP) and every query value masked.

    `postgresql://app:pw@db/shop?sslmode=require` → `postgresql://app:***@db/shop?sslmode=***`. Anything that does
    not take apart as scheme://host… is masked whole.
    """
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    if not parts.scheme or not parts.netloc:
        return MASK
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        if parts.scheme.lower() in _TOKEN_USERINFO_SCHEMES:
            netloc = f"{MASK}@{hostport}"
        elif ":" in userinfo:
            netloc = f"{user}:{MASK}@{hostport}"
    query = "&".join(
        f"{piece.split('=', 1)[0]}={MASK}" if "=" in piece else MASK for piece in parts.query.split("&") if piece
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, MASK if parts.fragment else ""))


# A URL in free text: a scheme, ://, then anything up to white space or a quote. Trailing punctuation is put back.
_URL_IN_TEXT = re.compile(r"\b[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+")
_TRAILING = ".,;:!)]}"
# `password=…` outside a URL (a libpq key/value DSN, a command line).
_PASSWORD_IN_TEXT = re.compile(r"(?i)\b(password|passwd|pwd)(\s*=\s*)[^\s&'\"]+")


def _masked_match(match: re.Match[str]) -> str:
    text = match.group()
    core = text.rstrip(_TRAILING)
    return mask_url(core) + text[len(core) :]


def redact(text: str) -> str:
    """Error texts and log lines made safe to keep and show: every URL's credentials and query values masked."""
    if "://" in text:
        text = _URL_IN_TEXT.sub(_masked_match, text)
    if "=" in text:
        text = _PASSWORD_IN_TEXT.sub(rf"\g<1>\g<2>{MASK}", text)
    return text
