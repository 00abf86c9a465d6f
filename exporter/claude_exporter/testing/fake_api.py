"""A fake Anthropic Messages API: a real HTTP server on 127.0.0.1 that the real SDK talks to.

Tests script answers per request (status, latency, usage, stream shape, errors, dropped connections) and
point ``anthropic.Anthropic`` / ``AsyncAnthropic`` at ``fake.url``; everything between (HTTP, retries,
SSE parsing, typed errors) is the SDK's own code. Runnable example (it is also a doctest)::

    >>> from claude_exporter.testing import FakeAnthropic, Reply
    >>> with FakeAnthropic() as fake:
    ...     fake.script(Reply(status=429, retry_after=0.01), Reply(text="hi", output_tokens=3))
    ...     client = fake.client(max_retries=1)
    ...     msg = client.messages.create(
    ...         model="claude-x", max_tokens=16, messages=[{"role": "user", "content": "hello"}]
    ...     )
    ...     (msg.content[0].text, msg.usage.output_tokens, [r.retry_count for r in fake.requests])
    ('hi', 3, [0, 1])

Which reply answers a request: the FIFO queue for its ``X-Fake-Key`` header (no header: the unkeyed queue;
a keyed request never takes unkeyed replies), else ``fake.responder(request)``, else ``fake.default``.
Every POST to /v1/messages or /v1/messages/count_tokens takes one reply (the query string is ignored, so
``client.beta.messages`` works too; so does Vertex AI's ``.../models/<model>:rawPredict`` form);
count_tokens answers ``{"input_tokens": reply.input_tokens}``.
GET /-/healthy answers "ok" and is not recorded; other paths get a 404 error and take no reply.
Message Batches added with `FakeAnthropic.add_batch` answer GET /v1/messages/batches/<id> (an ended batch)
and GET /v1/messages/batches/<id>/results (its JSONL results), so ``messages.batches.results(id)`` works;
those requests are recorded and take no reply.
The fake does not validate requests. Every response carries ``Connection: close`` so each request is a
fresh connection (a dropped one never lingers in the client's pool); streams use chunked encoding and
each event is written (and so flushed) as soon as it is due.
"""

from __future__ import annotations

import json
import re
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qsl, urlsplit

from ._replies import (
    FAKE_MODEL,
    Reply,
    batch_body,
    batch_result,
    encode_event,
    error_body,
    message_body,
    new_id,
    response_headers,
    stream_events,
)

if TYPE_CHECKING:
    import anthropic
    from typing_extensions import Self

__all__ = ["KEY_HEADER", "FakeAnthropic", "FakeRequest", "Responder"]

KEY_HEADER = "X-Fake-Key"
"""Request header that selects a keyed reply queue (see `FakeAnthropic.script`)."""

_ENDPOINTS = ("/v1/messages", "/v1/messages/count_tokens")
_BATCH = re.compile(r"^/v1/messages/batches/(?P<id>[A-Za-z0-9_-]+)(?P<results>/results)?$")
# Vertex AI's form of /v1/messages (AnthropicVertex with base_url=fake.url): the model is in the path.
_VERTEX = re.compile(
    r"^(?:/v1)?/projects/[^/]+/locations/[^/]+/publishers/anthropic/models/(?P<model>[^/:]+):(?:stream)?rawPredict$"
)


@dataclass(frozen=True, kw_only=True)
class FakeRequest:
    """One request as the fake received it."""

    method: str
    path: str
    """Without the query string (see `query`)."""
    headers: dict[str, str]
    """Lower-case names."""
    body: dict[str, Any]
    """Parsed JSON body; {} when there is none or it is not a JSON object."""
    key: str | None = None
    """The X-Fake-Key header, if any."""
    query: dict[str, str] = field(default_factory=dict)
    raw_body: bytes = b""
    time: float = 0.0
    """time.monotonic() when the request arrived."""

    @property
    def stream(self) -> bool:
        return self.body.get("stream") is True

    @property
    def retry_count(self) -> int:
        """Which attempt this is for the SDK (its x-stainless-retry-count header): 0 = first try."""
        return int(self.headers.get("x-stainless-retry-count", "0"))


