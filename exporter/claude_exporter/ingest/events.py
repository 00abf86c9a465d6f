"""Events from agents in other languages: the event-log shape in, the same metrics out.

``POST /v1/events`` takes one JSON object or NDJSON lines (split on ``\n`` only; a ``\r`` before it is
dropped). The whole body is read and checked first: one bad line and the answer is 400 naming the bad
lines by number (the first :data:`MAX_PROBLEMS` problems, then a count), with nothing applied, so a client
can fix and resend without double counting. The body is read by :mod:`.body`, as for every POST route
(at most :data:`MAX_BODY` bytes, announced in ``Content-Length``). ``claude-exporter serve --tail`` feeds
the same :func:`parse_event` / :func:`apply_events` line by line.

Every number is checked at this edge by :mod:`.numbers` (see :data:`LIMITS`), so nothing stored can make
a scrape fail.
An event counts as one request and one execution of its agent (default: the configured default agent),
task (``default``) and model (``unknown``, which is unpriced, when the event names none).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from claude_exporter.ingest.body import MAX_BODY, BodyError, read_body
from claude_exporter.ingest.numbers import RANGES, check, show
from claude_exporter.recording.recorder import Recorder
from claude_exporter.recording.records import Totals
from claude_exporter.recording.usage import Usage

__all__ = [
    "LIMITS",
    "MAX_BODY",
    "MAX_PROBLEMS",
    "Event",
    "Parsed",
    "apply_events",
    "events_route",
    "parse_body",
    "parse_event",
    "parse_line",
]

MAX_PROBLEMS = 20  # problems listed in a 400; the rest are counted, so the answer stays small
KINDS = ("claude_execution_complete", "claude_execution_error")
_COUNTS = ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens")
_TEXT = ("agent", "task", "model", "stop_reason", "error_type", "error_message", "execution_id", "timestamp")
# The numbers an event carries, and their inclusive ranges (declared in :mod:`.numbers`).
LIMITS: dict[str, tuple[int, int]] = {
    key: (RANGES[key].low, RANGES[key].high) for key in ("duration_ms", *_COUNTS, "requests")
}
_SHOW = 80  # characters of a bad value quoted back


@dataclass(frozen=True)
class Event:
    ok: bool
    seconds: float
    agent: str | None
    task: str
    model: str
    usage: tuple[int, int, int, int]  # input, output, cache creation, cache read
    stop_reason: str | None
    error_type: str | None
    error_message: str | None
    requests: int


@dataclass
class Parsed:
    """A body's events, or its problems: the first :data:`MAX_PROBLEMS` lines of them, and a count."""

    events: list[Event] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    bad_lines: int = 0
    more_problems: int = 0  # problems not listed

    def add(self, where: str, problems: Iterable[str]) -> None:
        self.bad_lines += 1
        for problem in problems:
            if len(self.problems) < MAX_PROBLEMS:
                self.problems.append(f"{where}: {problem}")
            else:
                self.more_problems += 1

    @property
    def ok(self) -> bool:
        return not self.bad_lines


def _missing(obj: dict[str, Any], key: str) -> str:
    return "missing" if key not in obj else f"got {show(obj[key])}"


def _number(obj: dict[str, Any], key: str, default: int | None) -> tuple[float, str | None]:
    """A number within its range (:mod:`.numbers`), or the problem with it."""
    if key not in obj and default is None:
        return 0.0, f"must be {RANGES[key]}, missing"
    value = obj.get(key)
    return check(default if value is None and default is not None else value, key)


