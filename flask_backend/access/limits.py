"""Rate limits (flask-limiter), per client address; ingest per API key.

Which limit a route gets is decided by its endpoint name, so routes added later pick theirs
up without touching this module's callers: ``*.verify`` counts as search, like match,
embed, detect and analyze. Each endpoint has its own budget per address.

Storage: ``memory://`` counts per gunicorn worker (N workers allow N times the limit);
``redis://host:port`` shares counts between every worker and host. If the storage goes away
the limiter falls back to memory and says so in the log instead of failing requests.

Wrong event codes have their own budget per (address, event), kept in the same storage:
once it is spent, even the right code is refused until the window passes (otherwise a
guesser would simply keep going).
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from functools import lru_cache

from flask import Flask, current_app, g, request
from flask_limiter import Limiter, RateLimitExceeded
from limits import RateLimitItem, parse
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter, RateLimiter

from .. import errors
from ..config import Settings
from ..services import Services
from .addresses import client_address

SEARCH = "search"
FORGET = "forget"
INGEST = "ingest"
DOWNLOAD = "download"  # "download all" zips and single originals: each one fetches photos
SEARCH_ENDPOINTS = frozenset({"v2.match", "v1.match", "v2.embed", "v2.detect", "v1.analyze"})
ENDPOINT_KIND = {"events.forget": FORGET, "v2.ingest": INGEST, "v1.ingest": INGEST,
                 "photos.photos_zip": DOWNLOAD, "photos.download": DOWNLOAD}
OFF = ("", "off", "none", "0")
log = logging.getLogger(__name__)
try:  # the redis client is only needed for redis:// storage
    from redis.exceptions import RedisError
except ImportError:  # pragma: no cover
    RedisError = OSError  # type: ignore[assignment,misc]
STORAGE_ERRORS = (RedisError, OSError)


def limit_kind(endpoint: str | None) -> str | None:
    if not endpoint:
        return None
    if endpoint in SEARCH_ENDPOINTS or endpoint.endswith(".verify"):
        return SEARCH
    return ENDPOINT_KIND.get(endpoint)


def _setting(settings: Settings, kind: str) -> str | None:
    value = getattr(settings, f"rate_limit_{kind}").strip()
    return None if value.lower() in OFF else value


def _settings() -> Settings:
    return current_app.extensions["facematch"].settings


def address() -> str:
    """The client address, worked out once per request."""
    if "facematch_address" not in g:
        g.facematch_address = client_address(_settings().forwarded_allow_ips)
    return g.facematch_address


@lru_cache(maxsize=32)
def _parsed(value: str) -> RateLimitItem:
    return parse(value)


def _key() -> str:
    if limit_kind(request.endpoint) == INGEST and request.headers.get("X-API-Key"):
        # per key, by a hash: the key itself never reaches the storage or the log
        return "key:" + hashlib.sha256(request.headers["X-API-Key"].encode()).hexdigest()[:24]
    return "addr:" + address()


def _limit_value() -> str:
    kind = limit_kind(request.endpoint)
    return (kind and _setting(_settings(), kind)) or "1000000 per second"


def _exempt() -> bool:
    kind = limit_kind(request.endpoint)
    return kind is None or _setting(_settings(), kind) is None


def init_limits(app: Flask, settings: Settings) -> Limiter:
    for kind in (SEARCH, FORGET, INGEST, DOWNLOAD, "event_code"):
        value = _setting(settings, kind)
        if value is not None:
            parse(value)  # a typo fails at start, naming the value
    limiter = Limiter(
        key_func=_key,
        app=app,
        default_limits=[_limit_value],
        default_limits_exempt_when=_exempt,
        storage_uri=settings.rate_limit_storage,
        strategy="moving-window",
        headers_enabled=False,  # Retry-After is set on 429s only (below)
        in_memory_fallback_enabled=True,
        key_prefix="facematch",
        enabled=settings.rate_limits_enabled,
    )
    app.extensions["facematch_limiter"] = limiter
    # wrong-code counts when the shared storage is unreachable: per process, like flask-limiter's own fallback
    app.extensions["facematch_code_fallback"] = MovingWindowRateLimiter(MemoryStorage())

    @app.errorhandler(RateLimitExceeded)
    def _too_many(exc: RateLimitExceeded):
        from ..api.errors import error_response

        current = limiter.current_limit
        retry = max(1, math.ceil(current.window[0] - time.time())) if current is not None else 60
        err = errors.rate_limited(retry, f"rate limit {exc.description}")
        response, status = error_response(err.status, err.code, err.message, **err.extra)
        response.headers["Retry-After"] = str(retry)
        return response, status

    return limiter


# -- wrong event codes: per (address, event) ---------------------------------------------------
def _code_limit(services: Services) -> tuple[Limiter, RateLimitItem] | None:
    limiter: Limiter | None = current_app.extensions.get("facematch_limiter")
    value = _setting(services.settings, "event_code")
    if limiter is None or not limiter.enabled or value is None:
        return None
    return limiter, _parsed(value)


def _code_key(event_id: str) -> tuple[str, str, str]:
    return "facematch", "event_code", f"{address()}|{event_id}"


def _with_storage(limiter: Limiter, call):
    """``call(strategy)`` on the shared storage, or on this process's memory when it is down."""
    try:
        return call(limiter.limiter)
    except STORAGE_ERRORS as exc:  # redis down or unreachable: limit per process rather than fail the request
        log.warning("rate-limit storage unreachable (%s): wrong-code counts are per process", type(exc).__name__)
        fallback: RateLimiter = current_app.extensions["facematch_code_fallback"]
        return call(fallback)


def refuse_if_guessing(services: Services, event_id: str) -> None:
    found = _code_limit(services)
    if found is None:
        return
    limiter, item = found
    key = _code_key(event_id)

    def check(strategy: RateLimiter) -> float | None:
        return None if strategy.test(item, *key) else strategy.get_window_stats(item, *key)[0]

    reset = _with_storage(limiter, check)
    if reset is not None:
        retry = max(1, math.ceil(reset - time.time()))
        raise errors.rate_limited(retry, f"too many wrong codes for event {event_id!r}")


def record_wrong_code(services: Services, event_id: str) -> None:
    found = _code_limit(services)
    if found is not None:
        limiter, item = found
        key = _code_key(event_id)
        _with_storage(limiter, lambda strategy: strategy.hit(item, *key))
