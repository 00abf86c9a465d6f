"""OTLP/HTTP on the wire: request bodies in (protobuf or JSON, gzip or not), export responses out.

Uses ``opentelemetry-proto`` (the ``otlp`` extra), imported on first use so the core stays light.
Protobuf bodies become its messages (read by :mod:`.otlp_records`); JSON bodies are parsed and read
directly by :mod:`.otlp_json`, to the same records.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from typing import Any

from claude_exporter.ingest.otlp_budget import BudgetError, json_objects, protobuf_objects

__all__ = [
    "JSON",
    "MAX_DECODED",
    "MAX_MEMBERS",
    "PROTOBUF",
    "SIGNALS",
    "WireError",
    "decode",
    "encode_response",
    "inflate",
    "media_type",
    "proto_modules",
]

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
SIGNALS = ("metrics", "logs", "traces")
MAX_DECODED = 8 << 20  # a gzip body may not inflate past this (a compression bomb gets 413)
MAX_MEMBERS = 1024  # gzip members in one body (each costs an inflater; real bodies have one)
_SLICE = 4096


class WireError(ValueError):
    """A body that cannot be read at all; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: str = "400 Bad Request") -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class _Modules:
    request: dict[str, Any]
    response: dict[str, Any]
    partial: dict[str, Any]
    json_format: Any
    decode_error: type[Exception]


_MODULES: _Modules | None = None


def proto_modules() -> _Modules:
    """The opentelemetry-proto message classes; raises WireError (501) when the extra is missing."""
    global _MODULES
    if _MODULES is None:
        try:
            from google.protobuf import json_format
            from google.protobuf.message import DecodeError
            from opentelemetry.proto.collector.logs.v1 import logs_service_pb2 as logs
            from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as metrics
            from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as traces
        except ImportError as err:  # pragma: no cover - the dev extra installs it
            raise WireError(
                f"the OTLP receiver needs opentelemetry-proto: pip install 'claude-exporter[otlp]' ({err})",
                "501 Not Implemented",
            ) from err
        _MODULES = _Modules(
            request={
                "metrics": metrics.ExportMetricsServiceRequest,
                "logs": logs.ExportLogsServiceRequest,
                "traces": traces.ExportTraceServiceRequest,
            },
            response={
                "metrics": metrics.ExportMetricsServiceResponse,
                "logs": logs.ExportLogsServiceResponse,
                "traces": traces.ExportTraceServiceResponse,
            },
            partial={
                "metrics": ("rejected_data_points", metrics.ExportMetricsPartialSuccess),
                "logs": ("rejected_log_records", logs.ExportLogsPartialSuccess),
                "traces": ("rejected_spans", traces.ExportTracePartialSuccess),
            },
            json_format=json_format,
            decode_error=DecodeError,
        )
    return _MODULES


def media_type(content_type: str | None) -> str:
    """``application/x-protobuf`` or ``application/json``; anything else is a 415."""
    base = (content_type or "").split(";", 1)[0].strip().lower()
    if base in (PROTOBUF, "application/protobuf"):
        return PROTOBUF
    if base == JSON:
        return JSON
    raise WireError(
        f"Content-Type must be {PROTOBUF} or {JSON}, got {content_type or 'none'!r}",
        "415 Unsupported Media Type",
    )


def inflate(body: bytes, encoding: str | None, budget: int = MAX_DECODED) -> bytes:
    """The body without its Content-Encoding (identity, gzip or deflate), never over ``budget`` bytes.

    A gzip body may hold several members (RFC 1952; ``cat a.gz b.gz`` is one): all are inflated, as gzip(1)
    does. Bytes after the last member or after a deflate stream are refused (400), not dropped silently.
    """
    encoding = (encoding or "identity").strip().lower()
    if encoding == "identity":
        return body
    if encoding not in ("gzip", "deflate"):
        raise WireError(
            f"Content-Encoding must be gzip, deflate or identity, got {encoding!r}",
            "415 Unsupported Media Type",
        )
    wbits = 16 + zlib.MAX_WBITS if encoding == "gzip" else zlib.MAX_WBITS
    out: list[bytes] = []
    view, pos, size = memoryview(body), 0, 0
    for _ in range(MAX_MEMBERS):
        inflater = zlib.decompressobj(wbits)
        while not inflater.eof and pos < len(view):
            # Small slices: what follows a member's end is copied into unused_data, so it stays small.
            piece = view[pos : pos + _SLICE]
            try:
                part = inflater.decompress(piece, budget - size + 1)  # a byte past the budget shows it passed
            except zlib.error as err:
                raise WireError(f"body: not valid {encoding} ({err})") from None
            size += len(part)
            if size > budget:
                raise WireError(f"body: inflates past {budget} bytes", "413 Content Too Large")
            out.append(part)
            pos += len(piece) - len(inflater.unused_data)
        if not inflater.eof:
            raise WireError(f"body: truncated {encoding} stream")
        if pos == len(view):
            return b"".join(out)
        if encoding != "gzip" or bytes(view[pos : pos + 2]) != b"\x1f\x8b":
            raise WireError(f"body: {len(view) - pos} bytes after the end of the {encoding} stream")
    raise WireError(f"body: more than {MAX_MEMBERS} gzip members")


def decode(signal: str, body: bytes, content_type: str | None, encoding: str | None = None) -> Any:
    """The request of ``body``: an Export*ServiceRequest message for protobuf, the parsed object for JSON
    (read by :mod:`.otlp_json`, which checks its shape); raises WireError naming what is wrong. Within
    :data:`MAX_DECODED` bytes and :data:`.otlp_budget.MAX_OBJECTS` objects, checked before decoding."""
    kind = media_type(content_type)
    mods = proto_modules()
    raw = inflate(body, encoding)
    try:
        if kind == PROTOBUF:
            protobuf_objects(raw, mods.request[signal].DESCRIPTOR)
        else:
            json_objects(raw)
    except BudgetError as err:
        if err.over:
            raise WireError(f"body: {err}; send smaller batches", "413 Content Too Large") from None
        raise WireError(f"body: not an OTLP {signal} protobuf message ({err})") from None
    if kind == PROTOBUF:
        message = mods.request[signal]()
        try:
            message.ParseFromString(raw)
        except (mods.decode_error, RecursionError) as err:
            raise WireError(f"body: not an OTLP {signal} protobuf message ({err})") from None
        return message
    try:
        obj = json.loads(raw.decode("utf-8")) if raw.strip() else {}
    except (UnicodeDecodeError, ValueError, RecursionError) as err:
        raise WireError(f"body: not JSON ({err})") from None
    if not isinstance(obj, dict):
        raise WireError(f"body: must be a JSON object, got {type(obj).__name__}")
    return obj


def encode_response(signal: str, kind: str, rejected: int = 0, message: str = "") -> bytes:
    """The Export*ServiceResponse, with ``partial_success`` when something was rejected."""
    mods = proto_modules()
    response = mods.response[signal]()
    if rejected or message:
        field, _ = mods.partial[signal]
        setattr(response.partial_success, field, rejected)
        response.partial_success.error_message = message
    if kind == PROTOBUF:
        return bytes(response.SerializeToString())
    return json.dumps(mods.json_format.MessageToDict(response)).encode()
