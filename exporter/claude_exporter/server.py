"""The HTTP endpoints as one WSGI app: ``/metrics``, ``/health/claude-agent``, ``/v1/events``, ``/-/healthy``.

``/metrics`` negotiates as prometheus_client's own app does (OpenMetrics, gzip, ``name[]``), so it behaves
exactly as Prometheus expects; the recorder's families are written by the exposition's writer, the
registry's other collectors by prometheus_client. ``/-/healthy`` is never authenticated, so liveness probes
need no secret.
"""

from __future__ import annotations

import collections
import contextlib
import hmac
import io
import os
import selectors
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import REGISTRY, CollectorRegistry

from claude_exporter.config import ServerConfig, as_config
from claude_exporter.exposition.endpoint import metrics_app
from claude_exporter.recording.state import ACTIVE

__all__ = [
    "BACKLOG",
    "MAX_PENDING",
    "MAX_WORKERS",
    "RESERVED_FOR_READS",
    "MetricsServer",
    "Route",
    "default_routes",
    "make_wsgi_app",
    "read_token",
    "start_http_server",
]

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]
Route = WSGIApp


def respond(
    start_response: StartResponse, status: str, body: bytes, content_type: str = "text/plain"
) -> list[bytes]:
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return [body]


def make_wsgi_app(
    registry: CollectorRegistry | None = None,
    *,
    routes: Mapping[str, Route] | None = None,
    token: str | None = None,
    otlp: bool = False,
) -> WSGIApp:
    """The exporter's WSGI app, for mounting in an existing web application.

    ``token``: when set, every endpoint but ``/-/healthy`` asks for ``Authorization: Bearer <token>``.
    ``otlp``: also receive Claude Code's telemetry (OTLP ``/v1/metrics``, ``/v1/logs``, ``/v1/traces``;
    ``/v1/hooks``).
    """
    metrics = metrics_app(REGISTRY if registry is None else registry)
    table: dict[str, Route] = {"/metrics": metrics, **default_routes(otlp), **(routes or {})}
    # Header values reach WSGI as latin-1 text (PEP 3333): encoding back to latin-1 recovers the client's
    # bytes, which match a token's UTF-8 bytes whatever its characters.
    expected = token.encode("utf-8") if token else None

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        if path == "/-/healthy":
            return respond(start_response, "200 OK", b"OK\n")
        if expected is not None:
            # Only HTTP's own blanks are stripped: str.strip() would also eat "\xa0" and "\x85", bytes of
            # UTF-8 characters seen through latin-1.
            header = environ.get("HTTP_AUTHORIZATION", "").strip(" \t")
            scheme, _, given = header.partition(" ")
            # The scheme is case-insensitive (RFC 7235); the token is compared in constant time.
            if scheme.lower() != "bearer" or not hmac.compare_digest(_raw(given.strip(" \t")), expected):
                start_response(
                    "401 Unauthorized",
                    [("Content-Type", "text/plain"), ("WWW-Authenticate", 'Bearer realm="claude-exporter"')],
                )
                return [b"401 Unauthorized: a bearer token is required\n"]
        route = table.get(path)
        if route is None:
            return respond(start_response, "404 Not Found", f"404 Not Found: {path}\n".encode())
        return route(environ, start_response)

    return app


def _raw(header: str) -> bytes:
    try:
        return header.encode("latin-1")
    except UnicodeEncodeError:  # not from a socket (a WSGI host that decoded otherwise): compare as UTF-8
        return header.encode("utf-8", "replace")


# Sized for Prometheus (one or two scrapes at a time) plus a burst of ingesting clients: requests past the
# workers wait their turn in a queue (past that, 503), and threads stay bounded.
MAX_WORKERS = 32
BACKLOG = 256
# Workers only a bodiless request (GET, HEAD, OPTIONS: a scrape, a probe) may take, so requests whose
# bodies trickle in cannot hold every worker while Prometheus waits.
RESERVED_FOR_READS = 4
# Connections still sending their headers. They cost a socket each and no thread; past this, the oldest
# is dropped to make room, so a flood of them cannot run the process out of file descriptors.
MAX_PENDING = 512
# The most header bytes taken (431 past it): http.server's own limit for one line, which keeps what
# MAX_PENDING connections can hold to 32 MiB.
MAX_HEADER = 64 * 1024

_TIMEOUT = b"408 Request Timeout"
_BODILESS = frozenset({b"GET", b"HEAD", b"OPTIONS"})
_Request = tuple[socket.socket, Any, bytes]  # the connection, its address, what was read of it


