"""The HTTP endpoints as one WSGI app: ``/metrics``, ``/health/claude-agent``, ``/v1/events``, ``/-/healthy``.

``/metrics`` negotiates as prometheus_client's own app does (OpenMetrics, gzip, ``name[]``), so it behaves
exactly as Prometheus expects; the recorder's families are written by the exposition's writer, the
registry's other collectors by prometheus_client. ``/-/healthy`` is never authenticated, so liveness probes
need no secret.
"""

from __future__ import annotations

import hmac
import os
import ssl
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import REGISTRY, CollectorRegistry

from claude_exporter.config import ServerConfig, as_config
from claude_exporter.exposition.endpoint import metrics_app
from claude_exporter.recording.state import ACTIVE

__all__ = [
    "BACKLOG",
    "MAX_WORKERS",
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


# Sized for Prometheus (one or two scrapes at a time) plus a burst of ingesting clients: connections past
# the workers wait in the listen backlog instead of being reset, and threads stay bounded.
MAX_WORKERS = 32
BACKLOG = 256


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    request_queue_size = BACKLOG

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._slots = threading.BoundedSemaphore(MAX_WORKERS)
        self._closing = threading.Event()
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        # Wait for a free worker here, in the accepting thread: meanwhile new connections queue in the
        # kernel's backlog, which is what bounds the threads.
        while not self._slots.acquire(timeout=0.1):
            if self._closing.is_set():
                self.shutdown_request(request)
                return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def shutdown(self) -> None:
        self._closing.set()
        super().shutdown()


class _QuietHandler(WSGIRequestHandler):
    # Seconds a client may stall on any one read or write before its connection is dropped: a stalled
    # client holds one of MAX_WORKERS workers at most this long.
    timeout = 10

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
