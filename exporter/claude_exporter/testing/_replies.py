"""What the fake Anthropic API answers: the `Reply` script and the JSON / SSE bodies built from it.

Pure data and pure functions, no sockets: `fake_api` does the HTTP side.
"""

from __future__ import annotations

import json
import math
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = ["FAKE_MODEL", "Reply", "code_execution_blocks", "error_type_for"]

FAKE_MODEL = "claude-fake-model"
"""Model name echoed when a request names none."""

# Error `type` the real API sends for each status; anything else maps by class (see `error_type_for`).
_ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    402: "billing_error",
    403: "permission_error",
    404: "not_found_error",
    408: "timeout_error",
    409: "conflict_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    504: "timeout_error",
    529: "overloaded_error",
}

_ERROR_MESSAGES: dict[str, str] = {
    "invalid_request_error": "Invalid request.",
    "authentication_error": "invalid x-api-key",
    "billing_error": "Your credit balance is too low.",
    "permission_error": "Your API key does not have permission to use the specified resource.",
    "not_found_error": "Not found.",
    "timeout_error": "Request timed out.",
    "conflict_error": "Conflict.",
    "request_too_large": "Request exceeds the maximum allowed number of bytes.",
    "rate_limit_error": "Number of requests has exceeded your rate limit.",
    "api_error": "Internal server error",
    "overloaded_error": "Overloaded",
}


def error_type_for(status: int) -> str:
    """The API's error `type` for an HTTP status (other 5xx: api_error, other 4xx: invalid_request_error)."""
    return _ERROR_TYPES.get(status) or ("api_error" if status >= 500 else "invalid_request_error")


def new_id(prefix: str) -> str:
    """An id shaped like the API's (`msg_`, `req_`, `srvtoolu_` + 24 url-safe characters)."""
    return prefix + secrets.token_hex(12)


@dataclass(frozen=True, kw_only=True)
class Reply:
    """One scripted answer. The defaults give an ordinary successful, non-cached `end_turn` message."""

    status: int = 200
    latency: float = 0.0
    """Seconds to wait before sending the status line (so it is also the time to first byte)."""
    text: str = "Hello from the fake API."
    content: Sequence[Mapping[str, Any]] | None = None
    """Raw content blocks sent verbatim instead of the single text block built from `text`."""
    model: str | None = None
    """None echoes the request's `model`."""
    stop_reason: str = "end_turn"
    stop_sequence: str | None = None
    input_tokens: int = 10
    output_tokens: int = 20
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_5m: int | None = None
    cache_creation_1h: int | None = None
    service_tier: str = "standard"
    usage_extra: Mapping[str, Any] | None = None
    """Merged into `usage` as is, e.g. {"server_tool_use": {"web_search_requests": 2}}."""
    stop_details: Mapping[str, Any] | None = None
    """Sent as the message's `stop_details` (streams: in message_delta), e.g. a refusal category."""
    diagnostics: Mapping[str, Any] | None = None
    """Sent as the message's `diagnostics` (streams: in message_start), e.g. a cache_miss_reason."""
    start_usage: Mapping[str, Any] | None = None
    """Streams only: merged into message_start's `usage`, e.g. provisional counts and a cache-write split
    that message_delta's cumulative counts then supersede."""
    error_type: str | None = None
    """None derives it from `status` (`error_type_for`); for `stream_error_after`, overloaded_error."""
    error_message: str | None = None
    """None uses a stock message for the error type."""
    error_code: str | None = None
    """Sent as `error.details.error_code`; the SDK picks a finer exception class from (status, error_code)."""
    retry_after: float | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    ratelimit: Mapping[str, tuple[int, int, str]] | None = None
    """{"requests" | "tokens" | "input_tokens" | "output_tokens": (limit, remaining, reset_rfc3339)}."""
    drop_connection: bool = False
    stream_error_after: int | None = None
    event_delay: float = 0.0
    text_deltas: int = 1

    def __post_init__(self) -> None:
        if not 100 <= self.status <= 599:
            raise ValueError(f"status must be an HTTP status code, got {self.status}")
        if self.text_deltas < 1:
            raise ValueError("text_deltas must be >= 1")
        if self.stream_error_after is not None and self.stream_error_after < 0:
            raise ValueError("stream_error_after must be >= 0")
        if min(self.latency, self.event_delay) < 0 or (self.retry_after is not None and self.retry_after < 0):
            raise ValueError("latency, event_delay and retry_after must be >= 0")

    @property
    def is_error(self) -> bool:
        return self.status >= 400


