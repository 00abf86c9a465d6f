"""The OTLP/HTTP receiver (``/v1/metrics``, ``/v1/logs``, ``/v1/traces``) and ``/v1/hooks``, as WSGI routes.

Both take POST, beside ``/v1/events``.

The rules are those of ``/v1/events``: the same bearer token (checked by the app before any route), the
same body reader (:mod:`.body`: 411 without a Content-Length, 413 over 1 MiB), and a body is read whole
before anything is applied, so a body that cannot be read (400, 413, 415) changes nothing and can be fixed
and resent. Within a readable body each record is applied whole or rejected (its numbers through
:mod:`.numbers`); the answer is the signal's Export*ServiceResponse in the request's encoding, with
``partial_success`` counting the rejected records and naming the first problems (OTLP senders do not
retry a partial success, so nothing is counted twice). Traces are read and dropped.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from claude_exporter.ingest import otlp_json, otlp_records
from claude_exporter.ingest.body import BodyError, read_body
from claude_exporter.ingest.claude_code import ClaudeCodeIngest
from claude_exporter.ingest.claude_code_events import SessionStop, ToolResult
from claude_exporter.ingest.events import _json
from claude_exporter.ingest.numbers import check
from claude_exporter.ingest.otlp_wire import JSON, WireError, decode, encode_response, media_type

__all__ = ["HOOK_EVENTS", "hooks_route", "otlp_route"]

HOOK_EVENTS = ("PostToolUse", "PostToolUseFailure")
STOP_EVENTS = ("Stop", "SessionEnd")  # the CLI's word that a turn (or the whole session) is over
_PROBLEMS_SHOWN = 10

GetIngest = Callable[[], ClaudeCodeIngest | None]
StartResponse = Callable[..., Any]


def _read(environ: dict[str, Any], start_response: StartResponse) -> bytes | list[bytes]:
    """The request body (:func:`.body.read_body`, as for every POST route), or the finished error response."""
    try:
        return read_body(environ)
    except BodyError as err:
        return _json(start_response, err.status, {"error": f"nothing applied: {err}"})


def _gate(
    environ: dict[str, Any], start_response: StartResponse, get_ingest: GetIngest, what: str
) -> ClaudeCodeIngest | list[bytes]:
    if environ.get("REQUEST_METHOD") != "POST":
        start_response("405 Method Not Allowed", [("Allow", "POST"), ("Content-Type", "text/plain")])
        return [f"405 Method Not Allowed: POST {what}\n".encode()]
    ingest = get_ingest()
    if ingest is None:
        return _json(start_response, "503 Service Unavailable", {"error": "not instrumented"})
    return ingest


def otlp_route(signal: str, get_ingest: GetIngest) -> Callable[..., list[bytes]]:
    """The WSGI route for ``POST /v1/<signal>``."""

    def route(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        ingest = _gate(environ, start_response, get_ingest, f"an OTLP {signal} export request")
        if isinstance(ingest, list):
            return ingest
        body = _read(environ, start_response)
        if isinstance(body, list):
            return body
        counter = ingest.rec.events
        try:
            kind = media_type(environ.get("CONTENT_TYPE"))
            message = decode(signal, body, kind, environ.get("HTTP_CONTENT_ENCODING"))
        except WireError as err:
            counter.inc(("otlp", "rejected"))
            return _json(start_response, err.status, {"error": f"nothing applied: {err}"})
        reader = otlp_json if kind == JSON else otlp_records
        rejected, problems = 0, list[str]()
        try:
            if signal == "logs":
                total = reader.count_log_records(message)
                events, problems = reader.log_events(message)
            elif signal == "metrics":
                points, problems = reader.sum_points(message)
        except WireError as err:  # a JSON body of the wrong shape: nothing applied
            counter.inc(("otlp", "rejected"))
            return _json(start_response, err.status, {"error": f"nothing applied: {err}"})
        if signal == "logs":
            rejected, more, duplicates = ingest.apply_logs(events)
            rejected += len(problems)
            problems += more
            accepted = total - rejected - duplicates  # re-sent records: counted as duplicates
        elif signal == "metrics":
            rejected, accepted = len(problems), len(points)
            ingest.apply_points(points)
        else:
            accepted = 0  # traces: accepted and dropped
        if accepted:
            counter.inc(("otlp", "accepted"), accepted)
        if rejected:
            counter.inc(("otlp", "rejected"), rejected)
        shown = "; ".join(problems[:_PROBLEMS_SHOWN])
        if len(problems) > _PROBLEMS_SHOWN:
            shown += f"; and {len(problems) - _PROBLEMS_SHOWN} more"
        payload = encode_response(signal, kind, rejected, shown)
        start_response("200 OK", [("Content-Type", kind), ("Content-Length", str(len(payload)))])
        return [payload]

    return route


def _encodable(text: str) -> bool:
    """Whether ``text`` can be written as UTF-8 (JSON's \\ud800 escapes make strings that cannot, and a
    label value that cannot be written would break every scrape)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def read_hook(obj: object) -> ToolResult | SessionStop | list[str] | None:
    """A PostToolUse / PostToolUseFailure hook's tool result; a Stop / SessionEnd hook's end of its
    session's turn; problems; None for other hook events."""
    if not isinstance(obj, dict):
        return [f"body: must be a JSON object, got {type(obj).__name__}"]
    event = obj.get("hook_event_name")
    if not isinstance(event, str) or not event:
        return ["hook_event_name: required"]
    if event in STOP_EVENTS:
        session = obj.get("session_id")
        if not isinstance(session, str) or not session:
            return ["session_id: required (it joins the hook to the session's turn)"]
        prompt = obj.get("prompt_id")
        return SessionStop(session, event, prompt if isinstance(prompt, str) and prompt else None)
    if event not in HOOK_EVENTS:
        return None
    problems = []
    tool, use_id = obj.get("tool_name"), obj.get("tool_use_id")
    if not isinstance(tool, str) or not tool:
        problems.append("tool_name: required")
    elif not _encodable(tool):
        problems.append("tool_name: not valid Unicode (an unpaired surrogate)")
    if not isinstance(use_id, str) or not use_id:
        problems.append("tool_use_id: required (it joins the hook to Claude Code's tool_result event)")
    duration = obj.get("duration_ms")
    if duration is not None:
        duration, problem = check(duration, "duration_ms")
        if problem is not None:
            problems.append(f"duration_ms: {problem}")
    if problems:
        return problems
    ok = event == "PostToolUse"
    error = obj.get("error")
    # A command that ran and exited non-zero is reported as "Exit code N ..."; anything else is the tool's.
    error_type = (
        None
        if ok
        else ("ShellError" if isinstance(error, str) and error.startswith("Exit code") else "ToolError")
    )
    return ToolResult(
        tool=str(tool),
        tool_use_id=str(use_id),
        ok=ok,
        seconds=None if duration is None else float(duration) / 1000.0,
        error_type=error_type,
        request_id=None,
        turn=None,
    )


