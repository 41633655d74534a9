"""API keys: admin keys from FACEMATCH_API_KEYS, and scoped keys kept hashed in the store.

A stored key has a role and fnmatch patterns over event ids (``acme-*``):

| role      | may                                                                    |
|-----------|------------------------------------------------------------------------|
| admin     | everything, every event                                                |
| organizer | ingest, delete, set access, read stats and forget records of its events |
| reader    | read stats of its events                                               |

Keys are 256-bit random tokens, so a plain SHA-256 is enough to store them (nothing to
brute-force) and lets a key be looked up by its hash. When no key exists at all (no
FACEMATCH_API_KEYS, no active stored key) writes stay open, as before keys existed.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from fnmatch import fnmatchcase

from flask import g, request

from .. import errors
from ..services import Services
from ..store import access_db

ROLES = ("admin", "organizer", "reader")
WRITE = "write"  # ingest, delete, set access
RECORDS = "records"  # read access settings and forget records
STATS = "stats"  # read what an event holds
ROLE_ACTIONS = {"admin": {WRITE, RECORDS, STATS}, "organizer": {WRITE, RECORDS, STATS}, "reader": {STATS}}
KEY_PREFIX = "fmk_"


@dataclass(frozen=True)
class Principal:
    """Who a request speaks for."""

    name: str
    role: str
    patterns: tuple[str, ...] = ("*",)
    open: bool = False  # no keys exist anywhere: the service is open (as before keys existed)

    def may(self, action: str, event_id: str | None) -> bool:
        if action not in ROLE_ACTIONS.get(self.role, set()):
            return False
        if self.role == "admin":
            return True
        if event_id is None:  # scoped keys act on named events only
            return False
        return any(fnmatchcase(event_id, p) for p in self.patterns)


OPEN = Principal("open", "admin", open=True)


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def valid_patterns(patterns: list[str]) -> list[str]:
    cleaned = [p.strip() for p in patterns if p and p.strip()]
    for p in cleaned:
        if len(p) > 256 or any(ch.isspace() for ch in p):
            raise ValueError(f"bad event pattern {p!r}")
    return cleaned


def create_key(services: Services, name: str, role: str, patterns: list[str]) -> str:
    """Stores a new key and returns it: the only time it is ever seen in clear."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}")
    if not name or len(name) > 128:
        raise ValueError("name must be 1 to 128 characters")
    patterns = valid_patterns(patterns)
    if role != "admin" and not patterns:
        raise ValueError("an organizer or reader key needs at least one --events pattern")
    key = new_key()
    with services.store.db.write() as c:
        access_db.insert_key(c, name, key_hash(key), role, patterns or ["*"])
    return key


def _env_admin(given: str, keys: tuple[str, ...]) -> bool:
    ok = False
    for key in keys:  # compare with every key: constant time whichever matches
        ok |= hmac.compare_digest(given.encode(), key.encode())
    return ok


def authenticate(services: Services) -> Principal | None:
    """The request's key as a Principal; None without a key; 401 for a wrong or revoked key."""
    cached = g.get("facematch_principal")
    if cached is not None:
        return cached
    given = request.headers.get("X-API-Key", "")
    if not given:
        return None
    if _env_admin(given, services.settings.api_keys):
        principal = Principal("FACEMATCH_API_KEYS", "admin")
    else:
        with services.store.db.read() as c:
            row = access_db.key_by_hash(c, key_hash(given))
        if row is None or row.revoked_at is not None:
            raise errors.unauthorized()
        principal = Principal(row.name, row.role, row.patterns)
    g.facematch_principal = principal
    return principal


def keys_exist(services: Services) -> bool:
    if services.settings.api_keys:
        return True
    with services.store.db.read() as c:
        return access_db.any_active_key(c)


ANY_EVENT = object()  # require(..., ANY_EVENT): the role only; the view checks the event later


def require(services: Services, action: str, event_id: str | None | object = None) -> Principal:
    """The principal allowed to do ``action`` on ``event_id``: 401 without a key (when keys
    exist), 403 ``forbidden`` for a key outside its role or events."""
    principal = authenticate(services)
    if principal is None:
        if keys_exist(services):
            raise errors.unauthorized()
        return OPEN
    if event_id is ANY_EVENT:
        if action not in ROLE_ACTIONS.get(principal.role, set()):
            raise errors.forbidden(f"key {principal.name!r} ({principal.role}) may not {action}")
        return principal
    if not principal.may(action, event_id):  # type: ignore[arg-type]
        where = f" on event {event_id!r}" if event_id is not None else ""
        raise errors.forbidden(f"key {principal.name!r} ({principal.role}) may not {action}{where}")
    return principal
