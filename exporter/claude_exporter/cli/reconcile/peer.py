"""Reading a peer's answer (the Admin API, Prometheus) as untrusted input.

One GET at a time, bounded three ways: the run's :class:`Deadline` (every socket read waits at most what
is left, and a timer shuts the socket down when the deadline passes, so a peer sending one byte at a time
cannot hold the run), a size cap read in chunks (``MAX_ANSWER_BYTES``: refused as soon as it is passed,
or at once when the declared length is larger), and JSON decoding that turns too deep a nesting into an
error. Redirects are not followed: the key would go with them. The answer is then read through
:class:`Shape`, which names where it departs from what reconcile expects
("Admin API /v1/organizations/cost_report: data[3].results is 5, not a list"). Every failure is a
:class:`ReconcileError` whose message names the peer, never the key or a value's text.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

__all__ = [
    "MAX_ANSWER_BYTES",
    "Deadline",
    "PeerHTTPError",
    "ReconcileError",
    "Shape",
    "get_json",
    "printable",
    "shown",
    "url_problem",
]

# A month of the cost report grouped by description is a few MB; 16 MiB bounds the decoded objects to a
# few hundred MB however the peer writes them.
MAX_ANSWER_BYTES = 16 * 1024 * 1024
_ERROR_BYTES = 64 * 1024  # an error answer is read only for its message
_CHUNK = 64 * 1024
_TEXT = 200  # characters of a peer's error message repeated in ours


class ReconcileError(Exception):
    """A source could not be read; the message names it and what went wrong (never the key)."""


class PeerHTTPError(ReconcileError):
    """The peer answered with an HTTP error status (``status``)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class Deadline:
    """The whole run's time: ``remaining()`` seconds are left of ``seconds``."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._end = time.monotonic() + seconds

    def remaining(self) -> float:
        return self._end - time.monotonic()

    def error(self, source: str) -> ReconcileError:
        return ReconcileError(
            f"{source}: no complete answer within the {self.seconds:g} s deadline (--deadline)"
        )


class _Watch:
    """The sockets of the request in progress, shut down when the deadline passes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self.fired = False

    def attach(self, sock: socket.socket) -> socket.socket:
        with self._lock:
            self._sockets.append(sock)
            fired = self.fired
        if fired:
            self._shut(sock)
        return sock

    def fire(self) -> None:
        with self._lock:
            self.fired = True
            sockets = list(self._sockets)
        for sock in sockets:
            self._shut(sock)

    @staticmethod
    def _shut(sock: socket.socket) -> None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)  # wakes a reader blocked in recv; close() would not


def _watched(cls: type[http.client.HTTPConnection], watch: _Watch) -> type[http.client.HTTPConnection]:
    class Watched(cls):  # type: ignore[valid-type,misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            create: Callable[..., socket.socket] = self._create_connection  # type: ignore[has-type]
            # Attached as soon as the TCP connection exists, so a TLS handshake is watched too.
            self._create_connection = lambda *a, **k: watch.attach(create(*a, **k))

    return Watched


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # the 3xx surfaces as an HTTP error: following it would send the key elsewhere


def _opener(watch: _Watch) -> urllib.request.OpenerDirector:
    class HTTP(urllib.request.HTTPHandler):
        def do_open(self, http_class: Any, req: Any, **kwargs: Any) -> Any:
            return super().do_open(_watched(http_class, watch), req, **kwargs)

    class HTTPS(urllib.request.HTTPSHandler):
        def do_open(self, http_class: Any, req: Any, **kwargs: Any) -> Any:
            return super().do_open(_watched(http_class, watch), req, **kwargs)

    return urllib.request.build_opener(HTTP(), HTTPS(), _NoRedirect())


def _read(response: Any, cap: int, source: str) -> bytes:
    declared = response.headers.get("Content-Length")
    if declared is not None and declared.strip().isdigit() and int(declared) > cap:
        raise _too_large(source, cap)
    body = bytearray()
    while True:
        chunk = response.read1(_CHUNK)
        if not chunk:
            return bytes(body)
        body += chunk
        if len(body) > cap:
            raise _too_large(source, cap)


def _too_large(source: str, cap: int) -> ReconcileError:
    return ReconcileError(f"{source}: the answer is larger than the {cap // (1024 * 1024)} MiB cap")


def get_json(url: str, headers: Mapping[str, str], source: str, deadline: Deadline) -> Shape:
    """The JSON ``url`` answers, as a :class:`Shape` named ``source``; HTTP errors raise
    :class:`PeerHTTPError` with the peer's own message when it gives one."""
    remaining = deadline.remaining()
    if remaining <= 0:
        raise deadline.error(source)
    watch = _Watch()
    timer = threading.Timer(remaining, watch.fire)
    timer.daemon = True
    timer.start()
    try:
        try:
            request = urllib.request.Request(url, headers=dict(headers))
            with _opener(watch).open(request, timeout=remaining) as response:
                body = _read(response, MAX_ANSWER_BYTES, source)
        except urllib.error.HTTPError as err:
            raise PeerHTTPError(
                f"{source} answered HTTP {err.code}{_detail(err, source)}", err.code
            ) from None
        except ReconcileError:
            raise
        except (OSError, http.client.HTTPException, ValueError) as err:
            if watch.fired:
                raise deadline.error(source) from None
            how = "could not be reached" if isinstance(err, urllib.error.URLError) else "broke off its answer"
            raise ReconcileError(f"{source} {how}: {_reason(err)}") from None
        if watch.fired:  # the socket was shut mid-answer: what arrived is a fragment
            raise deadline.error(source)
    finally:
        timer.cancel()
    return Shape(decode(body, source), source)


