"""Event access codes: stored as salted scrypt hashes, compared in constant time.

scrypt makes each guess cost ~50 ms and 16 MiB, so a stolen database does not give the
codes away cheaply. A correct code is then remembered per process (as an HMAC under a
random per-process key, never in clear), so an attendee's match, "load more" pages and
forget do not pay the KDF again; wrong codes always pay it and are rate-limited per
address and event (limits.py).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading

from flask import request

from .. import errors
from ..services import Services
from ..store import access_db
from . import keys, limits

MODES = ("open", "code")
MIN_CODE_LEN = 6
MAX_CODE_LEN = 128
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
_CACHE_MAX = 4096


def hash_code(code: str) -> str:
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(code.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def _kdf_matches(stored: str, code: str) -> bool:
    try:
        kind, n, r, p, salt, want = stored.split("$")
        if kind != "scrypt":
            return False
        got = hashlib.scrypt(code.encode(), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p),
                             dklen=len(want) // 2)
    except ValueError:
        return False
    return hmac.compare_digest(got.hex(), want)


class VerifiedCodes:
    """Codes this process already verified, per stored hash (a new code means a new hash)."""

    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)
        self._seen: set[tuple[str, bytes]] = set()
        self._lock = threading.Lock()

    def _tag(self, stored: str, code: str) -> tuple[str, bytes]:
        return stored, hmac.new(self._key, code.encode(), hashlib.sha256).digest()

    def check(self, stored: str, code: str) -> bool:
        tag = self._tag(stored, code)
        with self._lock:
            if tag in self._seen:
                return True
        if not _kdf_matches(stored, code):
            return False
        with self._lock:
            if len(self._seen) >= _CACHE_MAX:
                self._seen.clear()
            self._seen.add(tag)
        return True


VERIFIED = VerifiedCodes()


def validate_code(code: object) -> str:
    if not isinstance(code, str) or not MIN_CODE_LEN <= len(code) <= MAX_CODE_LEN:
        raise errors.invalid_access(f"'code' must be a string of {MIN_CODE_LEN} to {MAX_CODE_LEN} characters")
    if code != code.strip() or any(not ch.isprintable() for ch in code):
        raise errors.invalid_access("'code' must be printable, without leading or trailing spaces")
    return code


def event_mode(services: Services, event_id: str) -> tuple[str, access_db.AccessRow | None]:
    with services.store.db.read() as c:
        row = access_db.get_access(c, event_id)
    return (row.mode if row is not None else services.settings.default_event_access), row


def given_code(form_code: str | None = None) -> str | None:
    return request.headers.get("X-Event-Code") or form_code or None


def require_attendee(services: Services, event_id: str, code: str | None) -> None:
    """An attendee call on ``event_id``: free on an ``open`` event; on a ``code`` event the code
    (or a key that may read the event's stats) is needed. 403 ``event_code_required`` /
    ``event_code_invalid``; 429 once an address has guessed wrong too often for this event."""
    mode, row = event_mode(services, event_id)
    if mode == "open":
        return
    if request.headers.get("X-API-Key"):
        principal = keys.authenticate(services)
        if principal is not None and principal.may(keys.STATS, event_id):
            return
    if not code:
        raise errors.event_code_required(event_id)
    limits.refuse_if_guessing(services, event_id)  # even the right code, until the window passes
    stored = row.code_hash if row is not None else None
    if stored and len(code) <= MAX_CODE_LEN and VERIFIED.check(stored, code):
        return
    limits.record_wrong_code(services, event_id)
    raise errors.event_code_invalid(event_id)


def set_mode(services: Services, event_id: str, mode: object, code: object, by: str | None) -> str:
    if mode not in MODES:
        raise errors.invalid_access("'mode' must be 'open' or 'code'")
    stored = None
    if mode == "code":
        stored = hash_code(validate_code(code))
    elif code is not None:
        raise errors.invalid_access("an 'open' event takes no 'code'")
    with services.store.db.write() as c:
        access_db.set_access(c, event_id, str(mode), stored, by)
    return str(mode)
