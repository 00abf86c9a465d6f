"""Peers for ``claude-exporter reconcile`` tests, all real servers on 127.0.0.1.

* ``FakePrometheus``: answers the instant queries reconcile sends (``sum by (...) (increase(F{m}[Ns]))``)
  from samples a test adds per UTC day, or any bytes a test puts in ``answer``.
* ``RawServer``: a bare TCP server whose handler gets the connected socket after the request head was
  read, for peers no HTTP library would write: one byte every so often, an endless page.

Each stops its threads and closes its sockets on exit.
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import threading
import urllib.parse
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

__all__ = ["FakePrometheus", "RawServer"]

_QUERY = re.compile(
    r"^sum by \((?P<by>[^)]*)\) \(increase\((?P<family>\w+)\{(?P<matchers>[^}]*)\}\[(?P<s>\d+)s\]\)\)$"
)
_MATCHER = re.compile(r'(\w+)="([^"]*)"')


class FakePrometheus:
    """``add(day, family, value, **labels)`` makes ``increase(family[1d])`` evaluated at the end of that
    UTC day ``value`` for a series with those labels. ``answer``, when set, is sent instead (status 200)."""

    def __init__(self) -> None:
        self.samples: list[tuple[str, str, dict[str, str], float]] = []
        self.answer: bytes | None = None
        self.queries: list[str] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def add(self, day: str, family: str, value: float, **labels: str) -> None:
        self.samples.append((day, family, labels, value))

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> FakePrometheus:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_GET(self) -> None:
                body = fake._respond(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _respond(self, path: str) -> bytes:
        if self.answer is not None:
            return self.answer
        params = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)
        query = params["query"][0]
        self.queries.append(query)
        m = _QUERY.match(query)
        if m is None:
            return json.dumps(
                {"status": "error", "errorType": "bad_data", "error": f"unparsed {query}"}
            ).encode()
        day = datetime.fromtimestamp(float(params["time"][0]) - 1, timezone.utc).strftime("%Y-%m-%d")
        by = [b.strip() for b in m.group("by").split(",") if b.strip()]
        matchers = dict(_MATCHER.findall(m.group("matchers")))
        sums: dict[tuple[str, ...], float] = defaultdict(float)
        for d, family, labels, value in self.samples:
            if d != day or family != m.group("family"):
                continue
            if any(labels.get(k, "") != v for k, v in matchers.items()):
                continue
            sums[tuple(labels.get(b, "") for b in by)] += value
        result = [
            {
                "metric": {b: v for b, v in zip(by, key, strict=True) if v},
                "value": [float(params["time"][0]), repr(total)],
            }
            for key, total in sums.items()
        ]
        return json.dumps({"status": "success", "data": {"resultType": "vector", "result": result}}).encode()


class RawServer:
    """Accepts connections; reads each request's head, then calls ``handler(path, sock)`` in its own
    thread. ``stopping`` is set on exit, for handlers that loop."""

    def __init__(self, handler: Callable[[str, socket.socket, threading.Event], None]) -> None:
        self.handler = handler
        self.stopping = threading.Event()
        self.paths: list[str] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._threads: list[threading.Thread] = []
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        host, port = self._listener.getsockname()[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> RawServer:
        accept = threading.Thread(target=self._accept, daemon=True)
        accept.start()
        self._threads.append(accept)
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stopping.set()
        for thread in self._threads[:1]:
            thread.join(timeout=10)
        self._listener.close()
        with self._lock:
            for conn in self._conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()
        for thread in self._threads:
            thread.join(timeout=10)

    def _accept(self) -> None:
        self._listener.settimeout(0.05)  # close() does not wake a blocked accept(): poll for the stop
        while not self.stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            with self._lock:
                self._conns.append(conn)
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            with self._lock:
                self._threads.append(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        head = b""
        try:
            while b"\r\n\r\n" not in head and len(head) < 65536:
                chunk = conn.recv(4096)
                if not chunk:
                    return
                head += chunk
            path = head.split(b" ", 2)[1].decode("latin-1")
            self.paths.append(path)
            self.handler(path, conn, self.stopping)
        except OSError:
            pass
