"""Credentials `headrace up` generates and keeps in its data dir (mode 0600), and URLs shown with them masked."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Callable
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from headrace.settings import ADMIN_TOKEN_FILE, SECRET_KEY_FILE, Settings, read_kept

MASK = "***"
# Query parameters of a DSN that carry a secret (libpq and asyncpg read the password from the query too).
_SECRET_PARAMS = {"password", "sslpassword"}
_KEY_VALUE_PASSWORD = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
# PostgreSQL's own default for the SCRAM iteration count.
SCRAM_ITERATIONS = 4096


def generate_secret() -> str:
    return secrets.token_urlsafe(32)


def create_secret_file(path: Path, value: str) -> None:
    """Write a new secret file, mode 0600 from its creation on; fail if it exists, so no secret is replaced."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(value + "\n")
        file.flush()
        os.fsync(file.fileno())


def read_secret_file(path: Path) -> str | None:
    """The secret kept in a file, its mode narrowed to 0600 if someone widened it; None when there is none."""
    value = read_kept(path)
    if value is not None and path.stat().st_mode & 0o077:
        path.chmod(0o600)
    return value


def kept_secret(path: Path) -> tuple[str, bool]:
    """The secret kept in `path`, made now if there is none; and whether it was made now."""
    found = read_secret_file(path)
    if found is not None:
        return found, False
    value = generate_secret()
    try:
        create_secret_file(path, value)
    except FileExistsError:  # another `headrace up` on this data dir made it first (or left it empty)
        found = read_secret_file(path)
        if found is None:
            raise RuntimeError(f"{path} is empty: delete it to have a new one made") from None
        return found, False
    return value, True


def shown_path(path: Path) -> str:
    """A path as the user would type it: relative to the working directory when it lies inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def ensure_credentials(settings: Settings, say: Callable[[str], None]) -> Settings:
    """The admin token and secret key the services get: the environment's, else the data dir's, else new ones.

    A new admin token is printed once, now; afterwards only where it is kept. The secret key is never printed.
    """
    update: dict[str, str] = {}
    for field, name, label in (
        ("admin_token", ADMIN_TOKEN_FILE, "admin token"),
        ("secret_key", SECRET_KEY_FILE, "secret key"),
    ):
        if getattr(settings, field):
            say(f"{label:<16} from HEADRACE_{field.upper()}")
            continue
        path = settings.data_dir / name
        value, made = kept_secret(path)
        update[field] = value
        if made and field == "admin_token":
            say(f"{label:<16} {value}  (new: shown only this once; kept in {shown_path(path)})")
        else:
            say(f"{label:<16} {'new, ' if made else ''}in {shown_path(path)}")
    return settings.model_copy(update=update)


def mask_url(url: str) -> str:
    """A URL or DSN with any password it carries (user info, query, key=value) replaced by ***."""
    parts = urlsplit(url)
    if not parts.scheme or not parts.netloc:
        return _KEY_VALUE_PASSWORD.sub(lambda match: match.group(1) + MASK, url)
    netloc = parts.netloc
    userinfo, at, hosts = netloc.rpartition("@")
    if at and ":" in userinfo:
        netloc = f"{userinfo.split(':', 1)[0]}:{MASK}@{hosts}"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(key.lower() in _SECRET_PARAMS for key, _ in pairs):
            query = urlencode([(k, MASK if k.lower() in _SECRET_PARAMS else v) for k, v in pairs], safe="*")
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def scram_verifier(password: str) -> str:
    """The SCRAM-SHA-256 verifier Postgres stores for a password (RFC 5802/7677), so that the password itself
    never travels in SQL: a statement that fails is echoed in the server's output, and that goes to a log."""
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, SCRAM_ITERATIONS)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${SCRAM_ITERATIONS}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"
