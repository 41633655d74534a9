"""fetch_image_bytes against a real HTTP server on 127.0.0.1, and its SSRF defences.

Safety net for this module: every test runs under ``network_guard``, which makes any
socket connect or DNS lookup to anything but 127.0.0.1 / ::1 fail the test loudly, and
records the connects that did happen, so "refused before any connection" is asserted,
not assumed.
"""

from __future__ import annotations

import datetime as dt
import gzip
import io
import ipaddress
import json
import logging
import os
import select
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from PIL import Image

from flask_backend.config import Settings
from flask_backend.errors import ApiError
from flask_backend.imaging import FetchPolicy, decode_image, fetch_image_bytes, get_session, new_session
from flask_backend.imaging.fetch import blocked_reason
from tests.http_fixtures import LocalHTTPServer, Reply

LOOPBACK = {"127.0.0.1", "::1"}

# Local servers need allow_private; short timeouts and backoff keep the suite fast.
LOCAL = FetchPolicy(allow_private=True, connect_timeout=2.0, read_timeout=2.0, backoff=0.01, total_timeout=15.0)


def _jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (32, 24), (200, 30, 30)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


JPEG = _jpeg()
JPEG_HEADERS = {"Content-Type": "image/jpeg"}


@pytest.fixture(autouse=True)
def network_guard(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """Fail on any connect/DNS lookup off loopback; return the list of connects made."""
    connects: list[tuple] = []
    real_connect = socket.socket.connect
    real_getaddrinfo = socket.getaddrinfo

    def guarded_connect(sock: socket.socket, address: tuple) -> None:
        connects.append(tuple(address))
        if address[0] not in LOOPBACK:
            raise AssertionError(f"test tried to connect to {address!r}")
        return real_connect(sock, address)

    def guarded_getaddrinfo(host: str | None, *args: Any, **kwargs: Any) -> list[tuple]:
        if host not in LOOPBACK:
            raise AssertionError(f"test tried to resolve {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", guarded_connect)
    monkeypatch.setattr(socket, "getaddrinfo", guarded_getaddrinfo)
    return connects


@pytest.fixture
def server() -> Iterator[LocalHTTPServer]:
    with LocalHTTPServer() as srv:
        yield srv


def fetch_error(url: str, policy: FetchPolicy, **kwargs: Any) -> ApiError:
    with pytest.raises(ApiError) as info:
        fetch_image_bytes(url, policy, **kwargs)
    return info.value


# --------------------------------------------------------------------------- success paths


def test_success(server: LocalHTTPServer) -> None:
    server.set("/a.jpg", (200, JPEG_HEADERS, JPEG))
    assert fetch_image_bytes(server.url("/a.jpg"), LOCAL) == JPEG
    assert server.hits("/a.jpg") == 1
    record = server.records("/a.jpg")[0]
    assert record.headers["Host"] == f"127.0.0.1:{server.port}"
    assert "FaceMatch" in record.headers["User-Agent"]


@pytest.mark.parametrize("content_type", ["application/octet-stream", "binary/octet-stream", None, "image/png"])
def test_content_type_is_not_trusted_for_images(server: LocalHTTPServer, content_type: str | None) -> None:
    headers = {"Content-Type": content_type} if content_type else {}
    server.set("/blob", (200, headers, JPEG))
    data = fetch_image_bytes(server.url("/blob"), LOCAL)
    assert decode_image(data).format == "JPEG"  # the decoder decides, not the header


def test_image_content_type_with_html_body_is_caught_by_the_decoder(server: LocalHTTPServer) -> None:
    server.set("/liar.jpg", (200, JPEG_HEADERS, b"<!DOCTYPE html><html>login</html>"))
    data = fetch_image_bytes(server.url("/liar.jpg"), LOCAL)
    with pytest.raises(ApiError) as info:
        decode_image(data)
    assert (info.value.status, info.value.code) == (415, "unsupported_image")


def test_keep_alive_connection_is_reused(server: LocalHTTPServer) -> None:
    server.set("/a.jpg", (200, JPEG_HEADERS, JPEG))
    for _ in range(3):
        assert fetch_image_bytes(server.url("/a.jpg"), LOCAL) == JPEG
    clients = {record.client for record in server.records("/a.jpg")}
    assert len(clients) == 1, clients


def test_query_string_is_sent(server: LocalHTTPServer) -> None:
    server.set("/o/photo.jpg", (200, JPEG_HEADERS, JPEG))
    fetch_image_bytes(server.url("/o/photo.jpg?alt=media&token=abc"), LOCAL)
    assert server.records("/o/photo.jpg")[0].target == "/o/photo.jpg?alt=media&token=abc"


# --------------------------------------------------------------------------- retries


def test_retry_503_503_200(server: LocalHTTPServer) -> None:
    server.sequence("/flaky", [503, 503, Reply(body=JPEG, headers=JPEG_HEADERS)])
    policy = FetchPolicy(**{**LOCAL.__dict__, "backoff": 0.2})
    assert fetch_image_bytes(server.url("/flaky"), policy) == JPEG
    first, second, third = server.records("/flaky")
    # exponential backoff between attempts (lower bounds only: a loaded box only waits longer)
    assert second.started - first.finished >= 0.2 and third.started - second.finished >= 0.4, (first, second, third)


def test_5xx_after_retries_is_a_400_fetch_failed(server: LocalHTTPServer) -> None:
    server.set("/down", 502)
    policy = FetchPolicy(**{**LOCAL.__dict__, "retries": 2})
    err = fetch_error(server.url("/down"), policy)
    assert (err.status, err.code, err.extra["upstream_status"]) == (400, "fetch_failed", 502)
    assert server.hits("/down") == 3


def test_429_honours_retry_after(server: LocalHTTPServer) -> None:
    server.sequence("/busy", [Reply(429, headers={"Retry-After": "1"}), Reply(body=JPEG)])
    started = time.monotonic()
    assert fetch_image_bytes(server.url("/busy"), LOCAL) == JPEG
    elapsed = time.monotonic() - started
    assert server.hits("/busy") == 2
    assert 0.9 <= elapsed < 3.0, elapsed


def test_retry_after_http_date(server: LocalHTTPServer) -> None:
    when = (dt.datetime.now(dt.UTC) + dt.timedelta(seconds=2)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    server.sequence("/busy", [Reply(503, headers={"Retry-After": when}), Reply(body=JPEG)])
    started = time.monotonic()
    assert fetch_image_bytes(server.url("/busy"), LOCAL) == JPEG
    assert time.monotonic() - started >= 0.5


def test_retry_after_is_capped(server: LocalHTTPServer) -> None:
    server.sequence("/busy", [Reply(429, headers={"Retry-After": "3600"}), Reply(body=JPEG)])
    policy = FetchPolicy(**{**LOCAL.__dict__, "max_retry_after": 0.2})
    started = time.monotonic()
    assert fetch_image_bytes(server.url("/busy"), policy) == JPEG
    assert time.monotonic() - started < 2.0


def test_retry_that_cannot_fit_the_deadline_fails_at_once(server: LocalHTTPServer) -> None:
    server.set("/busy", Reply(429, headers={"Retry-After": "30"}))
    policy = FetchPolicy(**{**LOCAL.__dict__, "max_retry_after": 60.0, "total_timeout": 3.0})
    started = time.monotonic()
    err = fetch_error(server.url("/busy"), policy)
    assert (err.code, err.extra["upstream_status"]) == ("fetch_failed", 429)
    assert time.monotonic() - started < 1.0
    assert server.hits("/busy") == 1


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410])
def test_4xx_is_not_retried(server: LocalHTTPServer, status: int) -> None:
    server.set("/missing", status)
    err = fetch_error(server.url("/missing"), LOCAL)
    assert (err.status, err.code) == (400, "fetch_failed")
    assert err.extra["upstream_status"] == status
    assert err.to_dict()["error"]["upstream_status"] == status
    assert server.hits("/missing") == 1


