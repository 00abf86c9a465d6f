"""The HTTP endpoints: ``/metrics``, ``/-/healthy`` and whatever routes the caller adds, as one WSGI app.

``/metrics`` is prometheus_client's own app, so content negotiation (OpenMetrics) and gzip behave exactly
as Prometheus expects. ``/-/healthy`` is never authenticated, so liveness probes need no secret.
"""

from __future__ import annotations

import hmac
import ssl
import threading
from collections.abc import Callable, Iterable, Mapping
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import prometheus_client
from prometheus_client import REGISTRY, CollectorRegistry

__all__ = ["MetricsServer", "Route", "make_wsgi_app", "start_http_server"]

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
) -> WSGIApp:
    """The exporter's WSGI app, for mounting in an existing web application.

    ``token``: when set, every endpoint but ``/-/healthy`` asks for ``Authorization: Bearer <token>``.
    """
    metrics_app = prometheus_client.make_wsgi_app(REGISTRY if registry is None else registry)
    table: dict[str, Route] = {"/metrics": metrics_app}
    table.update(routes or {})
    expected = f"Bearer {token}".encode() if token else None

    def app(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        if path == "/-/healthy":
            return respond(start_response, "200 OK", b"OK\n")
        if expected is not None:
            given = environ.get("HTTP_AUTHORIZATION", "").encode()
            if not hmac.compare_digest(given, expected):
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


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
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
) -> MetricsServer:
    """Serve the exporter's endpoints from a daemon thread; binds to loopback unless told otherwise."""
    app = make_wsgi_app(registry, routes=routes, token=token)
    server = make_server(addr, port, app, _ThreadingServer, handler_class=_QuietHandler)
    scheme = "http"
    if certfile is not None:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(certfile, keyfile)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        scheme = "https"
    thread = threading.Thread(target=server.serve_forever, name="claude-exporter-http", daemon=True)
    thread.start()
    return MetricsServer(server, thread, scheme)
