"""A real, threaded HTTP/1.1 server on 127.0.0.1 for tests (no mocks, no internet).

    with LocalHTTPServer({"/a.jpg": (200, {"Content-Type": "image/jpeg"}, jpeg)}) as srv:
        srv.sequence("/flaky", [503, 503, Reply(200, body=jpeg)])   # scripted failures
        srv.redirect("/old", "/a.jpg")                              # 302 by default
        srv.set("/slow", Reply(body=jpeg, delay=5))                 # slow before headers
        srv.set("/big", Reply(body=b"x" * 30_000_000, chunked=True)) # no Content-Length
        fetch(srv.url("/flaky"))
        assert srv.hits("/flaky") == 3
        rec = srv.wait_done("/big")[0]; assert not rec.completed    # client hung up early

Routes are exact paths (query strings ignored for matching, kept in ``record.target``);
a route may also be a callable ``(RequestInfo) -> spec`` for dynamic answers, and a
``directory`` can serve files. Unknown paths answer 404. Every request is recorded
(``records``/``hits``) with how many body bytes were written and whether the client
read the whole response. Sleeps wake up at ``stop()``, so a slow route never hangs a test.

Also usable as a pytest fixture: ``from tests.http_fixtures import http_server``.
"""

from __future__ import annotations

import mimetypes
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Self
from urllib.parse import unquote, urlsplit

import pytest

__all__ = ["LocalHTTPServer", "Reply", "RequestInfo", "RequestRecord", "http_server"]