Responder = Callable[[FakeRequest], Reply]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-anthropic/1"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests read `fake.requests`, not an access log."""

    def do_GET(self) -> None:
        server = cast(_Server, self.server)
        server.fake._busy(+1)
        try:
            self._handle(server)
        except (ConnectionError, TimeoutError):
            # The client went away (disconnect mid-stream, timeout): normal in tests, nothing to report.
            self.close_connection = True
        finally:
            server.fake._busy(-1)

    do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def _handle(self, server: _Server) -> None:
        fake = server.fake
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length > 0 else b""
        if self.command == "GET" and url.path == "/-/healthy":
            self._send(200, b"ok", {"content-type": "text/plain; charset=utf-8"})
            return
        headers = {name.lower(): value for name, value in self.headers.items()}
        try:
            parsed: object = json.loads(raw) if raw else {}
        except ValueError:
            parsed = None
        vertex = _VERTEX.match(url.path)
        endpoint = "/v1/messages" if vertex else url.path
        if vertex and isinstance(parsed, dict):
            parsed.setdefault("model", vertex.group("model"))
        request = FakeRequest(
            method=self.command,
            path=url.path,
            headers=headers,
            body=parsed if isinstance(parsed, dict) else {},
            key=headers.get(KEY_HEADER.lower()),
            query=dict(parse_qsl(url.query)),
            raw_body=raw,
            time=time.monotonic(),
        )
        fake._record(request)
        batch = _BATCH.match(url.path) if self.command == "GET" else None
        if batch is not None and fake._batch(batch.group("id")) is not None:
            self._batch(fake, batch.group("id"), bool(batch.group("results")))
            return
        if self.command != "POST" or endpoint not in _ENDPOINTS:
            reply = Reply(status=404, error_message=f"Not found: {self.command} {url.path}")
        elif not isinstance(parsed, dict):
            reply = Reply(status=400, error_message="The request body must be a JSON object.")
        else:
            reply = fake._next_reply(request)

        stopping = server.stopping
        if (reply.latency and stopping.wait(reply.latency)) or reply.drop_connection or stopping.is_set():
            # Closing the socket before any status line is what the SDK reports as APIConnectionError.
            self.close_connection = True
            return
        request_id = new_id("req_")
        extra = {"request-id": request_id, **response_headers(reply)}
        if reply.is_error:
            body = error_body(reply, request_id=request_id)
        elif endpoint == "/v1/messages/count_tokens":
            body = {"input_tokens": reply.input_tokens}
        elif request.stream:
            self._stream(reply, str(request.body.get("model") or FAKE_MODEL), request_id, extra, stopping)
            return
        else:
            body = message_body(
                reply, model=str(request.body.get("model") or FAKE_MODEL), msg_id=new_id("msg_")
            )
        self._send(reply.status, json.dumps(body).encode(), {"content-type": "application/json", **extra})

    def _batch(self, fake: FakeAnthropic, batch_id: str, results: bool) -> None:
        lines = fake._batch(batch_id) or []
        if results:
            payload = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
            self._send(200, payload, {"content-type": "application/binary"})
            return
        counts: dict[str, int] = {}
        for line in lines:
            kind = str(line["result"]["type"])
            counts[kind] = counts.get(kind, 0) + 1
        body = batch_body(batch_id, f"{fake.url}/v1/messages/batches/{batch_id}/results", counts)
        self._send(200, json.dumps(body).encode(), {"content-type": "application/json"})

    def _head(self, status: int, headers: dict[str, str]) -> None:
        # http.server has no reason phrase for 529; the real API says "Overloaded" (h11 accepts either).
        self.send_response(status, "Overloaded" if status == 529 else None)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Connection", "close")
        self.end_headers()

    def _send(self, status: int, payload: bytes, headers: dict[str, str]) -> None:
        self._head(status, {**headers, "content-length": str(len(payload))})
        self.wfile.write(payload)

    def _stream(
        self, reply: Reply, model: str, request_id: str, headers: dict[str, str], stopping: threading.Event
    ) -> None:
        events = stream_events(reply, model=model, msg_id=new_id("msg_"), request_id=request_id)
        sse = {"content-type": "text/event-stream; charset=utf-8", "cache-control": "no-cache"}
        self._head(reply.status, {**sse, **headers, "transfer-encoding": "chunked"})
        for i, (name, data) in enumerate(events):
            if i and reply.event_delay and stopping.wait(reply.event_delay):
                return  # stop() while streaming: end without the last chunk, as a cut connection would
            chunk = encode_event(name, data)
            # wfile is unbuffered (wbufsize=0): each write goes to the socket now, so timings are real.
            self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        self.wfile.write(b"0\r\n\r\n")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # a burst of concurrent clients must queue, not be reset
    # stop() must not wait for a handler sleeping in a long latency or stream; they watch `stopping`.
    block_on_close = False

    def __init__(self, address: tuple[str, int], fake: FakeAnthropic) -> None:
        self.fake = fake
        self.stopping = threading.Event()
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that disconnects while its request is read is routine in tests: no traceback for it.
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        super().handle_error(request, client_address)