def hooks_route(get_ingest: GetIngest) -> Callable[..., list[bytes]]:
    """The WSGI route for ``POST /v1/hooks[?agent=NAME]``: Claude Code's ``http`` hook."""
    from urllib.parse import parse_qs

    def route(environ: dict[str, Any], start_response: StartResponse) -> list[bytes]:
        ingest = _gate(environ, start_response, get_ingest, "a Claude Code hook's JSON")
        if isinstance(ingest, list):
            return ingest
        body = _read(environ, start_response)
        if isinstance(body, list):
            return body
        counter = ingest.rec.events
        try:
            obj = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as err:
            counter.inc(("hooks", "rejected"))
            return _json(
                start_response, "400 Bad Request", {"error": f"nothing applied: body: not JSON ({err})"}
            )
        found = read_hook(obj)
        if isinstance(found, list):
            counter.inc(("hooks", "rejected"))
            return _json(start_response, "400 Bad Request", {"error": "nothing applied", "problems": found})
        if isinstance(found, SessionStop):
            # Accepted whether or not a turn of that session was open (its events may carry no session id).
            ingest.apply_stop(found)
            counter.inc(("hooks", "accepted"))
        elif found is not None:
            names = [
                n for n in parse_qs(environ.get("QUERY_STRING") or "").get("agent") or [] if _encodable(n)
            ]
            # A command cut short: interrupted, or past its timeout (the CLI 2.1.328 then moves it to the
            # background and reports a success, with tool_response.timedOutAfterMs).
            response = obj.get("tool_response")
            timed_out = isinstance(response, dict) and response.get("timedOutAfterMs") is not None
            cut_short = obj.get("is_interrupt") is True or timed_out
            # False when its tool_result event came first: accepted, and already counted.
            ingest.apply_hook(names[-1] if names else None, found, cut_short)
            counter.inc(("hooks", "accepted"))
        # An empty object: no decision, Claude Code carries on as if there were no hook.
        return _json(start_response, "200 OK", {})

    return route