def test_connection_refused_is_retried_then_fetch_failed(network_guard: list[tuple]) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    policy = FetchPolicy(**{**LOCAL.__dict__, "retries": 2})
    err = fetch_error(f"http://127.0.0.1:{port}/a.jpg", policy)
    assert (err.status, err.code) == (400, "fetch_failed")
    assert "connect" in err.message
    assert [c for c in network_guard if c[1] == port] == [("127.0.0.1", port)] * 3


def test_broken_body_is_retried(server: LocalHTTPServer) -> None:
    # First answer promises more bytes than it sends, then hangs up: a connection error.
    server.sequence("/cut", [Reply(body=JPEG[:100], content_length=len(JPEG)), Reply(body=JPEG)])
    assert fetch_image_bytes(server.url("/cut"), LOCAL) == JPEG
    assert server.hits("/cut") == 2


# --------------------------------------------------------------------------- content checks


@pytest.mark.parametrize(
    "content_type", ["text/html; charset=utf-8", "application/json", "image/svg+xml", "application/xhtml+xml"]
)
def test_non_image_content_type_is_415(server: LocalHTTPServer, content_type: str) -> None:
    server.set("/page", (200, {"Content-Type": content_type}, b"<html><body>hello</body></html>"))
    err = fetch_error(server.url("/page"), LOCAL)
    assert (err.status, err.code) == (415, "unsupported_image")


