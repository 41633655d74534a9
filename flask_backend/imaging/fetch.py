"""Fetch image bytes from a caller-supplied URL without becoming an SSRF proxy.

What a URL must get past (every redirect hop too, redirects are followed here, not by
``requests``):

1. http/https only, a host, no credentials in the URL             -> 400 ``invalid_url``
2. the optional host allow-list (``allowed_hosts``)                -> 400 ``forbidden_url``
3. resolution: IP literals in any inet_aton spelling (``2130706433``, ``0x7f.1``) are
   parsed here; ``localhost``/``*.localhost`` are loopback and ``*.invalid`` never
   resolves (RFC 6761), without asking DNS; other names go to ``getaddrinfo``
                                                                   -> 400 ``fetch_failed``
4. EVERY resolved address must be public (not loopback, private, link-local incl. the
   169.254.169.254 metadata address, CGNAT, multicast, reserved, unspecified, nor an
   IPv4-mapped/NAT64/6to4 IPv6 form of those)                      -> 400 ``forbidden_url``
5. the connection is made to the address validated in step 4, never re-resolved: the
   request URL is rewritten to the IP, with the name in the ``Host`` header and, for
   HTTPS, as the TLS SNI / certificate hostname (``_PinnedAdapter``). A DNS-rebinding
   name therefore cannot switch to a private address between check and connect, and a
   refused address is never connected to.

Then: connect/read timeouts plus an overall deadline, retries with exponential backoff
on 429/5xx/connection errors only (honouring a capped Retry-After), a byte cap checked
against Content-Length before reading and counted while streaming, and a refusal of
text/html-like Content-Types. Upstream failures are always a 400 ``fetch_failed``
(with ``upstream_status`` when there was one), never a 5xx from us.

Logs name the host and path only: query strings can carry access tokens.
"""

from __future__ import annotations

import base64
import binascii
import email.utils
import http.cookiejar
import ipaddress
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter

from .. import errors
from ..errors import ApiError

log = logging.getLogger(__name__)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Sequence[str]]

_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_CHUNK = 64 * 1024
_MAX_ADDRESSES = 4  # addresses tried per attempt (e.g. IPv6 then IPv4)
_MAX_URL_LENGTH = 8192
_USER_AGENT = "FaceMatch-image-fetcher/1.0"


@dataclass(frozen=True)
class FetchPolicy:
    """Limits and network rules for fetching one image.

    The first eight fields are the documented API. The rest are optional extensions:
    ``total_timeout`` is the overall deadline of one fetch (retries, backoff and
    redirects included); ``max_retry_after`` caps a server's Retry-After;
    ``private_hosts`` names hosts (exact or ``*.suffix``) that may resolve to private
    addresses even when ``allow_private`` is off (e.g. an internal image server);
    ``resolver`` replaces DNS (``(host, port) -> [ip, ...]``), for tests and custom DNS.
    """

    max_bytes: int = 25 * 1024 * 1024
    connect_timeout: float = 5.0
    read_timeout: float = 20.0
    retries: int = 3
    backoff: float = 0.5  # sleep backoff * 2**attempt between attempts
    allow_private: bool = False
    allowed_hosts: tuple[str, ...] = ()  # empty: any public host; "name" or "*.example.com"
    max_redirects: int = 5
    total_timeout: float = 60.0
    max_retry_after: float = 10.0
    private_hosts: tuple[str, ...] = ()
    resolver: Resolver | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_settings(cls, settings: Any) -> FetchPolicy:
        """Policy from ``flask_backend.config.Settings``."""
        connect = float(settings.fetch_connect_timeout)
        read = float(settings.fetch_read_timeout)
        return cls(
            max_bytes=int(settings.max_image_bytes),
            connect_timeout=connect,
            read_timeout=read,
            retries=int(settings.fetch_retries),
            allow_private=bool(settings.allow_private_urls),
            allowed_hosts=tuple(settings.url_allowed_hosts),
            # at least one full attempt must fit in the deadline
            total_timeout=max(cls.total_timeout, connect + read),
        )