def _text_ok(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate from a JSON \ud800 escape: no exposition can write it
        return False
    return True


def parse_event(obj: object) -> Event | list[str]:
    """An :class:`Event`, or the list of what is wrong with ``obj`` (each naming its field)."""
    if not isinstance(obj, dict):
        return [f"must be a JSON object, got {show(obj)}"]
    problems: list[str] = []
    kind = obj.get("event")
    if kind not in KINDS:
        problems.append(f"event: must be one of {', '.join(KINDS)}, {_missing(obj, 'event')}")
    duration, problem = _number(obj, "duration_ms", None)
    if problem:
        problems.append(f"duration_ms: {problem}")
    counts = []
    for key in _COUNTS:
        value, problem = _number(obj, key, 0)
        if problem:
            problems.append(f"{key}: {problem}")
        counts.append(int(value))
    requests, problem = _number(obj, "requests", 1)
    if problem:
        problems.append(f"requests: {problem}")
    for key in _TEXT:
        text = obj.get(key)
        if text is None:
            continue
        if not isinstance(text, str) or (key in ("agent", "task", "model") and not text):
            problems.append(f"{key}: must be a non-empty string, got {show(text)}")
        elif not _text_ok(text):
            problems.append(f"{key}: must be valid Unicode text (a lone surrogate is not)")
    if kind == "claude_execution_error" and not isinstance(obj.get("error_type"), str):
        problems.append(f"error_type: required for claude_execution_error, {_missing(obj, 'error_type')}")
    if problems:
        return problems
    return Event(
        ok=kind == "claude_execution_complete",
        seconds=float(duration) / 1000.0,
        agent=obj.get("agent"),
        task=obj.get("task") or "default",
        model=obj.get("model") or "unknown",
        usage=(counts[0], counts[1], counts[2], counts[3]),
        stop_reason=obj.get("stop_reason"),
        error_type=obj.get("error_type"),
        error_message=obj.get("error_message"),
        requests=int(requests),
    )


def parse_line(line: str) -> Event | list[str]:
    """One line of text: an :class:`Event`, or what is wrong with it. Never raises for any input."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as err:
        return [f"not JSON ({err.msg} at column {err.colno})"]
    except RecursionError:
        return ["not JSON we accept (nested too deeply)"]
    except ValueError as err:  # e.g. an integer over Python's 4300-digit conversion limit
        return [f"not JSON we accept ({str(err)[:_SHOW]})"]
    return parse_event(obj)


def parse_body(body: bytes) -> Parsed:
    """Every event of a body (one object, or NDJSON), or its problems as ``line N: ...``."""
    parsed = Parsed()
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        parsed.add("body", [f"not UTF-8 ({err.reason} at byte {err.start})"])
        return parsed
    # NDJSON lines end at \n alone: U+2028 and friends are legal inside a JSON string.
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        found = parse_line(line)
        if isinstance(found, Event):
            parsed.events.append(found)
        else:
            parsed.add(f"line {number}", found)
    if not parsed.events and parsed.ok:
        parsed.add("body", ["no events"])
    return parsed


# Bodies and tail polls apply one at a time: two bodies never interleave their events.
_APPLY_LOCK = threading.Lock()


def apply_events(rec: Recorder, events: Iterable[Event]) -> int:
    """Record ``events`` (already checked) as requests and executions; returns how many.

    A fault inside the recorder costs that one event, is counted in
    ``claude_exporter_internal_errors_total{stage="ingest"}``, and never reaches the sender.
    """
    count = 0
    with _APPLY_LOCK:
        for event in events:
            try:
                _apply(rec, event)
            except Exception:
                rec.fault("ingest")
                continue
            count += 1
    return count


def _apply(rec: Recorder, event: Event) -> None:
    """One event: a request of its model, and the execution it ended, through the recorder's one way
    for each (so the event log and the health window see it as they see an SDK agent's)."""
    agent = event.agent or rec.options.default_agent
    labels = rec.request_labels(agent, event.model)
    usage = Usage(*event.usage)
    error = None if event.error_type is None else (event.error_type, "none")  # events carry no code
    cost, _ = labels.record(event.ok, event.seconds, usage, event.stop_reason, error, (), event.model)
    totals = Totals.of_request(usage, cost, 0, labels.model, event.stop_reason)
    totals.requests = event.requests
    series = rec.exec_labels(agent, event.task)
    rec.finish_execution(series, event.seconds, totals, event.error_type, event.error_message)


def _json(start_response: Callable[..., Any], status: str, payload: dict[str, Any]) -> list[bytes]:
    body = json.dumps(payload).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


def events_route(
    get_recorder: Callable[[], Recorder | None], source: str = "http"
) -> Callable[..., list[bytes]]:
    """The WSGI route for ``POST /v1/events``."""

    def route(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        if environ.get("REQUEST_METHOD") != "POST":
            start_response("405 Method Not Allowed", [("Allow", "POST"), ("Content-Type", "text/plain")])
            return [b"405 Method Not Allowed: POST one event or NDJSON lines\n"]
        rec = get_recorder()
        if rec is None:
            return _json(start_response, "503 Service Unavailable", {"error": "not instrumented"})
        try:
            body = read_body(environ)
        except BodyError as err:
            return _json(start_response, err.status, {"error": f"{err}; no event applied"})
        parsed = parse_body(body)
        if not parsed.ok:
            rec.events.inc((source, "rejected"), parsed.bad_lines)
            answer: dict[str, Any] = {"error": "no event applied", "problems": parsed.problems}
            if parsed.more_problems:
                answer["more_problems"] = parsed.more_problems
            answer["bad_lines"] = parsed.bad_lines
            return _json(start_response, "400 Bad Request", answer)
        applied = apply_events(rec, parsed.events)
        rec.events.inc((source, "accepted"), applied)
        return _json(start_response, "200 OK", {"accepted": applied})

    return route