def test_empty_body_is_empty_image(server: LocalHTTPServer) -> None:
    server.set("/empty", (200, JPEG_HEADERS, b""))
    err = fetch_error(server.url("/empty"), LOCAL)
    assert (err.status, err.code) == (400, "empty_image")


BIG = b"\xff" * (30 * 1024 * 1024)


def test_content_length_over_cap_is_413_without_reading(server: LocalHTTPServer) -> None:
    server.set("/huge.jpg", (200, JPEG_HEADERS, BIG))
    started = time.monotonic()
    err = fetch_error(server.url("/huge.jpg"), LOCAL)  # default cap: 25 MiB
    assert (err.status, err.code) == (413, "image_too_large")
    assert time.monotonic() - started < 2.0
    record = server.wait_done("/huge.jpg")[0]
    assert not record.completed and record.error is not None  # we hung up
    assert record.bytes_sent < len(BIG)
    assert server.hits("/huge.jpg") == 1  # never retried


def test_chunked_body_over_cap_stops_at_the_cap(server: LocalHTTPServer) -> None:
    server.set("/stream.jpg", Reply(body=BIG, headers=JPEG_HEADERS, chunked=True))
    policy = FetchPolicy(**{**LOCAL.__dict__, "max_bytes": 2 * 1024 * 1024})
    err = fetch_error(server.url("/stream.jpg"), policy)
    assert (err.status, err.code) == (413, "image_too_large")
    record = server.wait_done("/stream.jpg")[0]
    assert not record.completed
    assert record.bytes_sent < len(BIG) // 2  # stopped near the 2 MiB cap (plus socket buffers)


def test_cap_counts_decompressed_bytes(server: LocalHTTPServer) -> None:
    bomb = gzip.compress(b"\x00" * (8 * 1024 * 1024))  # ~8 KB on the wire
    server.set("/gz", (200, {"Content-Type": "image/jpeg", "Content-Encoding": "gzip"}, bomb))
    policy = FetchPolicy(**{**LOCAL.__dict__, "max_bytes": 1024 * 1024})
    err = fetch_error(server.url("/gz"), policy)
    assert (err.status, err.code) == (413, "image_too_large")


def test_body_exactly_at_cap_is_fine(server: LocalHTTPServer) -> None:
    server.set("/exact", (200, JPEG_HEADERS, JPEG))
    policy = FetchPolicy(**{**LOCAL.__dict__, "max_bytes": len(JPEG)})
    assert fetch_image_bytes(server.url("/exact"), policy) == JPEG


# --------------------------------------------------------------------------- timeouts


def test_slow_headers_time_out_within_read_timeout(server: LocalHTTPServer) -> None:
    server.set("/slow", Reply(body=JPEG, delay=10))
    policy = FetchPolicy(**{**LOCAL.__dict__, "read_timeout": 0.5, "retries": 0})
    started = time.monotonic()
    err = fetch_error(server.url("/slow"), policy)
    elapsed = time.monotonic() - started
    assert (err.status, err.code) == (400, "fetch_failed") and "timed out" in err.message
    assert 0.4 <= elapsed < 0.5 + 1.0, elapsed