# --------------------------------------------------------------------------- logging

_QUERY_RE = re.compile(r"\?[^\s\"']*")


class _RedactQueryStrings(logging.Filter):
    """urllib3 logs every request line at DEBUG, query string (tokens) included: cut it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(
                _QUERY_RE.sub("?[redacted]", arg) if isinstance(arg, str) and "?" in arg else arg for arg in record.args
            )
        return True


def _install_log_redaction() -> None:
    logger = logging.getLogger("urllib3.connectionpool")
    if not any(isinstance(f, _RedactQueryStrings) for f in logger.filters):
        logger.addFilter(_RedactQueryStrings())


_install_log_redaction()


# --------------------------------------------------------------------------- session


class _PinnedAdapter(HTTPAdapter):
    """Connects to the IP in the URL but speaks TLS to the name in the ``Host`` header.

    ``fetch_image_bytes`` sends ``https://<validated ip>:<port>/path`` with
    ``Host: <name>``; this adapter makes urllib3 use ``<name>`` for SNI and for
    certificate verification (the pool key includes it, so pools never mix names).
    """

    def build_connection_pool_key_attributes(
        self, request: requests.PreparedRequest, verify: Any, cert: Any = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        host_header = request.headers.get("Host")
        if host_params.get("scheme") == "https" and host_header:
            # SNI and the ssl module's own hostname check both use server_hostname.
            pool_kwargs["server_hostname"] = _strip_port(host_header)
        return host_params, pool_kwargs


def _strip_port(host_header: str) -> str:
    if host_header.startswith("["):
        return host_header[1 : host_header.index("]")]
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


def new_session() -> requests.Session:
    """A session set up for ``fetch_image_bytes``: pinned-IP adapter, no proxies, no cookies."""
    session = requests.Session()
    session.trust_env = False  # no *_PROXY / netrc: the address we validate is the one we reach
    # ...but keep the deployment's CA bundle, which trust_env would have picked up
    session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
    session.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(allowed_domains=[]))
    adapter = _PinnedAdapter(pool_connections=32, pool_maxsize=16, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers.update({"User-Agent": _USER_AGENT, "Accept": "image/*,*/*;q=0.8"})
    return session


_session: requests.Session | None = None
_session_pid: int | None = None
_session_lock = threading.Lock()


def get_session() -> requests.Session:
    """The process's shared session, created lazily (and anew in a forked child)."""
    global _session, _session_pid
    pid = os.getpid()
    if _session is None or _session_pid != pid:
        with _session_lock:
            if _session is None or _session_pid != pid:
                _session = new_session()
                _session_pid = pid
    return _session


def _after_fork_in_child() -> None:
    # Never share pooled sockets with the parent (gunicorn preload, worker forks).
    global _session, _session_pid, _session_lock
    _session = None
    _session_pid = None
    _session_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _ensure_pinned(session: requests.Session) -> None:
    """A caller's session needs the pinning adapter, or HTTPS to a pinned IP fails to verify."""
    for prefix in ("http://", "https://"):
        if not isinstance(session.get_adapter(prefix + "x/"), _PinnedAdapter):
            log.debug("mounting the pinned-IP adapter on a caller's session")
            session.mount(prefix, _PinnedAdapter(max_retries=0))


# --------------------------------------------------------------------------- URL checks


@dataclass(frozen=True)
class _Target:
    scheme: str
    host: str  # lower-case ASCII (IDNA), no brackets, no trailing dot
    port: int
    request_path: str  # path + query, what goes on the request line
    url: str  # the URL as given (for urljoin of redirects); never logged

    @property
    def log_name(self) -> str:
        """host + path without the query string, safe to log."""
        path = self.request_path.split("?", 1)[0]
        return f"{self.host}{path[:200]}"

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"

    def url_for(self, ip: IPAddress) -> str:
        text = str(ip)
        host = f"[{text.replace('%', '%25')}]" if ip.version == 6 else text
        return f"{self.scheme}://{host}:{self.port}{self.request_path}"