def _reason(err: BaseException) -> str:
    if isinstance(err, urllib.error.URLError) and not isinstance(err.reason, str):
        err = err.reason if isinstance(err.reason, BaseException) else err
    return printable(str(err) or type(err).__name__)


def _detail(err: urllib.error.HTTPError, source: str) -> str:
    try:
        body = decode(_read(err, _ERROR_BYTES, source), source)
    except (ReconcileError, OSError, http.client.HTTPException, ValueError, AttributeError):
        return ""
    finally:
        err.close()
    error = body.get("error") if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else error
    return f": {printable(message)}" if isinstance(message, str) and message.strip() else ""


def url_problem(url: str) -> str | None:
    """Why ``url`` cannot name a peer (None when it can): an http(s) scheme, a host, a numeric port."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError as err:
        return printable(str(err))
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        return "not an http:// or https:// URL with a host"
    return None


def shown(url: str) -> str:
    """``url`` as our messages name it: without the user and password it may carry."""
    parts = urllib.parse.urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def printable(text: str, limit: int = _TEXT) -> str:
    """A peer's text fit for one line or cell of ours: control characters out, length bounded."""
    flat = "".join(c if c.isprintable() else " " for c in text).strip()
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def decode(body: bytes, source: str) -> Any:
    try:
        return json.loads(body, parse_constant=_no_constant)
    except RecursionError:
        raise ReconcileError(f"{source}: the answer is nested too deeply") from None
    except ValueError:  # JSONDecodeError, bad UTF-8, NaN, an integer past Python's digit limit
        raise ReconcileError(f"{source}: the answer is not JSON") from None


# ------------------------------------------------------------------------------------------ the reader


def describe(value: object) -> str:
    """What a value is, without repeating text a peer chose: numbers and literals as they are."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        text = str(value) if abs(value) < 10**15 else "a very large integer"
        return text
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


class Shape:
    """A value of a peer's answer and where it sits in it; each accessor checks the type it expects and
    raises a :class:`ReconcileError` naming the place otherwise. Missing keys read as null."""

    __slots__ = ("source", "value", "where")

    def __init__(self, value: Any, source: str, where: str = "") -> None:
        self.value = value
        self.source = source
        self.where = where

    def fail(self, expected: str) -> ReconcileError:
        where = self.where or "the answer"
        return ReconcileError(f"{self.source}: {where} is {describe(self.value)}, not {expected}")

    def __getitem__(self, key: str) -> Shape:
        if not isinstance(self.value, dict):
            raise self.fail("an object")
        return Shape(self.value.get(key), self.source, f"{self.where}.{key}" if self.where else key)

    def items(self, optional: bool = False) -> Iterator[Shape]:
        """The elements of a list (null reads as an empty list when ``optional``)."""
        if self.value is None and optional:
            return
        if not isinstance(self.value, list):
            raise self.fail("a list")
        for i, value in enumerate(self.value):
            yield Shape(value, self.source, f"{self.where}[{i}]")

    @property
    def is_null(self) -> bool:
        return self.value is None

    def obj(self, optional: bool = False) -> Shape:
        if not isinstance(self.value, dict) and not (optional and self.value is None):
            raise self.fail("an object")
        return self

    def text(self, optional: bool = False) -> str | None:
        if isinstance(self.value, str):
            return self.value
        if optional and self.value is None:
            return None
        raise self.fail("a string")

    def flag(self) -> bool:
        if isinstance(self.value, bool):
            return self.value
        raise self.fail("true or false")

    def count(self) -> int:
        """A non-negative integer; null or missing reads as 0."""
        value = self.value
        if value is None:
            return 0
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        raise self.fail("a count")

    def cents(self) -> float:
        """USD from an amount in cents written as a decimal string (or a number)."""
        value = self.value
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise self.fail("a decimal amount")
        try:
            usd = Decimal(str(value)) / 100
        except (InvalidOperation, ValueError):
            raise self.fail("a decimal amount") from None
        if not usd.is_finite():
            raise self.fail("a finite amount")
        return float(usd)

    def number_text(self) -> float:
        """A sample value as Prometheus writes it: a string holding a float (NaN and infinities allowed)."""
        if not isinstance(self.value, str):
            raise self.fail("a number in a string")
        try:
            return float(self.value)
        except ValueError:
            raise self.fail("a number in a string") from None
