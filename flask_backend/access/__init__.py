"""Who may search and who may write.

- keys.py: admin keys (FACEMATCH_API_KEYS) and scoped organizer/reader keys kept hashed in the store
- codes.py: per-event access (open | code), codes as salted scrypt hashes
- limits.py: rate limits per client address (flask-limiter), wrong codes per address and event
- addresses.py: the client address (X-Forwarded-For only from trusted proxies), keyed hashes of it
- records.py: the forget-me log (no image, no embedding, no address)
- headers.py: CSP, nosniff, no framing, no referrer, no-store on answers about a person

``init_app(app, settings)`` is the one hook ``create_app`` calls. Views stay thin: they call
``keys.require``, ``codes.require_attendee`` and ``records.record_forget``.
"""

from __future__ import annotations

from flask import Flask

from ..config import Settings
from .addresses import trusted_proxies
from .codes import MODES
from .headers import init_headers
from .limits import init_limits


def init_app(app: Flask, settings: Settings) -> None:
    if settings.default_event_access not in MODES:
        raise ValueError(f"FACEMATCH_DEFAULT_EVENT_ACCESS must be one of {', '.join(MODES)}, "
                         f"not {settings.default_event_access!r}")
    try:
        trusted_proxies(settings.forwarded_allow_ips)
    except ValueError as exc:
        raise ValueError(f"FACEMATCH_FORWARDED_ALLOW_IPS: {exc} (addresses or networks, or *)") from None
    init_limits(app, settings)
    init_headers(app)