def _invalid(message: str) -> ApiError:
    return errors.invalid_url(message)


def _parse_url(url: str) -> _Target:
    if not isinstance(url, str) or not url.strip():
        raise _invalid("image_url must be a non-empty http(s) URL")
    url = url.strip()
    if len(url) > _MAX_URL_LENGTH:
        raise _invalid(f"URL is longer than {_MAX_URL_LENGTH} characters")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        raise _invalid("URL contains control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise _invalid("URL is malformed") from exc
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise _invalid("only http and https URLs are allowed")
    if "@" in parts.netloc:
        raise _invalid("URLs with credentials (user:password@) are not allowed")
    raw_host = parts.hostname
    if not raw_host:
        raise _invalid("URL has no host")
    host = _normalise_host(raw_host)
    if port is None:
        port = 443 if scheme == "https" else 80
    if not 0 < port < 65536:
        raise _invalid("URL port is out of range")
    path = parts.path or "/"
    if parts.query:
        path = f"{path}?{parts.query}"
    return _Target(scheme=scheme, host=host, port=port, request_path=path, url=url)


_HOST_RE = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,62})?(\.[a-z0-9_]([a-z0-9_-]{0,62})?)*$")


def _normalise_host(raw: str) -> str:
    host = raw.strip().lower()
    if _ip_literal(host) is not None:
        return host
    host = host.rstrip(".")
    try:
        host = host.encode("idna").decode("ascii")
    except UnicodeError as exc:
        raise _invalid("URL host is not a valid host name") from exc
    if not host or len(host) > 253 or not _HOST_RE.match(host):
        raise _invalid("URL host is not a valid host name")
    return host


def _host_matches(host: str, patterns: Sequence[str]) -> bool:
    """Exact names or ``*.example.com`` (any depth of subdomain, not the apex itself)."""
    for raw in patterns:
        pattern = raw.strip().lower().rstrip(".")
        if not pattern:
            continue
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]) and len(host) > len(pattern) - 1:
                return True
        elif host == pattern:
            return True
    return False


# --------------------------------------------------------------------------- addresses

