"""The one reader of POST bodies, for ``/v1/events``, the OTLP routes and ``/v1/hooks``.

A body is read whole before anything is parsed, and only as ``Content-Length`` announces it:

- no ``Content-Length``, or ``Transfer-Encoding: chunked``: 411. wsgiref hands chunk framing through
  undecoded while other WSGI servers decode it first, and the app cannot tell which it got, so it asks
  for a length instead of guessing (Claude Code sends one, gzip or not).
- a length that is not a byte count (negative, ``1e3``, ``0x10``): 400, nothing read.
- a length over the limit: 413, after reading and dropping at most :data:`MAX_DRAIN` bytes of it, so
  that a client still sending gets the answer instead of a broken pipe.
- a body that ends (or stalls past the server's timeout) before its length: 400.

Nothing of a refused body is applied.
"""

from __future__ import annotations

from typing import Any

from claude_exporter.ingest.numbers import show

__all__ = ["MAX_BODY", "MAX_DRAIN", "BodyError", "read_body"]

MAX_BODY = 1 << 20
MAX_DRAIN = 16 * MAX_BODY
_CHUNK = 65536
_BAD = "400 Bad Request"
_TOO_LARGE = "413 Content Too Large"
_NO_LENGTH = "411 Length Required"


class BodyError(ValueError):
    """A body refused before parsing: the status line to answer with, and the message."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status


def read_body(environ: dict[str, Any], limit: int = MAX_BODY) -> bytes:
    """The request body, exactly ``Content-Length`` bytes of at most ``limit``; raises :class:`BodyError`."""
    if "chunked" in str(environ.get("HTTP_TRANSFER_ENCODING") or "").lower():
        raise BodyError(_NO_LENGTH, f"chunked bodies are not accepted: send Content-Length (at most {limit})")
    raw = str(environ.get("CONTENT_LENGTH") or "").strip()
    if not raw:
        raise BodyError(_NO_LENGTH, f"Content-Length is required (a body of at most {limit} bytes)")
    if not (raw.isascii() and raw.isdigit()):
        raise BodyError(_BAD, f"Content-Length must be a byte count from 0 to {limit}, got {show(raw[:20])}")
    stream = environ["wsgi.input"]
    length = int(raw) if len(raw) <= 15 else MAX_DRAIN + 1  # int() of thousands of digits is slow
    if length > limit:
        _drain(stream, length)
        raise BodyError(_TOO_LARGE, f"body over the limit of {limit} bytes (Content-Length {raw[:20]})")
    chunks: list[bytes] = []
    left = length
    try:
        while left > 0:
            chunk = stream.read(min(left, _CHUNK))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
    except OSError:  # the client stalled past the server's timeout, or went away
        pass
    if left > 0:
        raise BodyError(
            _BAD, f"body ended after {length - left} of the {length} bytes its Content-Length announced"
        )
    return b"".join(chunks)


def _drain(stream: Any, length: int) -> None:
    """Read and drop (at most :data:`MAX_DRAIN` bytes of) an oversized body."""
    left = min(length, MAX_DRAIN)
    try:
        while left > 0:
            chunk = stream.read(min(left, _CHUNK))
            if not chunk:
                return
            left -= len(chunk)
    except OSError:
        return