def test_retried_timeouts_stop_at_the_overall_deadline(server: LocalHTTPServer) -> None:
    server.set("/slow", Reply(body=JPEG, delay=10))
    policy = FetchPolicy(**{**LOCAL.__dict__, "read_timeout": 0.5, "retries": 5, "total_timeout": 1.2})
    started = time.monotonic()
    err = fetch_error(server.url("/slow"), policy)
    elapsed = time.monotonic() - started
    assert "timed out" in err.message
    assert elapsed < 1.2 + 1.0, elapsed


def test_slow_drip_body_hits_the_overall_deadline(server: LocalHTTPServer) -> None:
    server.set("/drip", Reply(body=b"\xff" * 100_000, chunk_size=1000, chunk_delay=0.1))
    policy = FetchPolicy(**{**LOCAL.__dict__, "read_timeout": 5.0, "total_timeout": 1.0})
    started = time.monotonic()
    err = fetch_error(server.url("/drip"), policy)
    elapsed = time.monotonic() - started
    assert "timed out" in err.message
    assert elapsed < 1.0 + 1.0, elapsed


# --------------------------------------------------------------------------- redirects


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirect_to_a_good_url(server: LocalHTTPServer, status: int) -> None:
    server.set("/new.jpg", (200, JPEG_HEADERS, JPEG))
    server.redirect("/old.jpg", "/new.jpg", status)
    server.redirect("/abs.jpg", server.url("/old.jpg"), status)
    assert fetch_image_bytes(server.url("/abs.jpg"), LOCAL) == JPEG
    assert (server.hits("/abs.jpg"), server.hits("/old.jpg"), server.hits("/new.jpg")) == (1, 1, 1)


def test_redirect_chain_limit(server: LocalHTTPServer) -> None:
    server.set("/r6", (200, JPEG_HEADERS, JPEG))
    for i in range(6):
        server.redirect(f"/r{i}", f"/r{i + 1}")
    assert fetch_image_bytes(server.url("/r1"), LOCAL) == JPEG  # exactly 5 redirects
    err = fetch_error(server.url("/r0"), LOCAL)  # 6 redirects
    assert (err.status, err.code) == (400, "fetch_failed") and "redirect" in err.message


def test_redirect_loop(server: LocalHTTPServer) -> None:
    server.redirect("/loop", "/loop")
    err = fetch_error(server.url("/loop"), LOCAL)
    assert err.code == "fetch_failed"
    assert server.hits("/loop") == LOCAL.max_redirects + 1


@pytest.mark.parametrize(
    ("location", "code"),
    [("file:///etc/passwd", "invalid_url"), ("ftp://127.0.0.1/a.jpg", "invalid_url"), ("", "fetch_failed")],
)
def test_bad_redirect_targets(server: LocalHTTPServer, location: str, code: str) -> None:
    server.set("/go", Reply(302, headers={"Location": location} if location else {}))
    assert fetch_error(server.url("/go"), LOCAL).code == code


# --------------------------------------------------------------------------- SSRF (default policy)

DEFAULT = FetchPolicy()


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://127.0.0.1/a.jpg",
        "gopher://127.0.0.1:70/_",
        "data:image/png;base64,iVBORw0KGgo=",
        "javascript:alert(1)",
        "//example.com/a.jpg",
        "",
        "http://",
        "http:///a.jpg",
        "http://user:secret@example.com/a.jpg",
        "http://user@example.com/a.jpg",
        "http://example.com:99999/a.jpg",
        "http://exa mple.com/a.jpg",
        "http://example.com/a\n.jpg",
        "http://%31%32%37.0.0.1/",
    ],
)
def test_invalid_urls(url: str, network_guard: list[tuple]) -> None:
    err = fetch_error(url, DEFAULT)
    assert (err.status, err.code) == (400, "invalid_url"), err.message
    assert network_guard == []