class _Pending:
    __slots__ = ("address", "buffer", "deadline", "handshaking")

    def __init__(self, address: Any, deadline: float, handshaking: bool) -> None:
        self.address = address
        self.buffer = bytearray()
        self.deadline = deadline
        self.handshaking = handshaking  # a TLS connection whose handshake is still to finish


def _headers_end(buffer: bytearray, start: int) -> bool:
    """Whether the blank line that ends the headers is in ``buffer`` (searched from ``start``, where the
    last read began); http.server takes a bare LF as a line's end, so this does too."""
    start = max(0, start - 3)
    return buffer.find(b"\n\r\n", start) != -1 or buffer.find(b"\n\n", start) != -1


class _ThreadingServer(WSGIServer):
    """A WSGI server whose workers are spent on requests, not on waiting for clients.

    One thread (``serve_forever``) accepts connections and reads each one's headers without blocking,
    all of them at once; a connection costs a thread only once its headers are in, so clients that send
    them a byte at a time (slowloris) hold no worker. Each connection has ``header_deadline`` seconds
    from its accept for the whole of them (then 408). A request then takes one of ``MAX_WORKERS`` workers,
    or, for a bodiless one when those are all busy (say with bodies trickling in), one of
    ``RESERVED_FOR_READS``; else it waits in a queue of ``BACKLOG``, bodiless requests first.
    """

    request_queue_size = BACKLOG
    header_deadline = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._lock = threading.Lock()
        self._busy = {False: 0, True: 0}  # workers in use: {reserved: count}
        self._reads: collections.deque[_Request] = collections.deque()
        self._writes: collections.deque[_Request] = collections.deque()
        self._pending: dict[socket.socket, _Pending] = {}
        self._prefixes: dict[socket.socket, bytes] = {}
        self._closing = threading.Event()
        self._stopped = threading.Event()
        self._serving = False
        super().__init__(*args, **kwargs)

    # The accepting thread

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        self._serving = True
        listener = self.socket
        listener.setblocking(False)
        try:
            with selectors.DefaultSelector() as selector:
                selector.register(listener, selectors.EVENT_READ)
                while not self._closing.is_set():
                    now = time.monotonic()
                    first = next(iter(self._pending.values()), None)  # accept order: the first due first
                    wait = (
                        poll_interval if first is None else max(0.0, min(poll_interval, first.deadline - now))
                    )
                    for key, _ in selector.select(wait):
                        if key.fileobj is listener:
                            self._accept(selector, listener)
                            continue
                        sock: socket.socket = key.fileobj  # type: ignore[assignment]
                        try:
                            self._read(selector, sock)
                        except Exception:  # a fault with one connection must not stop the others'
                            pending = self._pending.get(sock)
                            self.handle_error(sock, None if pending is None else pending.address)
                            if pending is not None:
                                self._drop(selector, sock)
                    self._expire(selector)
                for sock in list(self._pending):
                    self._drop(selector, sock)
        finally:
            with self._lock:
                waiting = [*self._reads, *self._writes]
                self._reads.clear()
                self._writes.clear()
            for sock, _, _ in waiting:
                self.shutdown_request(sock)
            self._stopped.set()

    def _accept(self, selector: selectors.BaseSelector, listener: socket.socket) -> None:
        for _ in range(64):  # a burst at a time, so a flood of connections cannot starve the reads
            try:
                sock, address = listener.accept()
            except OSError:  # none waiting (EAGAIN), one gone before the accept, or no descriptor left
                return
            if len(self._pending) >= MAX_PENDING:
                oldest = next(iter(self._pending))
                self._drop(selector, oldest, None if self._pending[oldest].handshaking else _TIMEOUT)
            sock.setblocking(False)
            deadline = time.monotonic() + self.header_deadline
            self._pending[sock] = _Pending(address, deadline, isinstance(sock, ssl.SSLSocket))
            selector.register(sock, selectors.EVENT_READ)

    def _read(self, selector: selectors.BaseSelector, sock: socket.socket) -> None:
        pending = self._pending[sock]
        try:
            if pending.handshaking:
                sock.do_handshake()  # type: ignore[attr-defined]
                pending.handshaking = False
            selector.modify(sock, selectors.EVENT_READ)  # back from EVENT_WRITE, if it waited to send
            while True:
                start = len(pending.buffer)
                chunk = sock.recv(65536)
                if not chunk:
                    self._drop(selector, sock)
                    return
                pending.buffer += chunk
                if _headers_end(pending.buffer, start):
                    selector.unregister(sock)
                    del self._pending[sock]
                    self._dispatch(sock, pending.address, bytes(pending.buffer))
                    return
                if len(pending.buffer) > MAX_HEADER:
                    self._drop(selector, sock, b"431 Request Header Fields Too Large")
                    return
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError):
            return  # all there is for now
        except ssl.SSLWantWriteError:  # TLS's answer waits for room to send
            selector.modify(sock, selectors.EVENT_WRITE)
        except OSError:  # reset, or a failed handshake
            self._drop(selector, sock)

    def _expire(self, selector: selectors.BaseSelector) -> None:
        now = time.monotonic()
        while self._pending:
            sock, pending = next(iter(self._pending.items()))
            if pending.deadline > now:
                return
            self._drop(selector, sock, None if pending.handshaking else _TIMEOUT)

    def _drop(
        self, selector: selectors.BaseSelector, sock: socket.socket, status: bytes | None = None
    ) -> None:
        selector.unregister(sock)
        del self._pending[sock]
        if status is not None:
            with contextlib.suppress(OSError):  # a courtesy: the client may not be reading
                sock.send(b"HTTP/1.0 " + status + b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        with contextlib.suppress(OSError):
            sock.close()

    # Handing requests to workers

    def _dispatch(self, sock: socket.socket, address: Any, head: bytes) -> None:
        request = (sock, address, head)
        bodiless = head.lstrip().split(b" ", 1)[0] in _BODILESS
        with self._lock:
            if self._busy[False] < MAX_WORKERS:
                reserved = False
            elif bodiless and self._busy[True] < RESERVED_FOR_READS:
                reserved = True
            elif len(self._reads) + len(self._writes) < BACKLOG:
                (self._reads if bodiless else self._writes).append(request)
                return
            else:
                reserved = None
            if reserved is not None:
                self._busy[reserved] += 1
        if reserved is not None:
            try:
                thread = threading.Thread(
                    target=self._work, args=(request, reserved), name="claude-exporter-request", daemon=True
                )
                thread.start()
                return
            except RuntimeError:  # no thread to be had: refused like a full queue, and the server goes on
                with self._lock:
                    self._busy[reserved] -= 1
        with contextlib.suppress(OSError):
            sock.send(b"HTTP/1.0 503 Service Unavailable\r\nContent-Length: 0\r\nRetry-After: 1\r\n\r\n")
        self.shutdown_request(sock)

    def _work(self, request: _Request, reserved: bool) -> None:
        next_request: _Request | None = request
        while next_request is not None:
            sock, address, head = next_request
            self._prefixes[sock] = head
            try:
                self.finish_request(sock, address)
            except Exception:
                self.handle_error(sock, address)
            finally:
                self._prefixes.pop(sock, None)
                self.shutdown_request(sock)
            with self._lock:  # the next waiting request, bodiless first; a reserved worker takes only those
                if self._reads:
                    next_request = self._reads.popleft()
                elif self._writes and not reserved:
                    next_request = self._writes.popleft()
                else:
                    next_request = None
                    self._busy[reserved] -= 1

    def take_prefix(self, sock: socket.socket) -> bytes:
        """What the accepting thread read of ``sock`` (its headers, perhaps the start of its body)."""
        return self._prefixes.pop(sock, b"")

    def shutdown(self) -> None:
        self._closing.set()
        if self._serving:
            self._stopped.wait()


class _Prefixed(io.RawIOBase):
    """A connection's bytes: those the accepting thread already read, then the rest from the socket."""

    def __init__(self, prefix: bytes, rest: Any) -> None:
        super().__init__()
        self._prefix = memoryview(prefix)
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._prefix:
            count = min(len(buffer), len(self._prefix))
            buffer[:count] = self._prefix[:count]
            self._prefix = self._prefix[count:]
            return count
        # readinto1: one read of the socket, as a raw stream's readinto is (readinto would wait to fill
        # the whole buffer, past the end of a short body).
        return int(self._rest.readinto1(buffer))

    def close(self) -> None:
        super().close()
        self._rest.close()


class _QuietHandler(WSGIRequestHandler):
    # Seconds a client may stall on any one read or write before its connection is dropped: a stalled
    # client holds one of MAX_WORKERS workers at most this long.
    timeout = 10

    def setup(self) -> None:
        super().setup()
        take = getattr(self.server, "take_prefix", None)
        prefix = take(self.connection) if take is not None else b""
        if prefix:
            self.rfile = io.BufferedReader(_Prefixed(prefix, self.rfile))

    def log_message(self, format: str, *args: Any) -> None:
        """Access logs would flood stderr at one scrape a second."""


class MetricsServer:
    """A running exporter endpoint; ``close()`` stops it."""

    def __init__(self, server: WSGIServer, thread: threading.Thread, scheme: str) -> None:
        self._server = server
        self._thread = thread
        self.address, self.port = server.server_address[:2]
        address = str(self.address)
        host = address if ":" not in address else f"[{address}]"
        self.url = f"{scheme}://{host}:{self.port}"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


def read_token(server: ServerConfig, environ: Mapping[str, str] | None = None) -> str | None:
    """The bearer token: from the file named in the config, else from the environment variable it names."""
    if server.token_file:
        token = Path(server.token_file).read_text(encoding="utf-8").strip()
        if not token:
            from claude_exporter.config import ConfigError

            raise ConfigError(f"exporter.server.token_file: {server.token_file} is empty")
        return token
    env = os.environ if environ is None else environ
    return env.get(server.token_env) or None if server.token_env else None


def default_routes(otlp: bool = False) -> dict[str, Route]:
    """The health and ingestion endpoints (with ``otlp``, Claude Code's too), reading whichever recorder
    is active when asked."""
    from claude_exporter.exposition.health import health_route
    from claude_exporter.ingest.events import events_route

    def active() -> Any:
        return ACTIVE.recorder

    def health() -> Any:
        opened = ACTIVE.opened
        return None if opened is None else opened.health_window()

    health()  # the window starts with the endpoint that reads it, so it holds what came since

    routes: dict[str, Route] = {
        "/health/claude-agent": health_route(health),
        "/v1/events": events_route(active),
    }
    if otlp:
        from claude_exporter.ingest.otlp_http import hooks_route, otlp_route

        def claude_code() -> Any:
            return getattr(ACTIVE.opened, "claude_code", None)

        for signal in ("metrics", "logs", "traces"):
            routes[f"/v1/{signal}"] = otlp_route(signal, claude_code)
        routes["/v1/hooks"] = hooks_route(claude_code)
    return routes


def start_http_server(
    port: int = 9466,
    addr: str = "127.0.0.1",
    *,
    config: Any = None,
    registry: CollectorRegistry | None = None,
    token: str | None = None,
    certfile: str | None = None,
    keyfile: str | None = None,
    routes: Mapping[str, Route] | None = None,
    otlp: bool | None = None,
) -> MetricsServer:
    """Serve ``/metrics``, ``/health/claude-agent``, ``/v1/events`` and ``/-/healthy`` from a daemon thread.

    Binds to loopback unless told otherwise. ``config`` (a Config or a path; by default the active
    instrumentation's, else ``CLAUDE_EXPORTER_CONFIG``'s, else the built-in one) supplies the bearer token
    (``exporter.server.token_file``, else the variable named by ``token_env``, by default
    ``CLAUDE_EXPORTER_TOKEN``) and the TLS files; explicit arguments win over it. ``otlp`` (default:
    ``exporter.otlp.enabled``, off unless set) adds the OTLP receiver and hooks endpoint for Claude Code.
    """
    # Without a config: the active instrumentation's, else CLAUDE_EXPORTER_CONFIG's, else the defaults,
    # so a token in CLAUDE_EXPORTER_TOKEN protects the endpoints however the server was started.
    active = getattr(ACTIVE.opened, "config", None)
    if config is None and active is not None and active.source != "<default>":
        config = active
    resolved = as_config(config)
    server_config = resolved.server
    token = token if token is not None else read_token(server_config)
    certfile = certfile or server_config.tls_cert_file
    keyfile = keyfile or server_config.tls_key_file
    otlp = resolved.otlp.enabled is True if otlp is None else otlp
    app = make_wsgi_app(registry, routes=routes, token=token, otlp=otlp)
    try:
        server = make_server(addr, port, app, _ThreadingServer, handler_class=_QuietHandler)
    except OSError as err:  # say where: "Address already in use" alone does not
        raise OSError(err.errno, f"cannot listen on {addr}:{port}: {err.strerror or err}") from err
    scheme = "http"
    if certfile is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certfile, keyfile)
        # The handshake runs on the first read, in the request's own thread and under its timeout, so a
        # client that connects and says nothing cannot hold up the accepting thread.
        server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
        scheme = "https"
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="claude-exporter-http", daemon=True
    )
    thread.start()
    return MetricsServer(server, thread, scheme)