@dataclass
class Reply:
    """One scripted response."""

    status: int = 200
    headers: Mapping[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay: float = 0.0  # seconds before the status line is sent (slow server)
    chunk_delay: float = 0.0  # seconds between body chunks (slow drip)
    chunk_size: int = 64 * 1024
    chunked: bool = False  # Transfer-Encoding: chunked, no Content-Length
    content_length: int | None = None  # advertise this instead of len(body) (lies allowed)
    close: bool = False  # close the connection after this response


@dataclass(frozen=True)
class RequestInfo:
    """What a callable route gets."""

    method: str
    path: str
    target: str  # path with query string, as received
    headers: Mapping[str, str]


Spec = Reply | tuple | int | bytes | Callable[[RequestInfo], Any]


@dataclass
class RequestRecord:
    """One request as the server saw it."""

    method: str
    path: str
    target: str
    headers: dict[str, str]
    client: tuple[Any, ...]
    started: float
    wall: float = 0.0  # time.time() at arrival, to compare with timestamps other processes write
    status: int = 0
    body_size: int = 0  # body bytes the response meant to send
    bytes_sent: int = 0  # body bytes actually written to the socket
    completed: bool = False  # the whole response was written
    error: str | None = None  # e.g. "BrokenPipeError" when the client hung up
    finished: float | None = None
    done: threading.Event = field(default_factory=threading.Event, repr=False)


def _to_reply(spec: Any) -> Reply:
    if isinstance(spec, Reply):
        return spec
    if isinstance(spec, int):
        return Reply(status=spec, body=f"status {spec}\n".encode(), headers={"Content-Type": "text/plain"})
    if isinstance(spec, (bytes, bytearray)):
        return Reply(body=bytes(spec), headers={"Content-Type": "application/octet-stream"})
    if isinstance(spec, tuple):
        status, headers, body = (list(spec) + [{}, b""])[:3]
        return Reply(status=int(status), headers=dict(headers or {}), body=bytes(body or b""))
    raise TypeError(f"unsupported route spec: {spec!r}")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    owner: LocalHTTPServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients hanging up / failing TLS on purpose are normal in these tests


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    timeout = 15  # idle keep-alive connections end by themselves

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: tests read records instead

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self._answer(send_body=True)

    def _answer(self, send_body: bool) -> None:
        owner = self.server.owner
        target = self.path
        path = unquote(urlsplit(target).path) or "/"
        record = RequestRecord(
            method=self.command,
            path=path,
            target=target,
            headers={k: v for k, v in self.headers.items()},
            client=tuple(self.client_address),
            started=time.monotonic(),
            wall=time.time(),
        )
        owner._add_record(record)
        try:
            reply = owner._reply_for(RequestInfo(self.command, path, target, dict(record.headers)))
            record.status = reply.status
            record.body_size = len(reply.body) if send_body else 0
            if reply.delay and owner._stopping.wait(reply.delay):
                self.close_connection = True
                return
            self._write_reply(reply, record, send_body)
            record.completed = True
        except OSError as exc:  # BrokenPipe / ConnectionReset when the client hung up early
            record.error = type(exc).__name__
            self.close_connection = True
        finally:
            record.finished = time.monotonic()
            record.done.set()

    def _write_reply(self, reply: Reply, record: RequestRecord, send_body: bool) -> None:
        self.send_response(reply.status)
        names = {k.lower() for k in reply.headers}
        for key, value in reply.headers.items():
            self.send_header(key, value)
        if reply.chunked:
            self.send_header("Transfer-Encoding", "chunked")
        elif "content-length" not in names:
            length = reply.content_length if reply.content_length is not None else len(reply.body)
            self.send_header("Content-Length", str(length))
        if reply.close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if not send_body:
            return
        owner = self.server.owner
        body = memoryview(reply.body)
        size = max(1, reply.chunk_size)
        for start in range(0, len(body), size):
            piece = body[start : start + size]
            if reply.chunked:
                self.wfile.write(f"{len(piece):x}\r\n".encode() + piece.tobytes() + b"\r\n")
            else:
                self.wfile.write(piece)
            record.bytes_sent += len(piece)
            if reply.chunk_delay and owner._stopping.wait(reply.chunk_delay):
                raise ConnectionAbortedError("server stopping")
        if reply.chunked:
            self.wfile.write(b"0\r\n\r\n")
        if reply.content_length is not None and reply.content_length != len(reply.body):
            self.close_connection = True  # the advertised length was a lie: end the connection


class LocalHTTPServer:
    """Threaded HTTP server on 127.0.0.1 (or ``::1``) with scripted routes and request records."""

    def __init__(
        self,
        routes: Mapping[str, Spec | Sequence[Spec]] | None = None,
        *,
        directory: str | Path | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if host not in ("127.0.0.1", "::1", "localhost"):
            raise ValueError("test servers listen on loopback only")
        self.host = host
        self.directory = Path(directory).resolve() if directory is not None else None
        self._routes: dict[str, list[Reply] | Callable[[RequestInfo], Any]] = {}
        self._positions: dict[str, int] = {}
        self._records: list[RequestRecord] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._port = port
        self.ssl_context = ssl_context
        for path, spec in (routes or {}).items():
            self.set(path, spec)

    # -- lifecycle ----------------------------------------------------------------
    def start(self) -> Self:
        if self._server is not None:
            return self
        server_cls = type("_Server6", (_Server,), {"address_family": socket.AF_INET6}) if ":" in self.host else _Server
        self._stopping.clear()
        self._server = server_cls((self.host, self._port), _Handler)
        self._server.owner = self
        if self.ssl_context is not None:
            # the handshake happens lazily in the handler thread, never in the accept loop
            self._server.socket = self.ssl_context.wrap_socket(
                self._server.socket, server_side=True, do_handshake_on_connect=False
            )
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True, name="LocalHTTPServer"
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- addresses ----------------------------------------------------------------
    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("server not started")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        scheme = "https" if self.ssl_context is not None else "http"
        return f"{scheme}://{host}:{self.port}"

    def url(self, path: str = "/") -> str:
        return self.base_url + (path if path.startswith("/") else "/" + path)

    # -- routes -------------------------------------------------------------------
    def set(self, path: str, spec: Spec | Sequence[Spec]) -> None:
        """Route ``path`` to a reply, a ``(status, headers, body)`` tuple, a status, bytes,
        a callable, or a list of those (a script: one per request, the last one repeats)."""
        with self._lock:
            if callable(spec) and not isinstance(spec, Reply):
                self._routes[path] = spec
            elif isinstance(spec, list):
                if not spec:
                    raise ValueError("empty sequence")
                self._routes[path] = [_to_reply(s) for s in spec]
            else:
                self._routes[path] = [_to_reply(spec)]
            self._positions[path] = 0

    def sequence(self, path: str, specs: Sequence[Spec]) -> None:
        """Scripted answers, e.g. ``[503, 503, Reply(body=jpeg)]``; the last one repeats."""
        self.set(path, list(specs))

    def redirect(self, path: str, location: str, status: int = 302) -> None:
        self.set(path, Reply(status=status, headers={"Location": location}))

    def _reply_for(self, info: RequestInfo) -> Reply:
        with self._lock:
            route = self._routes.get(info.path)
            if isinstance(route, list):
                pos = self._positions[info.path]
                self._positions[info.path] = pos + 1
                return route[min(pos, len(route) - 1)]
        if route is not None:
            return _to_reply(route(info))
        if self.directory is not None:
            return self._file_reply(info.path)
        return Reply(status=404, body=b"not found\n", headers={"Content-Type": "text/plain"})

    def _file_reply(self, path: str) -> Reply:
        assert self.directory is not None
        candidate = (self.directory / path.lstrip("/")).resolve()
        if not candidate.is_relative_to(self.directory) or not candidate.is_file():
            return Reply(status=404, body=b"not found\n", headers={"Content-Type": "text/plain"})
        ctype = mimetypes.guess_type(candidate.name)[0] or "application/octet-stream"
        return Reply(body=candidate.read_bytes(), headers={"Content-Type": ctype})

    # -- records ------------------------------------------------------------------
    def _add_record(self, record: RequestRecord) -> None:
        with self._lock:
            self._records.append(record)

    def records(self, path: str | None = None) -> list[RequestRecord]:
        with self._lock:
            return [r for r in self._records if path is None or r.path == path]

    def hits(self, path: str | None = None) -> int:
        """Requests received for ``path`` (all paths when ``None``)."""
        return len(self.records(path))

    def wait_done(self, path: str | None = None, timeout: float = 10.0) -> list[RequestRecord]:
        """The records for ``path`` once every one of them has finished (or raise TimeoutError)."""
        end = time.monotonic() + timeout
        for record in self.records(path):
            if not record.done.wait(max(0.0, end - time.monotonic())):
                raise TimeoutError(f"request {record.target} still running after {timeout}s")
        return self.records(path)

    def reset(self) -> None:
        """Forget records and restart every script from its first answer."""
        with self._lock:
            self._records.clear()
            self._positions = {k: 0 for k in self._positions}


@pytest.fixture
def http_server() -> Iterator[LocalHTTPServer]:
    """A started ``LocalHTTPServer`` on 127.0.0.1, stopped after the test."""
    with LocalHTTPServer() as server:
        yield server