@pytest.mark.parametrize(
    "host",
    [
        "127.0.0.1",
        "localhost",
        "LOCALHOST",
        "localhost.",
        "photos.localhost",
        "[::1]",
        "0.0.0.0",
        "[::]",
        "2130706433",  # 127.0.0.1 as a decimal number
        "0x7f000001",
        "0x7f.1",
        "017700000001",
        "127.1",
        "[::ffff:127.0.0.1]",
        "[::127.0.0.1]",
        "[64:ff9b::7f00:1]",  # NAT64 form of 127.0.0.1
        "[2002:7f00:1::]",  # 6to4 form of 127.0.0.1
    ],
)
def test_loopback_spellings_are_refused_without_connecting(
    server: LocalHTTPServer, host: str, network_guard: list[tuple]
) -> None:
    server.set("/secret", (200, JPEG_HEADERS, JPEG))
    err = fetch_error(f"http://{host}:{server.port}/secret", DEFAULT)
    assert (err.status, err.code) == (400, "forbidden_url"), err.message
    assert network_guard == []
    assert server.hits() == 0


def test_ipv6_loopback_server_is_refused(network_guard: list[tuple]) -> None:
    with LocalHTTPServer(host="::1") as v6:
        v6.set("/secret", (200, JPEG_HEADERS, JPEG))
        assert fetch_image_bytes(v6.url("/secret"), LOCAL) == JPEG  # reachable when allowed...
        network_guard.clear()
        err = fetch_error(v6.url("/secret"), DEFAULT)  # ...refused by default
        assert err.code == "forbidden_url"
        assert network_guard == [] and v6.hits("/secret") == 1


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data",
        "http://169.254.169.254/computeMetadata/v1/",
        "http://[fd00:ec2::254]/latest/meta-data",
        "http://100.100.100.200/latest/meta-data",  # CGNAT range (Alibaba metadata)
        "http://10.0.0.1/",
        "http://172.16.0.1/",
        "http://192.168.1.1/",
        "http://100.64.0.1/",
        "http://224.0.0.1/",
        "http://255.255.255.255/",
        "http://240.0.0.1/",
        "http://192.0.2.1/",
        "http://[fe80::1]/",
        "http://[fc00::1]/",
        "http://[ff02::1]/",
        "http://[::ffff:10.0.0.1]/",
        "http://[::ffff:169.254.169.254]/",
        "https://10.0.0.1:8443/a.jpg",
    ],
)
def test_private_and_special_addresses_are_refused(url: str, network_guard: list[tuple]) -> None:
    err = fetch_error(url, DEFAULT)
    assert (err.status, err.code) == (400, "forbidden_url"), err.message
    assert network_guard == []


def test_unresolvable_host(network_guard: list[tuple]) -> None:
    err = fetch_error("http://photos.does-not-exist.invalid/a.jpg", DEFAULT)
    assert (err.status, err.code) == (400, "fetch_failed")
    assert "does not resolve" in err.message
    assert network_guard == []


_RESOLVE_PROBE = r"""
import json, socket, sys
from flask_backend.errors import ApiError
from flask_backend.imaging import FetchPolicy, fetch_image_bytes
asked = []
real_getaddrinfo = socket.getaddrinfo
def spy(host, *args, **kwargs):
    asked.append(host)
    return real_getaddrinfo(host, *args, **kwargs)
socket.getaddrinfo = spy
try:
    fetch_image_bytes(sys.argv[1], FetchPolicy(connect_timeout=2, read_timeout=2, total_timeout=10))
    error = None
except ApiError as exc:
    error = [exc.status, exc.code, exc.message]
print(json.dumps({"error": error, "asked": asked}))
"""