class FakeAnthropic:
    """A scriptable fake Anthropic API on 127.0.0.1 (see the module docstring)."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        default: Reply | None = None,
        responder: Responder | None = None,
    ) -> None:
        self.host = host
        self._port = port
        self.default: Reply = default if default is not None else Reply()
        """Answer when the matching queue is empty and there is no responder."""
        self.responder: Responder | None = responder
        """Called (in a server thread) when the matching queue is empty."""
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._in_flight = 0
        self._queues: dict[str | None, deque[Reply]] = {}
        self._batches: dict[str, list[dict[str, Any]]] = {}
        self._requests: list[FakeRequest] = []
        self._answered: list[tuple[FakeRequest, Reply]] = []
        self._errors: list[BaseException] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> Self:
        """Bind and serve in a daemon thread. No-op when running; after stop() it starts anew."""
        if self._server is None:
            server = _Server((self.host, self._port), self)
            self._thread = threading.Thread(
                target=server.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"fake-anthropic-{server.server_address[1]}",
                daemon=True,
            )
            self._server = server
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket; in-flight handlers end early. Idempotent."""
        server, self._server = self._server, None
        if server is None:
            return
        server.stopping.set()
        server.shutdown()
        server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeAnthropic is not running: call start() or use it as a context manager")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """Base URL for the SDK, e.g. "http://127.0.0.1:41234"."""
        return f"http://{self.host}:{self.port}"

    def __repr__(self) -> str:
        where = self.url if self._server is not None else "stopped"
        return f"<FakeAnthropic {where} requests={len(self._requests)}>"

    # -- scripting ---------------------------------------------------------------------------------

    def script(self, *replies: Reply, key: str | None = None) -> None:
        """Queue replies (FIFO, one per request) for requests whose X-Fake-Key header is `key`."""
        for reply in replies:
            if not isinstance(reply, Reply):
                raise TypeError(f"script() takes Reply objects, got {type(reply).__name__}")
        with self._lock:
            self._queues.setdefault(key, deque()).extend(replies)

    def add_batch(
        self, results: Mapping[str, Reply | str], *, model: str = FAKE_MODEL, batch_id: str | None = None
    ) -> str:
        """An ended Message Batch whose results are ``results`` (custom_id -> a `Reply` that succeeded,
        or the result type of one that did not: errored, canceled, expired), in that order; returns its
        id. ``model`` is echoed by replies that name none."""
        batch_id = batch_id or new_id("msgbatch_")
        lines = [batch_result(custom_id, outcome, model=model) for custom_id, outcome in results.items()]
        with self._lock:
            self._batches[batch_id] = lines
        return batch_id

    def pending(self, key: str | None = None) -> int:
        """Scripted replies not yet consumed for `key`."""
        with self._lock:
            return len(self._queues.get(key, ()))

    def reset(self) -> None:
        """Forget queued replies, batches, recorded requests and errors (responder and default stay)."""
        with self._lock:
            self._queues.clear()
            self._batches.clear()
            self._requests.clear()
            self._answered.clear()
            self._errors.clear()

    @property
    def requests(self) -> list[FakeRequest]:
        """A snapshot of the requests received so far, in arrival order."""
        with self._lock:
            return list(self._requests)

    def answered(self, key: str | None = None) -> list[tuple[FakeRequest, Reply]]:
        """The Messages requests with ``key`` and the reply each took, in the order they took it: the
        ground truth a test compares the exporter's figures with (a reply's model is the request's unless
        the reply names one)."""
        with self._lock:
            return [(request, reply) for request, reply in self._answered if request.key == key]

    @property
    def errors(self) -> list[BaseException]:
        """Exceptions raised by the responder (each was answered with a 500 api_error)."""
        with self._lock:
            return list(self._errors)

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until no request is being handled (e.g. after a client hung up mid-stream)."""
        with self._idle:
            return self._idle.wait_for(lambda: self._in_flight == 0, timeout)

    # -- clients -----------------------------------------------------------------------------------

    def client(self, *, key: str | None = None, **kwargs: Any) -> anthropic.Anthropic:
        """An `anthropic.Anthropic` for this fake; `key` sets the X-Fake-Key header, kwargs go to the SDK."""
        import anthropic

        return anthropic.Anthropic(**self._client_kwargs(key, kwargs))

    def async_client(self, *, key: str | None = None, **kwargs: Any) -> anthropic.AsyncAnthropic:
        """An `anthropic.AsyncAnthropic` for this fake (same arguments as `client`)."""
        import anthropic

        return anthropic.AsyncAnthropic(**self._client_kwargs(key, kwargs))

    def _client_kwargs(self, key: str | None, kwargs: dict[str, Any]) -> dict[str, Any]:
        kwargs = {"api_key": "test-key", **kwargs, "base_url": self.url}
        if key is not None:
            kwargs["default_headers"] = {**(kwargs.get("default_headers") or {}), KEY_HEADER: key}
        return kwargs

    # -- called from handler threads ---------------------------------------------------------------

    def _record(self, request: FakeRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _busy(self, delta: int) -> None:
        with self._idle:
            self._in_flight += delta
            self._idle.notify_all()

    def _batch(self, batch_id: str) -> list[dict[str, Any]] | None:
        with self._lock:
            return self._batches.get(batch_id)

    def _next_reply(self, request: FakeRequest) -> Reply:
        with self._lock:
            queue = self._queues.get(request.key)
            if queue:
                reply = queue.popleft()
                self._answered.append((request, reply))
                return reply
        responder = self.responder
        if responder is None:
            reply = self.default
        else:
            try:
                reply = responder(request)
            except Exception as exc:
                # Surface the bug to the test (fake.errors) and to the SDK as a server error.
                with self._lock:
                    self._errors.append(exc)
                reply = Reply(status=500, error_message=f"fake responder raised {exc!r}")
        with self._lock:
            self._answered.append((request, reply))
        return reply