def content_blocks(reply: Reply) -> list[dict[str, Any]]:
    if reply.content is not None:
        return [dict(block) for block in reply.content]
    return [{"type": "text", "text": reply.text}]


def usage_body(reply: Reply) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "input_tokens": reply.input_tokens,
        "output_tokens": reply.output_tokens,
        "cache_creation_input_tokens": reply.cache_creation_input_tokens,
        "cache_read_input_tokens": reply.cache_read_input_tokens,
        "service_tier": reply.service_tier,
    }
    if reply.cache_creation_5m is not None or reply.cache_creation_1h is not None:
        usage["cache_creation"] = {
            "ephemeral_5m_input_tokens": reply.cache_creation_5m or 0,
            "ephemeral_1h_input_tokens": reply.cache_creation_1h or 0,
        }
    usage.update(reply.usage_extra or {})
    return usage


def message_body(reply: Reply, *, model: str, msg_id: str) -> dict[str, Any]:
    """The non-streaming Message JSON."""
    return {
        "id": msg_id,
        "type": "message",
        "role": "assistant",
        "model": reply.model or model,
        "content": content_blocks(reply),
        "stop_reason": reply.stop_reason,
        "stop_sequence": reply.stop_sequence,
        # The SDK's stream accumulator always sets stop_details; sending it keeps both shapes equal.
        "stop_details": dict(reply.stop_details) if reply.stop_details is not None else None,
        "usage": usage_body(reply),
        **({"diagnostics": dict(reply.diagnostics)} if reply.diagnostics is not None else {}),
    }


def batch_body(batch_id: str, results_url: str, counts: Mapping[str, int]) -> dict[str, Any]:
    """A Message Batch object that has ended, its results at ``results_url``."""
    ended = "2026-12-07T00:00:00Z"
    return {
        "id": batch_id,
        "type": "message_batch",
        "processing_status": "ended",
        "request_counts": {
            "processing": 0,
            **{kind: counts.get(kind, 0) for kind in ("succeeded", "errored", "canceled", "expired")},
        },
        "created_at": ended,
        "ended_at": ended,
        "expires_at": ended,
        "archived_at": None,
        "cancel_initiated_at": None,
        "results_url": results_url,
    }


def batch_result(custom_id: str, outcome: Reply | str, *, model: str) -> dict[str, Any]:
    """One line of a batch's results: a `Reply` succeeded (its message as `message_body` builds it); a
    string is the result type of a request that did not (errored, canceled, expired)."""
    if isinstance(outcome, Reply):
        message = message_body(outcome, model=model, msg_id=new_id("msg_"))
        return {"custom_id": custom_id, "result": {"type": "succeeded", "message": message}}
    result: dict[str, Any] = {"type": outcome}
    if outcome == "errored":
        result["error"] = error_body(Reply(status=500), request_id=new_id("req_"))
    return {"custom_id": custom_id, "result": result}


def error_body(reply: Reply, *, request_id: str, default_type: str | None = None) -> dict[str, Any]:
    """The API's error shape, for an error status or a mid-stream `event: error`."""
    etype = reply.error_type or default_type or error_type_for(reply.status)
    error: dict[str, Any] = {
        "type": etype,
        "message": reply.error_message or _ERROR_MESSAGES.get(etype, etype),
    }
    if reply.error_code is not None:
        error["details"] = {"error_code": reply.error_code}
    return {"type": "error", "error": error, "request_id": request_id}