_BLOCKED_NETWORKS: tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str], ...] = tuple(
    (ipaddress.ip_network(net), reason)
    for net, reason in (
        ("0.0.0.0/8", "unspecified"),
        ("100.64.0.0/10", "carrier-grade NAT"),
        ("192.0.0.0/24", "reserved"),
        ("192.0.2.0/24", "reserved"),
        ("198.18.0.0/15", "reserved"),
        ("198.51.100.0/24", "reserved"),
        ("203.0.113.0/24", "reserved"),
        ("240.0.0.0/4", "reserved"),
        ("255.255.255.255/32", "broadcast"),
        ("64:ff9b:1::/48", "reserved"),
        ("100::/64", "reserved"),
        ("2001:db8::/32", "reserved"),
        ("fec0::/10", "private"),
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


def blocked_reason(ip: IPAddress) -> str | None:
    """Why ``ip`` must not be fetched from (``None`` for an ordinary public address)."""
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is None and int(ip) >> 32 == 0 and int(ip) > 1:
            embedded = ipaddress.IPv4Address(int(ip))  # deprecated IPv4-compatible ::a.b.c.d
        if embedded is not None:
            inner = blocked_reason(embedded)
            return f"{inner} (IPv4 inside IPv6)" if inner else None
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_multicast:
        return "multicast"
    for net, reason in _BLOCKED_NETWORKS:
        if ip.version == net.version and ip in net:
            return reason
    if ip.is_private:
        return "private"
    if ip.is_reserved:
        return "reserved"
    if not ip.is_global:
        return "non-public"
    return None


_NUMERIC_HOST_RE = re.compile(r"^[0-9a-fx.]+$")


def _ip_literal(host: str) -> IPAddress | None:
    """An IP written in any spelling ``inet_aton`` accepts (``127.1``, ``2130706433``, ``0x7f.0.0.1``)."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _NUMERIC_HOST_RE.match(host) and any(c.isdigit() for c in host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def _fetch_failed(message: str, **extra: Any) -> ApiError:
    return errors.fetch_failed(message, **extra)


def _resolve(target: _Target, policy: FetchPolicy) -> list[IPAddress]:
    """The addresses to connect to, validated against the policy."""
    host = target.host
    literal = _ip_literal(host)
    if literal is not None:
        addresses = [literal]
    elif host == "localhost" or host.endswith(".localhost"):
        addresses = [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
    elif host == "invalid" or host.endswith(".invalid"):
        raise _fetch_failed(f"host {host} does not resolve")
    else:
        addresses = _lookup(host, target.port, policy)
    if not addresses:
        raise _fetch_failed(f"host {host} does not resolve")

    if not policy.allow_private and not _host_matches(host, policy.private_hosts):
        for ip in addresses:
            reason = blocked_reason(ip)
            if reason is not None:
                what = f"{host} is" if literal is not None else f"host {host} resolves to"
                log.info("fetch: refused %s (%s address %s)", target.log_name, reason, ip)
                raise errors.forbidden_url(f"{what} a {reason} address; only public internet addresses can be fetched",
                )
    return addresses[:_MAX_ADDRESSES]


def _lookup(host: str, port: int, policy: FetchPolicy) -> list[IPAddress]:
    try:
        if policy.resolver is not None:
            raw = list(policy.resolver(host, port))
        else:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_ADDRCONFIG)
            raw = [info[4][0] for info in infos]
    except (socket.gaierror, UnicodeError, OSError) as exc:
        log.info("fetch: %s does not resolve: %s", host, exc)
        raise _fetch_failed(f"host {host} does not resolve") from exc
    seen: list[IPAddress] = []
    for item in raw:
        try:
            ip = ipaddress.ip_address(str(item))
        except ValueError:
            continue
        if ip not in seen:
            seen.append(ip)
    return seen


# --------------------------------------------------------------------------- fetching

_NON_IMAGE_PREFIXES = (
    "text/",
    "application/json",
    "application/xml",
    "application/xhtml",
    "application/javascript",
    "application/ecmascript",
    "application/pdf",
    "application/zip",
    "image/svg",
    "video/",
    "audio/",
    "multipart/",
    "font/",
)


def _non_image_content_type(value: str | None) -> str | None:
    """The media type when it is clearly not an image (octet-stream etc. pass: the decoder decides)."""
    if not value:
        return None
    media = value.split(";", 1)[0].strip().lower()
    if media.startswith(_NON_IMAGE_PREFIXES) or media.endswith(("+xml", "+json")):
        return media
    return None


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - time.time())


class _Retryable(Exception):
    """One attempt failed in a way worth retrying; ``error`` is what to raise if none is left."""

    def __init__(self, error: ApiError, retry_after: float | None = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.retry_after = retry_after


def fetch_image_bytes(url: str, policy: FetchPolicy, *, session: requests.Session | None = None) -> bytes:
    """Download an image URL within ``policy``; returns the raw bytes (not yet decoded).

    Raises ``ApiError``: 400 ``invalid_url`` / ``forbidden_url`` / ``fetch_failed``,
    413 ``image_too_large``, 415 ``unsupported_image``, 400 ``empty_image``.
    """
    if session is None:
        session = get_session()
    else:
        _ensure_pinned(session)
    deadline = time.monotonic() + policy.total_timeout
    target = _parse_url(url)
    redirects = 0
    attempt = 0
    while True:
        _check_allowed(target, policy)
        addresses = _resolve(target, policy)  # every hop, every attempt: no stale answers
        try:
            response = _request(session, target, addresses, policy, deadline)
            try:
                outcome = _handle_response(response, target, policy, deadline)
            finally:
                response.close()  # returns a fully read connection to the pool, else drops it
        except _Retryable as failure:
            attempt += 1
            _wait_before_retry(target, policy, deadline, attempt, failure)
            continue
        if isinstance(outcome, bytes):
            return outcome
        redirects += 1
        if redirects > policy.max_redirects:
            raise _fetch_failed(f"too many redirects (more than {policy.max_redirects})")
        log.debug("fetch: %s redirects to %s", target.log_name, outcome.log_name)
        target = outcome


def _status_text(status: int) -> str:
    try:
        return f"{status} {HTTPStatus(status).phrase}"
    except ValueError:
        return str(status)


def _handle_response(
    response: requests.Response, target: _Target, policy: FetchPolicy, deadline: float
) -> bytes | _Target:
    """The body, the next hop of a redirect, or an error (``_Retryable`` for 429/5xx)."""
    status = response.status_code
    if status in _REDIRECT_STATUSES:
        location = response.headers.get("Location", "").strip()
        if not location:
            raise _fetch_failed(f"host {target.host} answered {status} without a Location", upstream_status=status)
        return _parse_url(urljoin(target.url, location))
    if status == 429 or 500 <= status <= 599:
        raise _Retryable(
            _fetch_failed(f"host {target.host} answered {_status_text(status)}", upstream_status=status),
            _retry_after(response.headers.get("Retry-After")),
        )
    if not 200 <= status <= 299:
        log.info("fetch: %s answered %d", target.log_name, status)
        raise _fetch_failed(f"host {target.host} answered {_status_text(status)}", upstream_status=status)
    return _read_body(response, target, policy, deadline)


def _check_allowed(target: _Target, policy: FetchPolicy) -> None:
    if policy.allowed_hosts and not _host_matches(target.host, policy.allowed_hosts):
        raise errors.forbidden_url(f"host {target.host} is not in the list of allowed image hosts")


def _timed_out(target: _Target) -> ApiError:
    return _fetch_failed(f"timed out fetching the image from {target.host}")


def _request(
    session: requests.Session,
    target: _Target,
    addresses: list[IPAddress],
    policy: FetchPolicy,
    deadline: float,
) -> requests.Response:
    """One attempt: try the validated addresses in order until one connects."""
    failure: _Retryable | None = None
    for ip in addresses:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _timed_out(target)
        timeout = (min(policy.connect_timeout, remaining), min(policy.read_timeout, remaining))
        try:
            return session.get(
                target.url_for(ip),
                headers={"Host": target.host_header},
                stream=True,
                allow_redirects=False,
                timeout=timeout,
            )
        except requests.exceptions.SSLError as exc:
            log.info("fetch: TLS error for %s: %s", target.log_name, type(exc).__name__)
            raise _fetch_failed(f"TLS handshake with {target.host} failed") from exc
        except requests.exceptions.ConnectTimeout:
            failure = _Retryable(_fetch_failed(f"timed out connecting to {target.host}"))
        except requests.exceptions.ReadTimeout:
            # The server accepted the connection: another address will not help.
            raise _Retryable(_timed_out(target)) from None
        except requests.exceptions.ConnectionError:
            failure = _Retryable(_fetch_failed(f"could not connect to {target.host}"))
        except (requests.exceptions.InvalidURL, requests.exceptions.InvalidHeader) as exc:
            raise _invalid("URL is malformed") from exc
        except requests.exceptions.RequestException as exc:
            log.info("fetch: %s failed: %s", target.log_name, type(exc).__name__)
            raise _Retryable(_fetch_failed(f"could not fetch the image from {target.host}")) from None
        log.info("fetch: %s at %s: %s", target.log_name, ip, failure.error.message)
    assert failure is not None
    raise failure


def _read_body(response: requests.Response, target: _Target, policy: FetchPolicy, deadline: float) -> bytes:
    media = _non_image_content_type(response.headers.get("Content-Type"))
    if media is not None:
        raise errors.unsupported_image(f"the URL returned {media}, not an image", content_type=media)
    length_header = response.headers.get("Content-Length")
    if length_header and length_header.strip().isdigit() and int(length_header) > policy.max_bytes:
        raise errors.too_large(policy.max_bytes, actual=int(length_header))
    chunks: list[bytes] = []
    total = 0
    # read1() returns after one socket read, and the socket timeout is re-armed to what is
    # left of the deadline before each one, so a slow drip cannot outlive total_timeout.
    connection = getattr(response.raw, "connection", None)
    sock = getattr(connection, "sock", None)
    try:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _timed_out(target)
            if sock is not None:
                sock.settimeout(min(policy.read_timeout, remaining))
            chunk = response.raw.read1(_CHUNK, decode_content=True)
            if not chunk:
                break
            total += len(chunk)
            if total > policy.max_bytes:
                raise errors.too_large(policy.max_bytes)
            chunks.append(chunk)
    except urllib3.exceptions.ReadTimeoutError:
        raise _Retryable(_timed_out(target)) from None
    except (urllib3.exceptions.ProtocolError, urllib3.exceptions.DecodeError, OSError) as exc:
        log.info("fetch: reading %s failed: %s", target.log_name, type(exc).__name__)
        raise _Retryable(_fetch_failed(f"the connection to {target.host} broke while reading the image")) from None
    data = b"".join(chunks)
    if not data:
        raise errors.empty_image(f"the URL returned an empty body (host {target.host})")
    return data


def _wait_before_retry(
    target: _Target, policy: FetchPolicy, deadline: float, attempt: int, failure: _Retryable
) -> None:
    """Sleep before attempt ``attempt`` (1-based retries) or raise the failure if none is left."""
    if attempt > policy.retries:
        log.info("fetch: %s failed after %d attempts: %s", target.log_name, attempt, failure.error.message)
        raise failure.error
    delay = policy.backoff * (2 ** (attempt - 1))
    if failure.retry_after is not None:
        delay = max(delay, min(failure.retry_after, policy.max_retry_after))
    if time.monotonic() + delay >= deadline:
        log.info("fetch: %s: no time left for a retry: %s", target.log_name, failure.error.message)
        raise failure.error
    log.debug("fetch: %s: retry %d in %.2fs (%s)", target.log_name, attempt, delay, failure.error.message)
    time.sleep(delay)


# --------------------------------------------------------------------------- base64

_DATA_URL_RE = re.compile(r"^data:([a-z0-9.+/-]*)((?:;[a-z0-9=._+-]+)*?);base64,", re.IGNORECASE)
_WHITESPACE_RE = re.compile(r"\s+")


def decode_base64_image(text: str, max_bytes: int) -> bytes:
    """Bytes of a base64 image, with or without a ``data:image/...;base64,`` prefix.

    400 ``invalid_base64`` for anything that is not base64 (URL-safe alphabet and missing
    padding are tolerated); 413 ``image_too_large`` above ``max_bytes`` (checked on the
    text length first, so a huge string is not decoded); 400 ``empty_image`` when empty.
    """
    if isinstance(text, (bytes, bytearray)):
        try:
            text = bytes(text).decode("ascii")
        except UnicodeDecodeError as exc:
            raise errors.invalid_base64("image_base64 is not valid base64") from exc
    if not isinstance(text, str):
        raise errors.invalid_base64("image_base64 must be a string")
    body = text.strip()
    if body[:5].lower() == "data:":
        match = _DATA_URL_RE.match(body)
        if match is None:
            raise errors.invalid_base64("a data: URL must look like data:image/jpeg;base64,...")
        body = body[match.end() :]
    if _WHITESPACE_RE.search(body):
        body = _WHITESPACE_RE.sub("", body)
    if not body:
        raise errors.empty_image()
    if len(body) // 4 * 3 > max_bytes + 3:
        raise errors.too_large(max_bytes)
    if "-" in body or "_" in body:
        body = body.replace("-", "+").replace("_", "/")
    body = body.rstrip("=")
    if len(body) % 4 == 1:
        raise errors.invalid_base64("image_base64 is not valid base64")
    body += "=" * (-len(body) % 4)
    try:
        data = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise errors.invalid_base64("image_base64 is not valid base64") from exc
    if len(data) > max_bytes:
        raise errors.too_large(max_bytes, actual=len(data))
    if not data:
        raise errors.empty_image()
    return data