def test_unresolvable_host_through_the_system_resolver(tmp_path: Path) -> None:
    """A name that is not special-cased goes to the real getaddrinfo; a failed lookup is a
    400 fetch_failed. Run in a network namespace of its own (no interface but a down
    loopback), so the lookup fails here without a query leaving the machine."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "--net", "true"], check=False,
                                                          capture_output=True).returncode:
        pytest.skip("needs `unshare --net` (util-linux, root or user namespaces) for an offline resolver")
    host = "photos.facematch-nowhere.test"
    out = subprocess.run(["unshare", "--net", sys.executable, "-c", _RESOLVE_PROBE, f"https://{host}/a.jpg"],
                         check=False, cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["asked"] == [host]  # the system resolver was asked, once
    assert result["error"] == [400, "fetch_failed", f"host {host} does not resolve"]


def test_resolver_failure_is_fetch_failed() -> None:
    def resolver(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    err = fetch_error("https://photos.example.com/a.jpg", FetchPolicy(resolver=resolver))
    assert (err.code, "does not resolve" in err.message) == ("fetch_failed", True)


@pytest.mark.parametrize(
    "addresses",
    [["127.0.0.1"], ["10.1.2.3"], ["93.184.215.14", "10.1.2.3"], ["::ffff:169.254.169.254"], ["fe80::1%1"]],
)
def test_names_resolving_to_private_addresses_are_refused(addresses: list[str], network_guard: list[tuple]) -> None:
    """DNS rebinding: whatever the name, the addresses are checked, all of them."""
    policy = FetchPolicy(resolver=lambda host, port: addresses)
    err = fetch_error("http://rebind.example.com/a.jpg", policy)
    assert (err.status, err.code) == (400, "forbidden_url"), err.message
    assert network_guard == []


def test_connection_goes_to_the_validated_address(server: LocalHTTPServer) -> None:
    """The name is resolved once; the request is sent to that address with the name as Host."""
    server.set("/a.jpg", (200, JPEG_HEADERS, JPEG))
    answers = iter([["127.0.0.1"], ["10.9.9.9"]])  # a rebinding resolver: 2nd answer is private
    lookups: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        lookups.append(host)
        return next(answers)

    policy = FetchPolicy(resolver=resolver, private_hosts=("images.test",), connect_timeout=2, read_timeout=2)
    assert fetch_image_bytes(f"http://images.test:{server.port}/a.jpg", policy) == JPEG
    assert lookups == ["images.test"]  # urllib3 never resolved the name again
    assert server.records("/a.jpg")[0].headers["Host"] == f"images.test:{server.port}"


def test_redirect_to_loopback_is_refused_when_only_the_first_hop_is_allowed(network_guard: list[tuple]) -> None:
    with LocalHTTPServer() as public, LocalHTTPServer() as internal:
        internal.set("/secret", (200, JPEG_HEADERS, JPEG))
        public.set("/a.jpg", (200, JPEG_HEADERS, JPEG))
        targets = {
            "/to-ip": internal.url("/secret"),
            "/to-localhost": f"http://localhost:{internal.port}/secret",
            "/to-rebind": f"http://rebind.test:{internal.port}/secret",
            "/to-metadata": "http://169.254.169.254/latest/meta-data",
        }
        for path, location in targets.items():
            public.redirect(path, location)
        public.redirect("/to-self", "/a.jpg")
        # "images.test" stands for a public image host: it may resolve to loopback here
        # (private_hosts), nothing else may; allow_private stays False.
        policy = FetchPolicy(
            resolver=lambda host, port: ["127.0.0.1"],
            private_hosts=("images.test",),
            connect_timeout=2,
            read_timeout=2,
        )
        first = f"http://images.test:{public.port}"
        assert fetch_image_bytes(first + "/to-self", policy) == JPEG
        for path in targets:
            err = fetch_error(first + path, policy)
            assert (err.status, err.code) == (400, "forbidden_url"), (path, err.message)
            assert public.hits(path) == 1
        assert internal.hits() == 0
        assert {c[1] for c in network_guard} == {public.port}


def test_allowed_hosts_apply_to_every_hop(server: LocalHTTPServer, network_guard: list[tuple]) -> None:
    server.set("/a.jpg", (200, JPEG_HEADERS, JPEG))
    server.redirect("/elsewhere", f"http://other.test:{server.port}/a.jpg")
    server.redirect("/same", f"http://img.cdn.example.test:{server.port}/a.jpg")
    lookups: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        lookups.append(host)
        return ["127.0.0.1"]

    policy = FetchPolicy(
        allowed_hosts=("images.test", "*.cdn.example.test"),
        private_hosts=("images.test", "*.cdn.example.test", "other.test"),
        resolver=resolver,
        connect_timeout=2,
        read_timeout=2,
    )
    base = f"http://images.test:{server.port}"
    assert fetch_image_bytes(base + "/same", policy) == JPEG
    err = fetch_error(base + "/elsewhere", policy)
    assert (err.code, "allowed" in err.message) == ("forbidden_url", True)
    assert "other.test" not in lookups  # refused before DNS
    for url in (
        "http://cdn.example.test/a.jpg",
        "http://evilcdn.example.test/a.jpg",
        "http://x.cdn.example.test.evil/",
    ):
        assert fetch_error(url, policy).code == "forbidden_url", url


def test_blocked_reason_lets_public_addresses_through() -> None:
    for text in ("8.8.8.8", "1.1.1.1", "93.184.215.14", "2606:4700:4700::1111", "::ffff:8.8.8.8"):
        assert blocked_reason(ipaddress.ip_address(text)) is None, text
    assert blocked_reason(ipaddress.ip_address("169.254.169.254")) == "link-local"
    assert blocked_reason(ipaddress.ip_address("100.64.0.1")) == "carrier-grade NAT"


# --------------------------------------------------------------------------- TLS with a pinned address


def _make_cert(tmp_path: Path, hostname: str) -> tuple[Path, ssl.SSLContext]:
    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "FaceMatch test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_file, cert_file, key_file = tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    cert_file.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    return ca_file, context


def test_https_to_pinned_address_verifies_the_host_name(tmp_path: Path) -> None:
    ca_file, context = _make_cert(tmp_path, "images.test")
    with LocalHTTPServer(ssl_context=context) as tls:
        tls.set("/a.jpg", (200, JPEG_HEADERS, JPEG))
        session = new_session()
        session.verify = str(ca_file)
        policy = FetchPolicy(
            resolver=lambda host, port: ["127.0.0.1"],
            private_hosts=("images.test", "other.test"),
            connect_timeout=2,
            read_timeout=2,
            retries=0,
        )
        # The certificate names images.test only (no IP): this passes only if TLS verifies
        # the name while the socket goes to the pinned 127.0.0.1.
        assert fetch_image_bytes(f"https://images.test:{tls.port}/a.jpg", policy, session=session) == JPEG
        err = fetch_error(f"https://other.test:{tls.port}/a.jpg", policy, session=session)
        assert (err.code, "TLS" in err.message) == ("fetch_failed", True)
        # A plain requests.Session gets the pinning adapter mounted.
        plain = requests.Session()
        plain.trust_env = False  # else REQUESTS_CA_BUNDLE from the environment beats .verify
        plain.verify = str(ca_file)
        assert fetch_image_bytes(f"https://images.test:{tls.port}/a.jpg", policy, session=plain) == JPEG


# --------------------------------------------------------------------------- logging, settings, session


def test_logs_and_errors_never_carry_the_query_string(
    server: LocalHTTPServer, caplog: pytest.LogCaptureFixture
) -> None:
    server.set("/gone.jpg", 404)
    server.sequence("/flaky.jpg", [503, Reply(body=JPEG)])
    caplog.set_level(logging.DEBUG)
    err = fetch_error(server.url("/gone.jpg?token=SECRET-TOKEN-1"), LOCAL)
    fetch_image_bytes(server.url("/flaky.jpg?X-Amz-Signature=SECRET-TOKEN-2"), LOCAL)
    assert "SECRET" not in err.message
    assert "gone.jpg" in caplog.text  # the path is logged...
    assert "SECRET" not in caplog.text  # ...the query string never is, not even by urllib3


def test_policy_from_settings() -> None:
    settings = Settings.from_env(
        {},
        max_image_bytes=1234,
        fetch_connect_timeout=1.5,
        fetch_read_timeout=7.0,
        fetch_retries=1,
        allow_private_urls=True,
        url_allowed_hosts=("res.cloudinary.com", "*.googleapis.com"),
    )
    policy = FetchPolicy.from_settings(settings)
    assert (policy.max_bytes, policy.connect_timeout, policy.read_timeout, policy.retries) == (1234, 1.5, 7.0, 1)
    assert policy.allow_private is True
    assert policy.allowed_hosts == ("res.cloudinary.com", "*.googleapis.com")
    assert FetchPolicy.from_settings(Settings()) == FetchPolicy()


def test_session_is_shared_and_renewed_after_fork() -> None:
    session = get_session()
    assert get_session() is session
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: must not reuse the parent's pooled sockets
        os.close(read_fd)
        os.write(write_fd, b"new" if get_session() is not session else b"same")
        os._exit(0)
    os.close(write_fd)
    ready, _, _ = select.select([read_fd], [], [], 20)
    answer = os.read(read_fd, 10) if ready else b"(child hung)"
    os.close(read_fd)
    if not ready:
        os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    assert answer == b"new"