def response_headers(reply: Reply) -> dict[str, str]:
    """Scripted response headers (retry-after, rate limits, extras); lower-case names."""
    headers: dict[str, str] = {}
    if reply.retry_after is not None:
        ms = float(reply.retry_after) * 1000
        # The SDK reads retry-after-ms as a float, so a fractional value keeps sub-millisecond waits exact.
        headers["retry-after-ms"] = str(int(ms)) if ms.is_integer() else f"{ms:.3f}".rstrip("0")
        headers["retry-after"] = str(math.ceil(reply.retry_after))
    for kind, (limit, remaining, reset) in (reply.ratelimit or {}).items():
        prefix = "anthropic-ratelimit-" + kind.replace("_", "-")
        headers[prefix + "-limit"] = str(limit)
        headers[prefix + "-remaining"] = str(remaining)
        headers[prefix + "-reset"] = str(reset)
    headers.update({name.lower(): value for name, value in reply.headers.items()})
    return headers


def _split(text: str, parts: int) -> list[str]:
    # Exactly `parts` pieces (some empty if the text is short): the event count is what the test asked for.
    n = len(text)
    return [text[n * i // parts : n * (i + 1) // parts] for i in range(parts)]


SSEEvent = tuple[str, dict[str, Any]]


def stream_events(reply: Reply, *, model: str, msg_id: str, request_id: str) -> list[SSEEvent]:
    """The SSE events (name, data) of a streamed reply, ping included, cut by `stream_error_after`."""
    usage = usage_body(reply)
    start = message_body(reply, model=model, msg_id=msg_id)
    # The real API reports a provisional output count at message_start; message_delta carries the final one.
    start_usage = {**usage, "output_tokens": 1, **(reply.start_usage or {})}
    start.update(content=[], stop_reason=None, stop_sequence=None, usage=start_usage)
    events: list[SSEEvent] = [("message_start", {"type": "message_start", "message": start})]
    events.append(("ping", {"type": "ping"}))
    for index, block in enumerate(content_blocks(reply)):
        btype = str(block.get("type", ""))
        deltas: list[dict[str, Any]] = []
        first = block
        if btype == "text":
            first = {**block, "text": ""}
            deltas = [
                {"type": "text_delta", "text": t} for t in _split(str(block["text"]), reply.text_deltas)
            ]
        elif btype == "thinking":
            first = {**block, "thinking": "", "signature": ""}
            deltas = [
                {"type": "thinking_delta", "thinking": block.get("thinking", "")},
                {"type": "signature_delta", "signature": block.get("signature", "")},
            ]
        elif btype.endswith("tool_use") and isinstance(block.get("input"), Mapping):
            # tool_use / server_tool_use / mcp_tool_use: input streams as JSON text; results arrive whole.
            first = {**block, "input": {}}
            deltas = [{"type": "input_json_delta", "partial_json": json.dumps(block["input"])}]
        events.append(
            ("content_block_start", {"type": "content_block_start", "index": index, "content_block": first})
        )
        events.extend(
            ("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d})
            for d in deltas
        )
        events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    final_usage = {
        key: usage[key]
        for key in ("input_tokens", "cache_creation_input_tokens", "cache_read_input_tokens", "output_tokens")
    }
    # message_delta counts are cumulative and overwrite message_start's, so send the final ones again.
    final_usage.update({k: v for k, v in usage.items() if k in ("server_tool_use", "output_tokens_details")})
    details = dict(reply.stop_details) if reply.stop_details is not None else None
    delta = {"stop_reason": reply.stop_reason, "stop_sequence": reply.stop_sequence, "stop_details": details}
    events.append(("message_delta", {"type": "message_delta", "delta": delta, "usage": final_usage}))
    events.append(("message_stop", {"type": "message_stop"}))
    if reply.stream_error_after is not None:
        err = error_body(reply, request_id=request_id, default_type="overloaded_error")
        events = [*events[: reply.stream_error_after], ("error", err)]
    return events


def encode_event(name: str, data: Mapping[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()


Outcome = Literal["success", "nonzero_exit", "tool_error"]
CodeTool = Literal["code_execution", "bash_code_execution", "text_editor_code_execution"]

# tool -> outcome -> (server_tool_use input, result content). Text editor has no exit code: nonzero_exit
# becomes its closest "ran but failed" error, file_not_found.
_CODE_EXEC: dict[str, dict[str, tuple[dict[str, Any], dict[str, Any]]]] = {
    "code_execution": {
        "success": (
            {"code": "print('hello')"},
            {
                "type": "code_execution_result",
                "stdout": "hello\n",
                "stderr": "",
                "return_code": 0,
                "content": [],
            },
        ),
        "nonzero_exit": (
            {"code": "import sys; sys.exit('boom')"},
            {
                "type": "code_execution_result",
                "stdout": "",
                "stderr": "boom\n",
                "return_code": 1,
                "content": [],
            },
        ),
        "tool_error": (
            {"code": "while True: pass"},
            {"type": "code_execution_tool_result_error", "error_code": "execution_time_exceeded"},
        ),
    },
    "bash_code_execution": {
        "success": (
            {"command": "echo hello"},
            {
                "type": "bash_code_execution_result",
                "stdout": "hello\n",
                "stderr": "",
                "return_code": 0,
                "content": [],
            },
        ),
        "nonzero_exit": (
            {"command": "cat /missing.txt"},
            {
                "type": "bash_code_execution_result",
                "stdout": "",
                "stderr": "cat: /missing.txt: No such file or directory\n",
                "return_code": 1,
                "content": [],
            },
        ),
        "tool_error": (
            {"command": "sleep 1000"},
            {"type": "bash_code_execution_tool_result_error", "error_code": "execution_time_exceeded"},
        ),
    },
    "text_editor_code_execution": {
        "success": (
            {"command": "view", "path": "/tmp/hello.txt"},
            {
                "type": "text_editor_code_execution_view_result",
                "content": "hello\n",
                "file_type": "text",
                "num_lines": 1,
                "start_line": 1,
                "total_lines": 1,
            },
        ),
        "nonzero_exit": (
            {"command": "view", "path": "/tmp/missing.txt"},
            {
                "type": "text_editor_code_execution_tool_result_error",
                "error_code": "file_not_found",
                "error_message": "File not found: /tmp/missing.txt",
            },
        ),
        "tool_error": (
            {"command": "view", "path": "/tmp/hello.txt"},
            {
                "type": "text_editor_code_execution_tool_result_error",
                "error_code": "execution_time_exceeded",
            },
        ),
    },
}


def code_execution_blocks(
    outcome: Outcome = "success", tool: CodeTool = "code_execution", *, tool_use_id: str | None = None
) -> list[dict[str, Any]]:
    """The `server_tool_use` block and its `<tool>_tool_result` block for one code-execution call.

    outcome: "success" (return_code 0), "nonzero_exit" (return_code 1; for the text editor, which has no
    exit code, a file_not_found error) or "tool_error" (error_code execution_time_exceeded).
    """
    try:
        tool_input, result = _CODE_EXEC[tool][outcome]
    except KeyError:
        raise ValueError(f"unknown code-execution tool {tool!r} or outcome {outcome!r}") from None
    use_id = tool_use_id or new_id("srvtoolu_")
    return [
        {"type": "server_tool_use", "id": use_id, "name": tool, "input": dict(tool_input)},
        {"type": f"{tool}_tool_result", "tool_use_id": use_id, "content": dict(result)},
    ]
